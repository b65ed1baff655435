"""The zero-shot report: tables keep provenance and reasons, Markdown shows every n/a's reason, figures are written
whole (synthetic scib rows and records; one real UMAP run of a few hundred cells)."""

import json

import numpy as np
import pandas as pd
import pytest

from cellplm.bench.errors import OutputError
from cellplm.bench.report import zeroshot as zs
from cellplm.bench.report import zeroshot_plots as zp

LABELS = {"cellplm": "CellPLM", "geneformer": "Geneformer", "pca": "PCA"}
METRICS = [
    ("silhouette_label", "Silhouette label", "bio"),
    ("nmi_ari_cluster_labels_kmeans_nmi", "KMeans NMI", "bio"),
    ("ilisi_knn", "iLISI", "batch"),
    ("graph_connectivity", "Graph connectivity", "batch"),
    ("bio_conservation", "Bio conservation", "aggregate"),
    ("batch_correction", "Batch correction", "aggregate"),
    ("total", "Total", "aggregate"),
]
DEFS = {m: {"label": label, "definition": f"what {m} measures"} for m, label, _ in METRICS}
ONE_BATCH = "one batch: batch metrics need two or more"
NO_MODEL = "no model_dir configured"


def scib_rows(dataset: str, batches: int) -> pd.DataFrame:
    """Long scib rows as score_embeddings returns them, but embeddings and metric types out of order."""
    rng = np.random.default_rng(len(dataset))
    rows = []
    for emb in ("pca", "geneformer", "cellplm"):
        for m, label, kind in sorted(METRICS, key=lambda r: r[2]):  # aggregate, batch, bio
            batchy = kind == "batch" or m in ("batch_correction", "total")
            if emb == "geneformer":
                value, status, reason = np.nan, "not_applicable", NO_MODEL
            elif batchy and batches == 1:
                value, status, reason = np.nan, "not_applicable", ONE_BATCH
            else:
                value, status, reason = float(rng.random()), "ok", ""
            rows.append(
                {
                    "dataset": dataset,
                    "embedding": emb,
                    "metric": m,
                    "metric_label": label,
                    "metric_type": kind,
                    "value": value,
                    "status": status,
                    "reason": reason,
                    "n_cells": 300,
                    "n_cells_total": 300,
                    "cells": "all 300 cells",
                    "metric_set": "scib-metrics 0.5.10; exact kNN; unscaled",
                }
            )
    return pd.DataFrame(rows)


def records(dataset: str) -> list[dict]:
    base = {
        "dataset": dataset,
        "split": "published",
        "seed": 0,
        "param_set": "test",
        "n_cells": 300,
        "device": "cpu",
        "peak_rss_mb": 512.0,
        "peak_gpu_mb": None,
        "n_genes_used": 12,
        "versions": {},
        "host": "h",
        "finished": "t",
    }
    return [
        {
            **base,
            "embedding": "cellplm",
            "status": "ok",
            "reason": "",
            "embed_s": 2.0,
            "cells_per_s": 150.0,
            "n_dims": 512,
            "params": {"checkpoint": "/c/released__20230926_85M/x.best.ckpt", "checkpoint_kind": "released"},
            "extra": {"checkpoint": "/c/released__20230926_85M/x.best.ckpt", "checkpoint_kind": "released"},
        },
        {
            **base,
            "embedding": "pca",
            "status": "ok",
            "reason": "",
            "embed_s": 0.5,
            "cells_per_s": None,
            "n_dims": 50,
            "params": {"n_comps": 50},
            "extra": {"n_hvg": 2000, "n_comps": 50},
        },
        {
            **base,
            "embedding": "geneformer",
            "status": "not_applicable",
            "reason": NO_MODEL,
            "embed_s": None,
            "cells_per_s": None,
            "n_dims": None,
            "params": {"model_dir": None, "checkpoint_kind": "pretrained"},
            "extra": {},
        },
    ]


@pytest.fixture
def tables(tmp_path):
    scib = pd.concat([scib_rows("two_batches", 2), scib_rows("one_batch", 1)], ignore_index=True)
    paths = []
    for i, rec in enumerate(records("two_batches") + records("one_batch")):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(rec))
    recs = zs.read_embedding_records(paths)
    return zs.zeroshot_table(scib, recs, LABELS), zs.embedding_speed_table(recs, LABELS)


