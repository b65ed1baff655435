"""Compiled code kept between processes: what umap-learn's numba functions and scib-metrics' jax functions compile
is written to disk once and loaded by every later job, instead of being compiled again in each.

Every job is a new process, and two libraries compile on first use in each one:

- umap-learn's numba functions (``fuzzy_simplicial_set``'s ``smooth_knn_dist`` and ``compute_membership_strengths``,
  the layout's epoch loop, ...) are declared without ``cache=True``, so numba compiles them in every process that
  calls them: about 7 s on 2 cores for each job that builds a neighbour graph or a UMAP (scanpy's
  ``sc.pp.neighbors``, scib-metrics' ``knn_graph_connectivities``). :func:`cache_umap_numba` turns numba's own cache
  on for them (``Dispatcher.enable_caching``, what ``cache=True`` does at declaration): the code is stored beside
  umap-learn's sources (or in ``NUMBA_CACHE_DIR``) keyed by argument types and CPU, as for every ``cache=True``
  function. The machine code is the same, so are the results.
- scib-metrics runs jax functions on arrays whose shapes differ by embedding and cell type: about 280 XLA
  compilations (11 s on 2 cores) to score five embeddings of 1,500 cells. :func:`cache_jax` turns on jax's
  persistent compilation cache (``jax_compilation_cache_dir``), in the environment (``<sys.prefix>/jax-cache``) unless
  ``JAX_COMPILATION_CACHE_DIR`` names another folder; a rerun on the same shapes loads the executables (the same
  ones: the same results). A first run pays the compilations and fills it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

UMAP_MODULES = ("umap.umap_", "umap.layouts", "umap.utils", "umap.distances", "umap.sparse")


def cache_umap_numba() -> None:
    """Turn numba's on-disk cache on for umap-learn's jitted functions that were declared without it (idempotent;
    nothing when umap-learn is not installed)."""
    try:
        from numba.core.dispatcher import Dispatcher
        from numba.core.caching import NullCache
    except ImportError:
        return
    for name in UMAP_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            return
        for value in vars(module).values():
            if isinstance(value, Dispatcher) and value.__module__ == name and isinstance(value._cache, NullCache):
                value.enable_caching()


def cache_jax() -> Path:
    """Turn jax's persistent compilation cache on (every compilation, however short); the folder it uses."""
    import jax

    folder = jax.config.jax_compilation_cache_dir  # JAX_COMPILATION_CACHE_DIR, read by jax itself
    if not folder:
        folder = str(Path(sys.prefix) / "jax-cache")
        jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # default 1 s: scib's take ~40 ms each
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return Path(folder)
