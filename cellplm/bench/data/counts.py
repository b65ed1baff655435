"""Find the raw count matrix in an h5ad file without loading what is not needed.

The canonical dataset holds raw counts. Inputs often store log-normalised values in ``X`` and the counts
elsewhere (``layers['counts']``, ``.raw``), or only log-normalised values plus each cell's library size
(e.g. scanpy's ``pbmc68k_reduced``). This module inspects each candidate matrix on disk from a sample of its
values, loads only the one it uses, and recovers counts from log1p(CP10k) values when that is the only option.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np
import scipy.sparse as sp

try:  # anndata >= 0.11
    from anndata.io import read_elem
except ImportError:  # pragma: no cover - older anndata
    from anndata.experimental import read_elem

from ..errors import InputError

SAMPLE_VALUES = 200_000
LIBRARY_SIZE_COLUMNS = ("n_counts", "total_counts", "nCount_RNA", "library_size")


@dataclass
class MatrixKind:
    """What a sample of a matrix's values looks like."""

    location: str  # "X", "layers/counts", "raw/X"
    kind: str  # "counts", "lognorm", "other"
    has_nan: bool = False
    has_negative: bool = False


def _sample_values(elem) -> np.ndarray:
    if isinstance(elem, h5py.Group):  # sparse: sample the stored non-zeros
        data = elem["data"]
        return np.asarray(data[: min(len(data), SAMPLE_VALUES)])
    rows = max(1, SAMPLE_VALUES // max(1, elem.shape[1])) if elem.ndim == 2 else SAMPLE_VALUES
    return np.asarray(elem[:rows]).ravel()


def classify_values(values: np.ndarray) -> tuple[str, bool, bool]:
    values = values.astype(np.float64, copy=False)
    has_nan = bool(np.isnan(values).any() or np.isinf(values).any())
    finite = values[np.isfinite(values)]
    has_negative = bool((finite < 0).any())
    nonzero = finite[finite != 0]
    if nonzero.size == 0:
        return "counts", has_nan, has_negative
    if np.all(np.abs(nonzero - np.round(nonzero)) < 1e-4):
        return "counts", has_nan, has_negative
    if nonzero.max() < 30:
        return "lognorm", has_nan, has_negative
    return "other", has_nan, has_negative


def inspect(f: h5py.File, location: str) -> MatrixKind | None:
    if location not in f:
        return None
    kind, has_nan, has_negative = classify_values(_sample_values(f[location]))
    return MatrixKind(location, kind, has_nan, has_negative)


def layer_location(layer: str) -> str:
    """Config name of a matrix ("X", "raw", or a layer name) -> its path inside the h5ad file."""
    if layer == "X":
        return "X"
    if layer == "raw":
        return "raw/X"
    return f"layers/{layer}"


def read_matrix(f: h5py.File, location: str) -> sp.csr_matrix:
    """Load one matrix as CSR float32 (one transient extra copy at most)."""
    m = read_elem(f[location])
    if not sp.issparse(m):
        m = sp.csr_matrix(m, dtype=np.float32)
    else:
        m = m.tocsr()
        if m.dtype != np.float32:
            m = m.astype(np.float32)
    m.sum_duplicates()
    m.eliminate_zeros()
    return m


def check_values(path, location: str, m: sp.csr_matrix) -> None:
    if not np.isfinite(m.data).all():
        raise InputError(path, f"{location} contains NaN or infinite values")
    if (m.data < 0).any():
        raise InputError(path, f"{location} contains negative values; raw counts are required")


def recover_from_lognorm(m: sp.csr_matrix, library_size: np.ndarray, path, location: str, target_sum: float = 1e4):
    """Invert ``log1p(x / library_size * target_sum)`` in place and round to integers.

    Refuses when the result is not close to integers (values were not log1p(CP10k) of the given sizes).
    """
    library_size = np.asarray(library_size, dtype=np.float64)
    if library_size.shape[0] != m.shape[0] or not np.all(library_size > 0):
        raise InputError(path, "library sizes for count recovery are missing or not positive")
    scale = np.repeat(library_size / target_sum, np.diff(m.indptr))
    values = np.expm1(m.data.astype(np.float64)) * scale
    deviation = np.abs(values - np.round(values))
    if values.size and np.quantile(deviation, 0.99) > 0.25:
        raise InputError(
            path,
            f"{location} is log-normalised and counts could not be recovered from it "
            f"(expm1(x) * library_size / {target_sum:g} is not integer-valued); provide a counts layer",
        )
    m.data = np.round(values).astype(np.float32)
    m.eliminate_zeros()
    return m


def locate_counts(path, f: h5py.File, obs, counts: str | None = None) -> tuple[sp.csr_matrix, str, str | None]:
    """Return (counts CSR, where it came from, var location of the matrix's genes).

    ``counts`` is the configured location ("X", "raw" or a layer name) or None for automatic detection.
    The var location is "raw/var" when the counts came from ``.raw``, else "var".
    """
    if counts is not None:
        location = layer_location(counts)
        kind = inspect(f, location)
        if kind is None:
            raise InputError(path, f"configured counts matrix '{counts}' ({location}) is not in the file")
        candidates = [kind]
    else:
        candidates = [k for k in (inspect(f, loc) for loc in _candidate_locations(f)) if k is not None]
        if not candidates:
            raise InputError(path, "file has no expression matrix (no X, layers or raw)")
    if counts is not None:  # an explicitly configured matrix must be clean
        _refuse_unclean(path, candidates[0])
    usable = [k for k in candidates if not (k.has_nan or k.has_negative)]
    for k in usable:
        if k.kind == "counts":
            m = read_matrix(f, k.location)
            check_values(path, k.location, m)
            if not np.all(np.abs(m.data - np.round(m.data)) < 1e-4):
                raise InputError(
                    path, f"{k.location} holds non-integer values beyond the sampled part; counts required"
                )
            return m, k.location, _var_location(k.location)
    # No count matrix: recover from log-normalised values when library sizes are known.
    size_col = next((c for c in LIBRARY_SIZE_COLUMNS if c in obs.columns), None)
    lognorm = [k for k in usable if k.kind == "lognorm"]
    if lognorm and size_col is not None:
        # Prefer .raw (all genes) over X (often scaled or subset).
        k = next((k for k in lognorm if k.location == "raw/X"), lognorm[0])
        m = read_matrix(f, k.location)
        check_values(path, k.location, m)
        m = recover_from_lognorm(m, obs[size_col].to_numpy(), path, k.location)
        return m, f"{k.location} (recovered: expm1 * obs['{size_col}'] / 1e4)", _var_location(k.location)
    if not usable:  # every candidate is damaged: name the first problem
        _refuse_unclean(path, candidates[0])
    found = ", ".join(f"{k.location}={k.kind}" for k in candidates)
    raise InputError(
        path,
        f"no raw counts found ({found}); log-normalised values cannot be used as counts: "
        "add a counts layer, or a library-size column in obs (n_counts/total_counts), or set 'counts' in the config",
    )


def _candidate_locations(f: h5py.File) -> list[str]:
    locs = []
    if "layers" in f:
        locs += [f"layers/{name}" for name in ("counts", "raw_counts", "raw") if name in f["layers"]]
    locs.append("X")
    if "raw" in f and "X" in f["raw"]:
        locs.append("raw/X")
    return locs


def _var_location(location: str) -> str:
    return "raw/var" if location.startswith("raw/") else "var"


def _refuse_unclean(path, k: MatrixKind) -> None:
    if k.has_nan:
        raise InputError(path, f"{k.location} contains NaN or infinite values")
    if k.has_negative:
        raise InputError(path, f"{k.location} contains negative values; raw counts are required")
