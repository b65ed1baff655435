"""Atomic writes and checked reads, the model package's and the benchmark's alike.

Every file is written to a temporary name in the destination folder and renamed into place only when complete,
so an interrupted job never leaves a file that looks finished. anndata and h5py are imported only by the
functions that read or write h5ad files.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import glob
import json
import os
import sys
import traceback
from pathlib import Path

from .errors import DISK_FULL, UNWRITABLE, InputError, OutputError

# h5py's OSError carries HDF5's whole error report as strerror: the reason is named here instead
_FULL_REASON = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


@contextlib.contextmanager
def atomic_path(dest):
    """Yield a temporary path beside ``dest``; rename it to ``dest`` only if the block succeeds.

    A full disk or an unwritable folder raises a one-line :class:`OutputError` and removes the temporary file.
    Temporary files of ``dest`` left by a killed writer are removed first (one job writes a given output).
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno in UNWRITABLE + DISK_FULL + (errno.EEXIST, errno.ENOTDIR):  # EEXIST/ENOTDIR: a file is in the way
            raise OutputError(f"{dest.parent}: cannot create output folder ({e.strerror})") from None
        raise
    for stale in dest.parent.glob(f".{glob.escape(dest.stem)}.partial-*{glob.escape(dest.suffix)}"):
        _remove(stale)
    tmp = dest.parent / f".{dest.stem}.partial-{os.getpid()}{dest.suffix}"
    with _h5py_close_errors() as failed:
        try:
            yield tmp
            os.replace(tmp, dest)
        except OSError as e:
            failed()
            if e.errno not in UNWRITABLE + DISK_FULL:
                _remove(tmp)
                raise
            problem = (
                f"{_FULL_REASON[e.errno]} while writing (nothing was written)"
                if e.errno in DISK_FULL
                else f"output folder is not writable ({e.strerror})"
            )
            # Free the failed writer's h5py objects now, while their close errors are held back: as the context of
            # the OutputError, this exception's traceback would keep them alive until long after this block.
            e.__traceback__ = None
            del e
            gc.collect()
            _remove(tmp)
            raise OutputError(f"{dest}: {problem}") from None
        except BaseException:
            failed()
            _remove(tmp)
            raise


@contextlib.contextmanager
def _h5py_close_errors():
    """Hold back the errors h5py reports while closing objects of a file whose write failed.

    When a write fails (disk full), every h5py object of the file prints its failed flush (a traceback through
    ``sys.excepthook``, then an "Exception ignored" line through ``sys.unraisablehook``) while the error unwinds;
    the one-line error says it all. Reports from a write that succeeds are passed on unchanged.
    """
    held, write_failed = [], []
    excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

    def from_h5py(tb) -> bool:
        return any("h5py" in frame.filename for frame in traceback.extract_tb(tb))

    def hold_excepthook(*exc):
        if from_h5py(exc[2]):
            held.append(lambda: excepthook(*exc))
        else:
            excepthook(*exc)

    def hold_unraisablehook(unraisable):
        if "h5py" in repr(unraisable.object) or from_h5py(unraisable.exc_traceback):
            held.append(lambda: unraisablehook(unraisable))
        else:
            unraisablehook(unraisable)

    sys.excepthook, sys.unraisablehook = hold_excepthook, hold_unraisablehook
    try:
        yield lambda: write_failed.append(True)
    finally:
        sys.excepthook, sys.unraisablehook = excepthook, unraisablehook
        if not write_failed:
            for report in held:
                report()


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):  # missing, or on a read-only filesystem where it cannot exist anyway
        path.unlink()


def write_h5ad(adata, path) -> None:
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


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


def open_h5ad(path):
    """Open an h5ad file with h5py; a missing, truncated or corrupt file raises a one-line :class:`InputError`."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    try:
        f = h5py.File(path, "r")
        list(f.keys())  # a truncated file can open but fail here
        return f
    except Exception as e:  # h5py raises many types for damaged files
        raise _unreadable(path, e) from None


def read_h5ad(path, layers: bool = True):
    """Read an h5ad file; a missing, truncated or corrupt file raises a one-line :class:`InputError`.

    With ``layers=False`` only X, obs, var, obsm and uns are read (the canonical files hold the counts twice).
    """
    import anndata as ad
    import h5py

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    try:
        if layers:
            return ad.read_h5ad(path)
        with h5py.File(path, "r") as f:
            parts = {k: _read_elem()(f[k]) for k in ("X", "obs", "var", "obsm", "uns") if k in f}
        return ad.AnnData(**parts)
    except Exception as e:  # h5py/anndata raise many types for damaged files
        raise _unreadable(path, e) from None


def _read_elem():
    try:  # anndata >= 0.11
        from anndata.io import read_elem
    except ImportError:  # pragma: no cover - older anndata
        from anndata.experimental import read_elem
    return read_elem