def test_zeroshot_table_says_what_produced_each_row(tables, tmp_path):
    table, _ = tables
    assert list(table.columns[:7]) == [
        "dataset",
        "embedding",
        "embedding_label",
        "control",
        "checkpoint",
        "cells",
        "metric_set",
    ]
    assert not table["control"].any()  # no control among these (tests/test_zeroshot_controls.py)
    assert list(dict.fromkeys(table["dataset"])) == ["one_batch", "two_batches"]
    sub = table[table["dataset"] == "two_batches"]
    assert list(dict.fromkeys(sub["embedding"])) == ["cellplm", "geneformer", "pca"]  # the order of the labels
    assert list(sub[sub["embedding"] == "pca"]["metric"]) == [m for m, _, _ in METRICS]  # bio, batch, aggregate
    ck = dict(zip(table["embedding"], table["checkpoint"]))
    assert ck == {"cellplm": "released (20230926_85M)", "pca": zs.NO_CHECKPOINT, "geneformer": ""}
    assert (table["cells"] == "all 300 cells").all() and table["metric_set"].str.contains("unscaled").all()
    gf = table[table["embedding"] == "geneformer"]
    assert (gf["status"] == "not_applicable").all() and (gf["reason"] == NO_MODEL).all()
    one = table[(table["dataset"] == "one_batch") & (table["metric"] == "total") & (table["embedding"] == "pca")]
    assert one["reason"].item() == ONE_BATCH and np.isnan(one["value"].item())
    pca = table[table["embedding"] == "pca"].iloc[0]
    assert pca["cells_per_s"] == 600.0 and pca["n_dims"] == 50 and pca["device"] == "cpu"  # 300 cells / 0.5 s


def test_speed_table_keeps_reasons(tables):
    _, speed = tables
    assert list(speed.columns) == [
        "dataset",
        "embedding",
        "label",
        "status",
        "reason",
        "device",
        "n_cells",
        "embed_s",
        "cells_per_s",
        "peak_rss_mb",
        "peak_gpu_mb",
        "checkpoint",
    ]
    gf = speed[speed["embedding"] == "geneformer"].iloc[0]
    assert gf["status"] == "not_applicable" and gf["reason"] == NO_MODEL and np.isnan(gf["embed_s"])
    assert speed[speed["embedding"] == "cellplm"]["cells_per_s"].tolist() == [150.0, 150.0]  # as recorded


def test_two_records_of_one_embedding_are_refused():
    with pytest.raises(ValueError, match="more than one embedding record for dataset/embedding one_batch/pca"):
        zs.embedding_speed_table(records("one_batch") + records("one_batch")[1:2], LABELS)


def test_markdown_has_a_table_per_dataset_with_the_reason_of_every_na(tables, tmp_path):
    table, speed = tables
    path = tmp_path / "zeroshot.tsv"
    table.to_csv(path, sep="\t", index=False, na_rep="NA")  # as the workflow writes and reads it back
    text = "\n".join(zs.markdown_lines(pd.read_csv(path, sep="\t"), speed, DEFS))
    assert (
        text.count(
            "| embedding | checkpoint | Silhouette label | KMeans NMI | iLISI | Graph connectivity | Bio "
            "conservation | Batch correction | Total |"
        )
        == 2
    )
    one = text.split("### Dataset `one_batch`")[1].split("### Dataset")[0]
    assert "| PCA | none (fitted on these cells, no labels) | " in one
    assert (
        "- n/a [1] (batch-correction metrics, Batch correction, Total for CellPLM, PCA): not applicable: "
        f"{ONE_BATCH}." in one
    )
    assert f"- n/a [2] (every metric for Geneformer): not applicable: {NO_MODEL}." in one
    assert "| Geneformer | – | n/a [2] | n/a [2] |" in one
    assert "- Cells scored: all 300 cells. Metric set: scib-metrics 0.5.10; exact kNN; unscaled." in one
    two = text.split("### Dataset `two_batches`")[1]
    assert "n/a [1] (every metric for Geneformer)" in two and "n/a [2]" not in two
    assert "- **Total** (`total`, aggregate): what total measures" in text
    overview = text.split("### Overview: aggregate score per dataset")[1].split("### Dataset")[0]
    assert "| embedding | one_batch | two_batches |" in overview
    pca = table[(table["embedding"] == "pca")].set_index(["dataset", "metric"])["value"]
    assert (
        f"| PCA | {pca[('one_batch', 'bio_conservation')]:.3f} *bio* | {pca[('two_batches', 'total')]:.3f} |"
        in overview
    )
    assert "| Geneformer | n/a (not_applicable) | n/a (not_applicable) |" in overview
    cost = text.split("### Embedding cost")[1]
    assert "| one_batch | PCA | ok | cpu | 300 | 0.5 | 600 | 512 | – |" in cost
    assert f"| one_batch | Geneformer | not applicable: {NO_MODEL} | cpu | 300 | – | – | 512 | – |" in cost


