"""Zero-shot embedding scores: scib-metrics' bio-conservation and batch-correction metrics, as long rows.

The values are scib-metrics' own: its ``Benchmarker`` run on each embedding, unscaled
(``get_results(min_max_scale=False)``), aggregates included. What this module adds is a row for every
(embedding, metric) whatever happened, so that the report can say why a cell is empty: an embedding that did
not run, one with NaN in it, a metric that raised, or batch correction on a dataset of one batch.

Each embedding gets a ``Benchmarker`` of its own. Without min-max scaling a value and an aggregate depend on that
embedding alone (``Benchmarker.get_results`` averages each embedding's column), so this gives the numbers one
joint run would, while a failure stays with the embedding (and the metric) that caused it.

scib-metrics and jax are imported on first use (jax on CPU), so importing this module is cheap. Citations are to
scib-metrics 0.5.10 (``scib_metrics/benchmark/_core.py`` unless said otherwise).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from dataclasses import asdict
from functools import partial

import numpy as np
import pandas as pd

from ..keys import BATCH, EMBEDDING, LABEL
from .compile_cache import cache_jax, cache_umap_numba

# scib-metrics function name -> how it is shown and what it measures. Labels are Benchmarker's column names
# (``metric_name_cleaner``); definitions paraphrase the functions' docstrings (scib_metrics/metrics/*.py), with the
# neighbour counts Benchmarker gives them (``MetricAnnDataAPI``, ``_neighbor_values`` = 15, 50, 90). Order:
# Benchmarker's (the fields of BioConservation, then of BatchCorrection).
METRICS = {
    "isolated_labels": {
        "label": "Isolated labels",
        "type": "bio",
        "definition": "silhouette width (rescaled to [0, 1]) of the cells of the labels present in the fewest "
        "batches against all other labels, averaged over those labels",
    },
    "nmi_ari_cluster_labels_leiden_nmi": {
        "label": "Leiden NMI",
        "type": "bio",
        "definition": "normalised mutual information between Leiden clusters of the 15-neighbour graph (best of "
        "10 resolutions) and the cell types",
    },
    "nmi_ari_cluster_labels_leiden_ari": {
        "label": "Leiden ARI",
        "type": "bio",
        "definition": "adjusted Rand index between the same Leiden clusters (the resolution of best NMI) and the "
        "cell types",
    },
    "nmi_ari_cluster_labels_kmeans_nmi": {
        "label": "KMeans NMI",
        "type": "bio",
        "definition": "normalised mutual information between k-means clusters (k = number of cell types, seeded) "
        "and the cell types",
    },
    "nmi_ari_cluster_labels_kmeans_ari": {
        "label": "KMeans ARI",
        "type": "bio",
        "definition": "adjusted Rand index between the same k-means clusters and the cell types",
    },
    "silhouette_label": {
        "label": "Silhouette label",
        "type": "bio",
        "definition": "average silhouette width of the cell types (Euclidean), rescaled to [0, 1]",
    },
    "clisi_knn": {
        "label": "cLISI",
        "type": "bio",
        "definition": "cell-type local inverse Simpson's index of the 90-neighbour graph (median over cells), "
        "scaled to [0, 1]; 1 = neighbourhoods of one cell type",
    },
    "bras": {
        "label": "BRAS",
        "type": "batch",
        "definition": "batch removal adapted silhouette: within each cell type, 1 - |silhouette| of the batches "
        "(cosine, mean distance to the other batches); higher = batches better mixed",
    },
    "ilisi_knn": {
        "label": "iLISI",
        "type": "batch",
        "definition": "integration local inverse Simpson's index of the batches in the 90-neighbour graph (median "
        "over cells), scaled to [0, 1]; higher = more batches in a neighbourhood",
    },
    "kbet_per_label": {
        "label": "KBET",
        "type": "batch",
        "definition": "kBET acceptance rate within each cell type (diffusion-map neighbours of the 50-neighbour "
        "graph), averaged over cell types; higher = better mixed",
    },
    "graph_connectivity": {
        "label": "Graph connectivity",
        "type": "batch",
        "definition": "share of each cell type's cells in the largest strongly connected component of its "
        "15-neighbour subgraph, averaged over cell types",
    },
    "pcr_comparison": {
        "label": "PCR comparison",
        "type": "batch",
        "definition": "principal component regression on batch: (variance explained by batch in the "
        "pre-integration embedding - in this one) / that in the pre-integration one, floored at 0",
    },
}
AGGREGATES = {
    "bio_conservation": {
        "label": "Bio conservation",
        "definition": "mean of the bio-conservation metrics that gave a value (Benchmarker, unscaled)",
    },
    "batch_correction": {
        "label": "Batch correction",
        "definition": "mean of the batch-correction metrics that gave a value (Benchmarker, unscaled)",
    },
    "total": {
        "label": "Total",
        "definition": "0.6 x bio conservation + 0.4 x batch correction, the scIB weighting (Benchmarker)",
    },
}
COLUMNS = [
    "embedding",
    "metric",
    "metric_label",
    "metric_type",
    "value",
    "status",
    "reason",
    "n_cells",
    "n_cells_total",
    "cells",
    "metric_set",
]
NEIGHBORS = {"exact": "exact (scikit-learn)", "pynndescent": "pynndescent (scib-metrics' default)"}

_ROWS = {  # the functions that give two values: Benchmarker stores them as f"{metric_name}_{key}" (benchmark())
    "nmi_ari_cluster_labels_leiden": ("nmi_ari_cluster_labels_leiden_nmi", "nmi_ari_cluster_labels_leiden_ari"),
    "nmi_ari_cluster_labels_kmeans": ("nmi_ari_cluster_labels_kmeans_nmi", "nmi_ari_cluster_labels_kmeans_ari"),
}
_LABEL, _BATCH, _EMB, _PRE = LABEL, BATCH, EMBEDDING, "X_pre"  # names inside the AnnData we hand over


def subsample(n_cells: int, max_cells: int | None, seed: int) -> np.ndarray:
    """Sorted indices of the cells to score: all of them when ``n_cells <= max_cells`` (or no maximum), else a
    seeded draw of ``max_cells`` without replacement (the same seed gives the same cells)."""
    if max_cells is not None and max_cells < 1:
        raise ValueError(f"max_cells must be at least 1 (or None), not {max_cells}")
    if max_cells is None or n_cells <= max_cells:
        return np.arange(n_cells)
    return np.sort(np.random.default_rng(seed).choice(n_cells, size=max_cells, replace=False))


def score_embeddings(
    embeddings: dict[str, np.ndarray],
    labels,
    batches,
    *,
    bio: dict[str, bool],
    batch: dict[str, bool],
    max_cells: int | None = 50000,
    seed: int = 0,
    neighbors: str = "exact",
    pre_integrated: np.ndarray | None = None,
    unavailable: dict[str, tuple[str, str]] | None = None,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """scib-metrics scores of each embedding of one dataset, one row per (embedding, metric) (:data:`COLUMNS`).

    ``embeddings``: id -> (n_cells, d) array, rows in the order of ``labels`` and ``batches`` (``batches`` None:
    one batch). ``bio`` / ``batch``: scib-metrics' ``BioConservation`` / ``BatchCorrection`` fields -> on/off
    (a field left out keeps scib-metrics' default); each enabled metric gets a row per embedding, plus the three
    :data:`AGGREGATES`. All embeddings are scored on the same :func:`subsample` of cells. ``neighbors``: a key of
    :data:`NEIGHBORS`. ``pre_integrated``: the (n_cells, d) embedding PCR comparison compares against (without it
    that metric's rows say so). ``unavailable``: id -> (status "not_applicable" or "failed", reason) of embeddings
    that did not run. ``n_jobs``: workers of the neighbour search. An embedding of the wrong shape or with NaN or
    inf in any cell gets failed rows, and so does a metric that raises; the others are scored all the same.
    """
    sm = _scib_metrics()
    from scib_metrics.benchmark import BatchCorrection, BioConservation

    labels = np.asarray(labels).astype(str)
    n_total = len(labels)
    if n_total == 0:
        raise ValueError("no cells to score")
    if neighbors not in NEIGHBORS:
        raise ValueError(f"neighbors must be one of {', '.join(NEIGHBORS)}, not {neighbors!r}")
    functions = _enabled(BioConservation, bio) + _enabled(BatchCorrection, batch)
    if not functions:
        raise ValueError("no scib metric enabled (bio and batch are all off)")
    unavailable = dict(unavailable or {})
    if any(status not in ("not_applicable", "failed") for status, _ in unavailable.values()):
        raise ValueError(f"an unavailable embedding's status is not_applicable or failed: {unavailable}")
    if set(embeddings) & set(unavailable):
        raise ValueError(f"embeddings both given and unavailable: {sorted(set(embeddings) & set(unavailable))}")
    for name, values in (("batches", batches), ("pre_integrated", pre_integrated)):
        if values is not None and len(values) != n_total:
            raise ValueError(f"{len(values)} {name} for {n_total} labels")

    cells = subsample(n_total, max_cells, seed)
    labels = labels[cells]
    # isolated_labels reads the batches even without batch metrics (MetricAnnDataAPI): one constant batch then
    one_batch_name = "no batch labels given" if batches is None else None
    batches = np.full(len(cells), "none") if batches is None else np.asarray(batches).astype(str)[cells]
    pre = None if pre_integrated is None else np.asarray(pre_integrated, dtype=np.float32)[cells]
    skipped = _skipped(functions, labels, batches, one_batch_name, pre is not None)
    context = {
        "n_cells": len(cells),
        "n_cells_total": n_total,
        "cells": _cells_text(len(cells), n_total, seed),
        "metric_set": _metric_set(sm.__version__, functions, neighbors),
    }
    computer = _exact_neighbors if neighbors == "exact" else _pynndescent
    diffusion = _exact_diffusion_neighbors(n_jobs) if neighbors == "exact" else contextlib.nullcontext()

    results = {}
    frozen = _freeze_gc()
    try:
        with diffusion:
            for emb_id, emb in embeddings.items():
                X, problem = _matrix(emb, n_total)
                if problem:
                    results[emb_id] = _uniform(functions, "failed", problem)
                    continue
                bench = partial(_benchmark, X[cells], labels, batches, pre, neighbours=_once(computer(n_jobs)))
                values, failed = _run(bench, [f for f in functions if f not in skipped])
                results[emb_id] = _results(functions, values, skipped, failed)
    finally:
        if frozen:
            gc.unfreeze()
    results.update({emb_id: _uniform(functions, *why) for emb_id, why in unavailable.items()})
    return pd.DataFrame(
        [
            {"embedding": emb_id, "metric": metric, **_describe(metric), **row, **context}
            for emb_id, rows in results.items()
            for metric, row in rows.items()
        ],
        columns=COLUMNS,
    )


def _skipped(functions, labels, batches, one_batch_name: str | None, has_pre: bool) -> dict[str, str]:
    """function -> why it cannot apply to these cells (the same for every embedding)."""
    skipped = {}
    if len(np.unique(batches)) < 2:
        why = f"one batch ({one_batch_name or batches[0]}): batch-correction metrics need at least two batches"
        skipped.update({f: why for f in functions if _kind(f) == "batch"})
    else:
        skipped.update(_within_cell_types(functions, labels, batches))
    if not has_pre and "pcr_comparison" in functions:
        skipped.setdefault("pcr_comparison", "no pre-integration embedding given: PCR comparison compares against one")
    return skipped


def _within_cell_types(functions, labels, batches) -> dict[str, str]:
    """Why bras / kbet_per_label cannot apply to these cells, if they cannot.

    Both work within each cell type and skip a cell type of one batch; bras also one whose every cell is a batch
    of its own, kbet_per_label one of under 10 cells. With every cell type skipped bras raises (``pd.concat`` of
    nothing) and kbet_per_label returns NaN (``silhouette_batch`` in _silhouette.py, ``kbet_per_label`` in
    _kbet.py)."""
    table = pd.DataFrame({"label": labels, "batch": batches}).groupby("label")["batch"].agg(["size", "nunique"])
    several = table["nunique"] > 1
    usable = {"bras": several & (table["nunique"] < table["size"]), "kbet_per_label": several & (table["size"] >= 10)}
    need = {"bras": "cells from two or more batches", "kbet_per_label": "10 or more cells from two or more batches"}
    return {
        f: f"no cell type has {need[f]}, and {METRICS[f]['label']} is computed within cell types"
        for f in usable
        if f in functions and not usable[f].any()
    }


# ---- scib-metrics -------------------------------------------------------------------------------------------


def _scib_metrics():
    """scib-metrics, imported with jax on CPU (unless JAX_PLATFORMS says otherwise), the compiled code of jax and
    umap-learn kept between jobs (:mod:`.compile_cache`), and its INFO logging off (kbet_per_label logs every cell
    type it skips)."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import scib_metrics

    cache_jax()  # compiled once per shape, kept between jobs
    cache_umap_numba()  # knn_graph_connectivities runs umap-learn's fuzzy_simplicial_set

    scib_metrics.settings.verbosity = logging.WARNING
    return scib_metrics


def _freeze_gc() -> bool:
    """Move every object alive now out of the garbage collector's sight, unless the caller already froze some
    (then leave it to them); True when this call froze.

    Benchmarker runs ``gc.collect()`` before each metric of each embedding (``benchmark()``, also for metrics
    turned off). With jax, scanpy and anndata loaded a call walks millions of objects (about 0.3 s on 2 cores;
    15 s of 34 s for 1,500 cells x 5 embeddings). With those frozen (``gc.freeze``) a call takes milliseconds,
    and what the scoring itself makes is still collected."""
    if gc.get_freeze_count():
        return False
    gc.freeze()
    return True


def _enabled(spec_class, flags: dict[str, bool]) -> list[str]:
    """The functions ``spec_class(**flags)`` turns on, in Benchmarker's order (it iterates ``asdict`` of it)."""
    known = asdict(spec_class())
    unknown = sorted(set(flags) - set(known))
    if unknown:
        raise ValueError(f"unknown {spec_class.__name__} metric(s) {unknown}; known: {', '.join(known)}")
    wrong = {k: v for k, v in flags.items() if not isinstance(v, bool)}
    if wrong:
        raise ValueError(f"{spec_class.__name__} flags must be true or false: {wrong}")
    return [name for name, on in asdict(spec_class(**flags)).items() if on]


def _exact_neighbors(n_jobs: int):
    """A ``prepare(neighbor_computer=...)`` of scikit-learn's exact kNN (Euclidean, like pynndescent's default).

    Each cell is its own first neighbour at distance 0, as scib-metrics' own ``pynndescent`` wrapper returns it
    (``NNDescent.neighbor_graph``; ``NeighborsResults``: "Self should always be included here"): ``kneighbors``
    given the fitted points themselves counts each as its own neighbour. Distances are float32 like pynndescent's.
    Exact search skips pynndescent's index building and is quick for tens of thousands of cells; with
    :func:`_exact_diffusion_neighbors` it also stands in for the pynndescent search kbet_per_label runs on each cell
    type's diffusion map, so that no pynndescent is compiled by numba (about 25 s a process on 2 cores).
    """
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    def compute(X: np.ndarray, n_neighbors: int):
        distances, indices = NearestNeighbors(n_neighbors=n_neighbors, n_jobs=n_jobs).fit(X).kneighbors(X)
        return NeighborsResults(indices=indices, distances=distances.astype(np.float32))

    return compute


@contextlib.contextmanager
def _exact_diffusion_neighbors(n_jobs: int):
    """Within the block, kbet_per_label's neighbour search on each cell type's diffusion map is exact too: its
    ``diffusion_nn`` (utils/_diffusion_nn.py) calls ``scib_metrics.nearest_neighbors.pynndescent(embedding,
    n_neighbors=k + 1)``, which the block replaces with :func:`_exact_neighbors` (the neighbours pynndescent
    approximates, self first)."""
    from unittest import mock

    import scib_metrics.nearest_neighbors as nn

    exact = _exact_neighbors(n_jobs)
    with mock.patch.object(nn, "pynndescent", lambda X, n_neighbors, **_: exact(X, n_neighbors)):
        yield


def _pynndescent(n_jobs: int):
    """scib-metrics' default neighbour search, called as ``Benchmarker.prepare`` calls it without a computer."""
    from scib_metrics.nearest_neighbors import pynndescent

    return lambda X, n_neighbors: pynndescent(X, n_neighbors=n_neighbors, random_state=0, n_jobs=n_jobs)


def _once(compute):
    """``compute`` remembered, for one embedding: the retries of :func:`_run` search its neighbours only once."""
    found = {}

    def memo(X: np.ndarray, n_neighbors: int):
        if n_neighbors not in found:
            found[n_neighbors] = compute(X, n_neighbors)
        return found[n_neighbors]

    return memo


def _benchmark(X, labels, batches, pre, functions, *, neighbours) -> dict[str, float]:
    """scib-metrics' ``Benchmarker`` on one embedding for ``functions``: metric id / aggregate -> value."""
    from anndata import AnnData
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation
    from scib_metrics.benchmark._core import metric_name_cleaner

    specs = [cls(**{f: f in functions for f in asdict(cls())}) for cls in (BioConservation, BatchCorrection)]
    bio, batch = (spec if any(asdict(spec).values()) else None for spec in specs)  # all off: None, or no Total
    obs = pd.DataFrame({_LABEL: labels, _BATCH: batches}, index=np.arange(len(labels)).astype(str))
    # prepare() runs sc.tl.pca on adata.X when no pre-integrated key is given; this AnnData has no X, and the
    # key's only reader is pcr_comparison (MetricAnnDataAPI), so without `pre` (pcr off) the embedding stands in.
    adata = AnnData(obs=obs, obsm={_EMB: X, _PRE: X if pre is None else pre})
    bench = Benchmarker(
        adata,
        batch_key=_BATCH,
        label_key=_LABEL,
        embedding_obsm_keys=[_EMB],
        bio_conservation_metrics=bio,
        batch_correction_metrics=batch,
        pre_integrated_embedding_obsm_key=_PRE,
        progress_bar=False,
    )
    bench.prepare(neighbor_computer=neighbours)
    bench.benchmark()
    wide = bench.get_results(min_max_scale=False).loc[_EMB]  # columns: cleaned metric names and the aggregates
    ids = {clean: name for name, clean in metric_name_cleaner.items()}
    ids.update({AGGREGATES[a]["label"]: a for a in AGGREGATES})
    return {ids[column]: float(value) for column, value in wide.items()}


def _run(bench, functions) -> tuple[dict[str, float], dict[str, str]]:
    """``bench(functions)``'s values, and why each function that raised failed.

    Benchmarker stops at the first metric that raises. Then each function is tried alone to find the ones that
    raise, and the others are scored together again (their aggregates then leave the failed ones out)."""
    if not functions:
        return {}, {}
    try:
        return bench(functions), {}
    except Exception as error:  # noqa: BLE001 - any scib-metrics error becomes failed rows, not a lost dataset
        together = _error_text(error)
    failed = {}
    for f in functions:
        try:
            bench([f])
        except Exception as error:  # noqa: BLE001
            failed[f] = _error_text(error)
    failed = failed or dict.fromkeys(functions, together)
    rest = [f for f in functions if f not in failed]
    try:
        return (bench(rest) if rest else {}), failed
    except Exception as error:  # noqa: BLE001
        return {}, {**failed, **dict.fromkeys(rest, _error_text(error))}


def _error_text(error: Exception) -> str:
    text = " ".join(str(error).split())
    return f"scib-metrics raised {type(error).__name__}: {text[:300]}"


# ---- rows ---------------------------------------------------------------------------------------------------


def _ids(function: str) -> tuple[str, ...]:
    """The metric ids of a scib-metrics function's rows."""
    return _ROWS.get(function, (function,))


def _kind(function: str) -> str:
    return METRICS[_ids(function)[0]]["type"]


def _results(functions, values, skipped, failed) -> dict[str, dict]:
    """metric id -> {value, status, reason} for the metrics of ``functions`` and the three aggregates."""
    results = {}
    for f in functions:
        for metric in _ids(f):
            value = values.get(metric, np.nan)
            if f in skipped:
                results[metric] = _row(np.nan, "not_applicable", skipped[f])
            elif f in failed:
                results[metric] = _row(np.nan, "failed", failed[f])
            elif np.isfinite(value):
                results[metric] = _row(value, "ok", "")
            else:
                results[metric] = _row(np.nan, "failed", "scib-metrics returned NaN")
    for aggregate, kind, words in (
        ("bio_conservation", "bio", "bio-conservation"),
        ("batch_correction", "batch", "batch-correction"),
    ):
        members = {m: results[m] for f in functions if _kind(f) == kind for m in _ids(f)}
        results[aggregate] = _aggregate(values.get(aggregate, np.nan), members, words)
    bio_row, batch_row = results["bio_conservation"], results["batch_correction"]
    if bio_row["status"] == batch_row["status"] == "ok":
        results["total"] = _row(values["total"], "ok", "")
    else:
        why = next(r for r in (batch_row, bio_row) if r["status"] != "ok")
        status = "not_applicable" if "not_applicable" in (bio_row["status"], batch_row["status"]) else "failed"
        results["total"] = _row(np.nan, status, f"needs bio conservation and batch correction; {why['reason']}")
    return results


def _aggregate(value: float, members: dict[str, dict], words: str) -> dict:
    """An aggregate row: Benchmarker's mean, with a reason when it is over fewer metrics than enabled."""
    if not members:
        return _row(np.nan, "not_applicable", f"no {words} metric enabled")
    missing = [metric for metric, m in members.items() if m["status"] != "ok"]
    if len(missing) == len(members):
        if all(m["status"] == "not_applicable" for m in members.values()):
            return _row(np.nan, "not_applicable", "; ".join(dict.fromkeys(m["reason"] for m in members.values())))
        return _row(np.nan, "failed", f"no {words} metric gave a value")
    n_ok = len(members) - len(missing)
    reason = f"mean of {n_ok} of {len(members)} {words} metrics ({', '.join(missing)}: no value)" if missing else ""
    return _row(value, "ok", reason)


def _uniform(functions, status: str, reason: str) -> dict[str, dict]:
    """Every metric row and aggregate of ``functions`` with one status and reason (an embedding that did not
    run, or that cannot be scored)."""
    return {m: _row(np.nan, status, reason) for m in [m for f in functions for m in _ids(f)] + list(AGGREGATES)}


def _row(value: float, status: str, reason: str) -> dict:
    return {"value": float(value), "status": status, "reason": reason}


def _describe(metric: str) -> dict:
    if metric in AGGREGATES:
        return {"metric_label": AGGREGATES[metric]["label"], "metric_type": "aggregate"}
    return {"metric_label": METRICS[metric]["label"], "metric_type": METRICS[metric]["type"]}


def _matrix(emb, n_total: int) -> tuple[np.ndarray | None, str]:
    """The embedding as float32 (what scib-metrics computes in), or why it cannot be scored."""
    try:
        X = np.asarray(emb, dtype=np.float32)
    except (TypeError, ValueError) as error:
        return None, f"embedding is not a numeric matrix ({error})"
    if X.ndim != 2 or X.shape[0] != n_total or X.shape[1] == 0:
        return None, f"embedding has shape {X.shape}, expected ({n_total}, d) with d >= 1"
    bad = int((~np.isfinite(X)).any(axis=1).sum())
    return (None, f"embedding has NaN or inf in {bad:,} of {n_total:,} cells") if bad else (X, "")


def _cells_text(n_cells: int, n_total: int, seed: int) -> str:
    if n_cells == n_total:
        return f"all {n_total:,} cells"
    return f"seeded subsample of {n_cells:,} of {n_total:,} cells (seed {seed})"


def _metric_set(scib_version: str, functions: list[str], neighbors: str) -> str:
    bio = [f for f in functions if _kind(f) == "bio"] or ["none"]
    batch = [f for f in functions if _kind(f) == "batch"] or ["none"]
    return (
        f"scib-metrics {scib_version}; bio: {', '.join(bio)}; batch: {', '.join(batch)}; "
        f"neighbours: {NEIGHBORS[neighbors]}; values unscaled, aggregates as Benchmarker "
        f"(total = 0.6 bio + 0.4 batch)"
    )
