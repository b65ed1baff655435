"""Atomic writes and checked reads.

Every file the workflow produces is written to a temporary name in the destination folder and renamed
into place only when complete, so an interrupted job never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path

import anndata as ad
import h5py
import pandas as pd

try:  # anndata >= 0.11
    from anndata.io import read_elem
except ImportError:  # pragma: no cover - older anndata
    from anndata.experimental import read_elem

from .errors import BenchError, InputError


@contextlib.contextmanager
def atomic_path(dest):
    """Yield a temporary path beside ``dest``; rename it to ``dest`` only if the block succeeds."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError as e:
        raise BenchError(f"{dest.parent}: cannot create output folder ({e.strerror})") from None
    tmp = dest.parent / f".{dest.stem}.partial-{os.getpid()}{dest.suffix}"
    try:
        yield tmp
        os.replace(tmp, dest)
    except OSError as e:
        _remove(tmp)
        if e.errno == errno.ENOSPC:
            raise BenchError(f"{dest}: no space left on device while writing") from None
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise BenchError(f"{dest}: output folder is not writable ({e.strerror})") from None
        raise
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def write_h5ad(adata: ad.AnnData, path) -> None:
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_tsv(df: pd.DataFrame, path, index: bool = False) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=index, na_rep="NA")


def write_text(text: str, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_default(o):
    # numpy scalars and arrays
    if hasattr(o, "item") and getattr(o, "ndim", 1) == 0:
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _unreadable(path, e: Exception) -> InputError:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return InputError(path, f"not a readable h5ad file (truncated or corrupt?): {reason}")


def open_h5ad(path) -> h5py.File:
    """Open an h5ad file with h5py; a missing, truncated or corrupt file raises a one-line :class:`InputError`."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    try:
        f = h5py.File(path, "r")
        list(f.keys())  # a truncated file can open but fail here
        return f
    except Exception as e:  # h5py raises many types for damaged files
        raise _unreadable(path, e) from None


def read_h5ad(path, layers: bool = True) -> ad.AnnData:
    """Read an h5ad file; a missing, truncated or corrupt file raises a one-line :class:`InputError`.

    With ``layers=False`` only X, obs, var and uns are read (the canonical files hold the counts twice).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    try:
        if layers:
            return ad.read_h5ad(path)
        with h5py.File(path, "r") as f:
            parts = {k: read_elem(f[k]) for k in ("X", "obs", "var", "uns") if k in f}
        return ad.AnnData(**parts)
    except Exception as e:  # h5py/anndata raise many types for damaged files
        raise _unreadable(path, e) from None


def read_json(path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "file does not exist") from None
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON: {e}") from None
