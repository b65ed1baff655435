"""Annotation methods, one folder each (the OpenProblems layout).

``<id>/method.yaml`` holds what describes the method (label, implementation, env, GPU, control or not, published
name, default params, test params, threads, interpreter) and names its Annotator class (:mod:`.base`) with
``entry: <module>:<class>``, a module of the same folder; :func:`.base.run` is the harness. The workflow reads every folder's metadata as its
method registry, and runs any method with one command (``python -m cellplm.bench.methods <id> --help``).
Adding a method is adding a folder. A method is imported only when it runs, so a method whose packages are
missing from the interpreter is a ``not_applicable`` run that names them, never a silently missing row.
"""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path

import yaml

from ..errors import ConfigError

FOLDER = Path(__file__).parent
METADATA = "method.yaml"


class MethodUnavailable(ImportError):
    """The method's code cannot be imported by this interpreter (its packages are missing)."""


@functools.lru_cache(maxsize=None)
def read_metadata(folder: Path) -> dict:
    """A method folder's ``method.yaml``; {} when the folder has none."""
    path = Path(folder) / METADATA
    if not path.exists():
        return {}
    with open(path) as f:
        meta = yaml.safe_load(f) or {}
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: not a mapping of method metadata")
    return meta


def method_ids() -> list[str]:
    """Ids of the method folders (every folder here with a method.yaml)."""
    return sorted(p.parent.name for p in FOLDER.glob(f"*/{METADATA}"))


def metadata(method_id: str) -> dict:
    if not (FOLDER / method_id / METADATA).exists():
        raise ConfigError(f"method {method_id!r}: no folder {FOLDER / method_id} with a {METADATA} "
                          f"(known: {', '.join(method_ids())})")
    return dict(read_metadata(FOLDER / method_id))


def load(method_id: str) -> type:
    """The method's Annotator class; :class:`MethodUnavailable` when its packages are not importable here."""
    meta = metadata(method_id)
    module, _, name = meta["entry"].partition(":")
    try:
        return getattr(importlib.import_module(f"{__name__}.{method_id}.{module}"), name)
    except ImportError as e:
        if (e.name or "").split(".")[0] in ("cellplm", ""):  # our own code is broken: say so, do not hide it
            raise
        setup = meta.get("setup") or f"run it in its environment ({meta.get('env')})"
        raise MethodUnavailable(f"{sys.executable} cannot import package {e.name!r}, which method {method_id} "
                                f"needs; {setup}") from e


def registry() -> dict[str, type | MethodUnavailable]:
    """Method id -> its Annotator class, or the :class:`MethodUnavailable` saying why it cannot run here."""
    out = {}
    for method_id in method_ids():
        try:
            out[method_id] = load(method_id)
        except MethodUnavailable as e:
            out[method_id] = e
    return out