def test_scib_plot_writes_a_png_with_na_and_single_batch_panels(tables, tmp_path):
    table, _ = tables
    zp.scib_plot(table, tmp_path / "scib.png")
    assert (tmp_path / "scib.png").read_bytes()[:4] == b"\x89PNG"
    # best first by total (0.62, 0.60), by bio conservation where no total was scored (0.87, 0.78), n/a last
    assert zp._ranked(table[table["dataset"] == "two_batches"]) == ["cellplm", "pca", "geneformer"]
    assert zp._ranked(table[table["dataset"] == "one_batch"]) == ["pca", "cellplm", "geneformer"]


def test_a_figure_that_cannot_be_written_leaves_nothing(tables, tmp_path, read_only):
    table, _ = tables
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutputError, match="cannot create output folder"):  # the output folder is a file
        zp.scib_plot(table, tmp_path / "file" / "scib.png")
    assert not list(tmp_path.glob("*.png")) and (tmp_path / "file").read_text() == "not a folder"
    (tmp_path / "ro").mkdir()
    folder = read_only(tmp_path / "ro")
    with pytest.raises(OutputError, match="scib.png: output folder is not writable"):
        zp.scib_plot(table, folder / "scib.png")
    assert list(folder.iterdir()) == []


def test_umap_grid_same_cells_for_every_embedding(tmp_path, monkeypatch):
    """One real UMAP run (numba compiles once per process): a single-batch dataset, one embedding that did not run,
    and a subsample smaller than the dataset, drawn on the same cells for every embedding."""
    rng = np.random.default_rng(0)
    n = 300
    types = rng.integers(0, 3, n)
    obs = pd.DataFrame({"cell_type": [f"type{t}" for t in types], "batch": "b0"})
    centres = rng.normal(size=(3, 8)) * 5
    x = (centres[types] + rng.normal(size=(n, 8))).astype(np.float32)
    embeddings = {
        "pca": ("PCA", x, ""),
        "geneformer": ("Geneformer", None, NO_MODEL),
        "cellplm": ("CellPLM", x * 2, ""),
    }
    seen = []
    umap = zp._umap
    monkeypatch.setattr(zp, "_umap", lambda emb, seed: seen.append(emb) or umap(emb, seed))
    zp.umap_plot("synthetic", embeddings, obs, tmp_path / "umap.png", max_cells=200, seed=0)
    assert (tmp_path / "umap.png").read_bytes()[:4] == b"\x89PNG"
    assert len(seen) == 2 and np.array_equal(seen[1], seen[0] * 2) and len(seen[0]) == 200
    with pytest.raises(ValueError, match="embedding cellplm: 10 rows for 300 cells"):
        zp.umap_plot("synthetic", {"cellplm": ("CellPLM", x[:10], "")}, obs, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_umap_grid_legend_of_many_cell_types_is_a_note(monkeypatch, tmp_path):
    """Beyond 30 cell types no legend but a note; an embedding that did not run still gets its row (no UMAP run)."""
    obs = pd.DataFrame({"cell_type": [f"type{i % 40}" for i in range(400)], "batch": [f"b{i % 2}" for i in range(400)]})
    figures = []
    monkeypatch.setattr(zp, "_save", lambda fig, path: figures.append(fig))
    zp.umap_plot("many", {"geneformer": ("Geneformer", None, NO_MODEL)}, obs, tmp_path / "umap.png", max_cells=300)
    texts = [t.get_text() for ax in figures[0].axes for t in ax.texts]
    assert "cell type: 40\nvalues, too many\nfor a legend" in texts
    assert f"Geneformer: not available ({NO_MODEL})" in [t.replace("\n", " ") for t in texts]
    assert figures[0].get_suptitle().endswith("embedding, a seeded subsample of 300 of 400 cells (seed 0)")
    assert [t.get_text() for t in figures[0].axes[-1].get_legend().get_texts()] == ["b0", "b1"]
    zp.plt.close(figures[0])
