"""Compile, once per environment, the numba code that the workflow's jobs would otherwise compile on a fresh
machine's first run, so that the first `make demo` costs little more than a second one.

Numba caches what it compiles with ``cache=True`` (and umap-learn's functions, declared without it, once
``cellplm.bench.compile_cache.cache_umap_numba`` has turned it on) beside the package's sources
(``__pycache__/*.nbi, *.nbc`` in the environment's site-packages, or ``NUMBA_CACHE_DIR``), keyed by the argument
types and the CPU; a fresh environment has none, and the first job that calls such a function compiles it
(umap-learn's and pynndescent's code: about 45 s on 2 cores for the first UMAP). This script calls those functions
on a few random cells with the types the jobs use: scanpy's normalisation, mean/variance and highly-variable-gene
code (every environment that has scanpy), the UMAP of an embedding (environments that have the benchmark's plotting
code and umap-learn), and the neighbour graph of scib-metrics' scores (the same functions with other argument
types). Steps whose packages are missing are skipped. Run by tools/warm_numba.sh (``make warm-caches``, which
``make demo`` runs), once per environment and version of this script.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings


def scanpy_preprocessing() -> None:
    import anndata as ad
    import numpy as np
    import scanpy as sc
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        counts = sp.csr_matrix(rng.poisson(1.0, size=(200, 120)).astype(dtype))
        adata = ad.AnnData(counts.copy())
        adata.layers["counts"] = counts.copy()
        sc.pp.highly_variable_genes(adata, n_top_genes=50, flavor="seurat_v3", layer="counts")
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
        sc.pp.highly_variable_genes(adata, n_top_genes=50)
        sc.pp.scale(adata, max_value=10)


def umap_of_an_embedding() -> None:
    import numpy as np

    from cellplm.bench.report.zeroshot_plots import _umap

    for dtype in (np.float32, np.float64):
        _umap(np.random.default_rng(0).normal(size=(300, 10)).astype(dtype), 0)


def scib_neighbour_graph() -> None:
    import numpy as np

    from cellplm.bench.embedding_metrics import _exact_neighbors, _scib_metrics

    _scib_metrics()  # with umap-learn's numba cache on (cellplm.bench.compile_cache)
    x = np.random.default_rng(0).normal(size=(300, 10)).astype(np.float32)
    _exact_neighbors(1)(x, 15).knn_graph_connectivities  # umap-learn's fuzzy_simplicial_set, as a scib job runs it


STEPS = {
    "scanpy": (scanpy_preprocessing, ["scanpy"]),  # step -> (function, the packages it needs)
    "umap": (umap_of_an_embedding, ["umap", "cellplm"]),
    "scib": (scib_neighbour_graph, ["scib_metrics", "umap", "cellplm"]),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--steps",
        nargs="+",
        choices=list(STEPS),
        default=list(STEPS),
        help="what to compile (default: all; steps whose packages are missing are skipped)",
    )
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    for name in args.steps:
        step, needs = STEPS[name]
        missing = [m for m in needs if importlib.util.find_spec(m.split(".")[0]) is None]
        if missing:
            print(f"warm_numba: {name}: skipped ({', '.join(missing)} not installed in {sys.prefix})")
            continue
        t0 = time.perf_counter()
        step()
        print(f"warm_numba: {name}: compiled in {time.perf_counter() - t0:.0f} s ({sys.prefix})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
