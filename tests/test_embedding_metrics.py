"""scib scoring of zero-shot embeddings: our rows against scib-metrics' own functions, and the rows that say why.

One scoring of several embeddings is shared by the module (jax and numba compile once), the other calls score
few metrics on few cells."""

import dataclasses
from unittest import mock

import numpy as np
import pytest

pytest.importorskip("scib_metrics")

from cellplm.bench.embedding_metrics import AGGREGATES, COLUMNS, METRICS, score_embeddings, subsample  # noqa: E402

N = 400
TYPES = np.array([f"type{i % 4}" for i in range(N)])
# type3 lies in batch b0 only (an isolated label); the others are spread over both batches
BATCHES = np.where(TYPES == "type3", "b0", np.array(["b0", "b1"])[np.arange(N) // 4 % 2])
DEFAULT_METRICS = [
    "isolated_labels",
    "nmi_ari_cluster_labels_kmeans_nmi",
    "nmi_ari_cluster_labels_kmeans_ari",
    "silhouette_label",
    "clisi_knn",
    "bras",
    "ilisi_knn",
    "kbet_per_label",
    "graph_connectivity",
    "pcr_comparison",
]
SILHOUETTE_ONLY = {"isolated_labels": False, "nmi_ari_cluster_labels_kmeans": False, "clisi_knn": False}
NO_BATCH = {
    "bras": False,
    "ilisi_knn": False,
    "kbet_per_label": False,
    "graph_connectivity": False,
    "pcr_comparison": False,
}


def _embedding(seed: int = 0, type_scale: float = 3.0, batch_scale: float = 0.5, d: int = 12) -> np.ndarray:
    """Cells of a cell type around its centre, shifted by their batch's offset (batches part mixed)."""
    rng = np.random.default_rng(seed)
    types = rng.normal(size=(4, d))[[int(t[-1]) for t in TYPES]]
    batch = rng.normal(size=(2, d))[(BATCHES == "b1").astype(int)]
    return (type_scale * types + batch_scale * batch + rng.normal(size=(N, d))).astype(np.float32)


def _values(rows, embedding: str) -> dict:
    part = rows[rows.embedding == embedding]
    return dict(zip(part.metric, part.value))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    # one-hot of the cell types in 12 columns, the shape of the others (jax compiles once per shape)
    one_hot = (TYPES[:, None] == np.array([f"type{i}" for i in range(12)])[None, :]).astype(np.float32)
    broken = _embedding()
    broken[[5, 17], 2] = [np.nan, np.inf]
    embeddings = {
        "good": _embedding(),
        "perfect": one_hot + 1e-3 * rng.normal(size=one_hot.shape),
        "random": rng.normal(size=(N, 12)).astype(np.float32),
        "broken": broken,
    }
    pre = _embedding(seed=2, batch_scale=3.0)  # a stronger batch effect: PCR comparison > 0
    rows = score_embeddings(
        embeddings,
        TYPES,
        BATCHES,
        bio={},
        batch={},
        pre_integrated=pre,
        unavailable={"geneformer": ("not_applicable", "no model_dir configured")},
    )
    return embeddings, pre, rows


def test_labels_and_ids_are_scib_metrics_own():
    from scib_metrics.benchmark import BatchCorrection, BioConservation
    from scib_metrics.benchmark._core import metric_name_cleaner

    functions = [*dataclasses.asdict(BioConservation()), *dataclasses.asdict(BatchCorrection())]
    expanded = [m for f in functions for m in ((f"{f}_nmi", f"{f}_ari") if f.startswith("nmi_ari") else (f,))]
    assert list(METRICS) == expanded
    assert {m: d["label"] for m, d in METRICS.items()} == {m: metric_name_cleaner[m] for m in METRICS}
    assert all(d["definition"] and d["type"] in ("bio", "batch") for d in METRICS.values())
    assert set(AGGREGATES) == {"bio_conservation", "batch_correction", "total"}


def test_rows_agree_with_scib_metrics_functions(data):
    import scib_metrics as sm
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    embeddings, pre, rows = data
    assert list(rows.columns) == COLUMNS
    X = embeddings["good"]
    distances, indices = NearestNeighbors(n_neighbors=90).fit(X).kneighbors(X)
    knn = NeighborsResults(indices=indices, distances=distances.astype(np.float32))
    kmeans = sm.nmi_ari_cluster_labels_kmeans(X, TYPES)
    direct = {
        "isolated_labels": sm.isolated_labels(X, TYPES, BATCHES),
        "nmi_ari_cluster_labels_kmeans_nmi": kmeans["nmi"],
        "nmi_ari_cluster_labels_kmeans_ari": kmeans["ari"],
        "silhouette_label": sm.silhouette_label(X, TYPES),
        "clisi_knn": sm.clisi_knn(knn, TYPES),
        "bras": sm.bras(X, TYPES, BATCHES),
        "ilisi_knn": sm.ilisi_knn(knn, BATCHES),
        "kbet_per_label": sm.kbet_per_label(knn.subset_neighbors(50), BATCHES, TYPES),
        "graph_connectivity": sm.graph_connectivity(knn.subset_neighbors(15), TYPES),
        "pcr_comparison": sm.pcr_comparison(pre, X, BATCHES, categorical=True),
    }
    bio = np.mean([v for m, v in direct.items() if METRICS[m]["type"] == "bio"])
    batch = np.mean([v for m, v in direct.items() if METRICS[m]["type"] == "batch"])
    direct.update(bio_conservation=bio, batch_correction=batch, total=0.6 * bio + 0.4 * batch)

    good = rows[rows.embedding == "good"]
    assert list(good.metric) == DEFAULT_METRICS + list(AGGREGATES)
    assert (good.status == "ok").all() and (good.reason == "").all()
    assert _values(rows, "good") == pytest.approx(direct, abs=1e-6)
    assert 0 < direct["kbet_per_label"] < 1 and 0 < direct["pcr_comparison"] < 1  # neither is a trivial value
    assert set(good.metric_type) == {"bio", "batch", "aggregate"}
    assert (rows.cells == "all 400 cells").all() and (rows.n_cells == N).all() and (rows.n_cells_total == N).all()
    assert rows.metric_set.iloc[0] == (
        "scib-metrics 0.5.10; bio: isolated_labels, nmi_ari_cluster_labels_kmeans, silhouette_label, clisi_knn; "
        "batch: bras, ilisi_knn, kbet_per_label, graph_connectivity, pcr_comparison; neighbours: exact "
        "(scikit-learn); values unscaled, aggregates as Benchmarker (total = 0.6 bio + 0.4 batch)"
    )


def test_perfect_embedding_conserves_more_biology_than_a_random_one(data):
    _, _, rows = data
    perfect, random = _values(rows, "perfect"), _values(rows, "random")
    assert perfect["bio_conservation"] > random["bio_conservation"] + 0.3
    assert perfect["nmi_ari_cluster_labels_kmeans_ari"] == pytest.approx(1.0)
    assert random["nmi_ari_cluster_labels_kmeans_ari"] < 0.1


def test_unavailable_and_broken_embeddings_are_rows_with_their_status(data):
    _, _, rows = data
    expected = DEFAULT_METRICS + list(AGGREGATES)
    missing = rows[rows.embedding == "geneformer"]
    assert list(missing.metric) == expected and missing.value.isna().all()
    assert (missing.status == "not_applicable").all() and (missing.reason == "no model_dir configured").all()
    broken = rows[rows.embedding == "broken"]
    assert list(broken.metric) == expected and broken.value.isna().all() and (broken.status == "failed").all()
    assert (broken.reason == "embedding has NaN or inf in 2 of 400 cells").all()
    assert (rows[rows.embedding.isin(["good", "perfect", "random"])].status == "ok").all()
    with pytest.raises(ValueError, match="not_applicable or failed"):
        score_embeddings({}, TYPES, BATCHES, bio={}, batch={}, unavailable={"scvi": ("ok", "")})


def test_a_metric_that_raises_fails_alone(monkeypatch):
    import scib_metrics

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(scib_metrics, "bras", boom)  # Benchmarker looks metrics up on the module
    X = _embedding()
    rows = score_embeddings(
        {"good": X}, TYPES, BATCHES, bio=SILHOUETTE_ONLY, batch={**NO_BATCH, "bras": True, "graph_connectivity": True}
    )
    result = rows.set_index("metric")
    assert result.loc["bras", "status"] == "failed" and "RuntimeError: boom" in result.loc["bras", "reason"]
    assert result.loc["graph_connectivity", "status"] == result.loc["silhouette_label", "status"] == "ok"
    assert result.loc["batch_correction", "value"] == result.loc["graph_connectivity", "value"]
    assert result.loc["batch_correction", "reason"] == "mean of 1 of 2 batch-correction metrics (bras: no value)"
    assert result.loc["total", "status"] == "ok"


@pytest.mark.parametrize("batches, name", [(None, "no batch labels given"), (np.full(N, "pbmc68k"), "pbmc68k")])
def test_one_batch_scores_biology_only(batches, name):
    rows = score_embeddings(
        {"good": _embedding()},
        TYPES,
        batches,
        bio={"nmi_ari_cluster_labels_kmeans": False, "clisi_knn": False},
        batch={},
    )
    result = rows.set_index("metric")
    bio = ["isolated_labels", "silhouette_label", "bio_conservation"]
    assert (result.loc[bio, "status"] == "ok").all() and result.loc[bio, "value"].notna().all()
    batch_rows = result[result.metric_type == "batch"].index.tolist() + ["batch_correction", "total"]
    assert batch_rows == DEFAULT_METRICS[5:] + ["batch_correction", "total"]
    assert (result.loc[batch_rows, "status"] == "not_applicable").all() and result.loc[batch_rows, "value"].isna().all()
    assert result.loc["bras", "reason"] == f"one batch ({name}): batch-correction metrics need at least two batches"
    assert result.loc["total", "reason"].endswith(result.loc["bras", "reason"])


def test_subsample_is_seeded_sorted_and_bounded():
    assert np.array_equal(subsample(10, 20, 0), np.arange(10)) and np.array_equal(subsample(10, None, 0), np.arange(10))
    drawn = subsample(1000, 100, 3)
    assert len(drawn) == len(set(drawn)) == 100 and np.all(np.diff(drawn) > 0) and drawn.max() < 1000
    assert np.array_equal(drawn, subsample(1000, 100, 3)) and not np.array_equal(drawn, subsample(1000, 100, 4))
    with pytest.raises(ValueError):
        subsample(10, 0, 0)


def test_scores_a_seeded_subsample():
    import scib_metrics as sm

    X = _embedding()
    rows = score_embeddings({"good": X}, TYPES, BATCHES, bio=SILHOUETTE_ONLY, batch=NO_BATCH, max_cells=300, seed=3)
    cells = subsample(N, 300, 3)
    assert (rows.n_cells == 300).all() and (rows.n_cells_total == N).all()
    assert (rows.cells == "seeded subsample of 300 of 400 cells (seed 3)").all()
    assert _values(rows, "good")["silhouette_label"] == pytest.approx(
        sm.silhouette_label(X[cells], TYPES[cells]), abs=1e-6
    )


def test_metric_set_is_configurable():
    rows = score_embeddings(
        {"good": _embedding()},
        TYPES,
        BATCHES,
        bio=SILHOUETTE_ONLY,
        batch={**NO_BATCH, "graph_connectivity": True, "pcr_comparison": True},
    )
    result = rows.set_index("metric")
    assert list(result.index) == ["silhouette_label", "graph_connectivity", "pcr_comparison", *AGGREGATES]
    assert result.loc["pcr_comparison", "status"] == "not_applicable"
    assert "no pre-integration embedding" in result.loc["pcr_comparison", "reason"]
    assert result.loc["batch_correction", "value"] == result.loc["graph_connectivity", "value"]
    assert rows.metric_set.iloc[0].startswith(
        "scib-metrics 0.5.10; bio: silhouette_label; batch: graph_connectivity, pcr_comparison; neighbours: exact"
    )
    only_bio = score_embeddings({"good": _embedding()}, TYPES, BATCHES, bio=SILHOUETTE_ONLY, batch=NO_BATCH).set_index(
        "metric"
    )
    assert list(only_bio.index) == ["silhouette_label", *AGGREGATES]
    assert only_bio.loc["batch_correction", "reason"] == "no batch-correction metric enabled"
    with pytest.raises(ValueError, match="unknown BioConservation"):
        score_embeddings({}, TYPES, BATCHES, bio={"silhouette": True}, batch={})


def test_exact_neighbours_reach_kbet_diffusion_search_and_give_scib_metrics_values():
    """With neighbors: exact, kBET's search on each cell type's diffusion map is exact too: pynndescent is never
    built (nor compiled by numba), and kBET is what scib-metrics' own pynndescent search gives on these cells."""
    import scib_metrics as sm
    import scib_metrics.nearest_neighbors._pynndescent as scib_pynndescent
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    X = _embedding(seed=3)
    distances, indices = NearestNeighbors(n_neighbors=90).fit(X).kneighbors(X)
    knn = NeighborsResults(indices=indices, distances=distances.astype(np.float32))
    direct = sm.kbet_per_label(knn.subset_neighbors(50), BATCHES, TYPES)  # scib-metrics' pynndescent inside
    only_kbet = {f: f == "kbet_per_label" for f in NO_BATCH}
    with mock.patch.object(scib_pynndescent, "NNDescent", side_effect=AssertionError("pynndescent was built")):
        rows = score_embeddings(
            {"x": X},
            TYPES,
            BATCHES,
            bio={"silhouette_label": False, **SILHOUETTE_ONLY},
            batch=only_kbet,
            neighbors="exact",
        )
        assert _values(rows, "x")["kbet_per_label"] == pytest.approx(direct, abs=1e-6)
        rows = score_embeddings(
            {"x": X},
            TYPES,
            BATCHES,
            bio={"silhouette_label": False, **SILHOUETTE_ONLY},
            batch=only_kbet,
            neighbors="pynndescent",
        )
    assert (rows.status[rows.metric == "kbet_per_label"] == "failed").all()  # scib-metrics' own search built it
