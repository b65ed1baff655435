"""Registries of pluggable components, one folder each (the OpenProblems layout), and the base of the components.

A registry is a package whose sub-folders each hold one component: a metadata file (``method.yaml`` for the
annotation methods, ``embedding.yaml`` for the embedding methods) with what describes it (label, implementation,
env, GPU, default params, test params, threads, interpreter) and ``entry: <module>:<class>``, the class in a module
of the same folder. Adding a component is adding a folder. A component is imported only when it runs, so one whose
packages are missing from the interpreter becomes :class:`Unavailable` (naming the package and how to get it),
which the harnesses record as a ``not_applicable`` row, never a silently missing one.

:class:`Parameterised` is what every component class shares: its seed and params, the defaults of the metadata
file beside its module, and the attributes a harness records (device, genes used, provenance).
"""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path
from typing import ClassVar

import yaml

from .errors import ConfigError


class Unavailable(ImportError):
    """The component's code cannot be imported by this interpreter (its packages are missing)."""


@functools.lru_cache(maxsize=None)
def read_yaml(path: Path, kind: str) -> dict:
    """A metadata file (a mapping; {} when the file does not exist), read once per process."""
    if not path.exists():
        return {}
    with open(path) as f:
        meta = yaml.safe_load(f) or {}
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: not a mapping of {kind} metadata")
    return meta


class Registry:
    """The components of ``package``: every sub-folder of ``folder`` with a ``metadata_file``.

    ``kind`` names a component in messages ("method", "embedding method"); ``error`` is the
    :class:`Unavailable` subclass :meth:`load` raises.
    """

    def __init__(
        self, package: str, folder: Path, metadata_file: str, kind: str, error: type[Unavailable] = Unavailable
    ):
        self.package, self.folder, self.metadata_file = package, Path(folder), metadata_file
        self.kind, self.error = kind, error

    def read_metadata(self, folder: Path) -> dict:
        """A component folder's metadata file; {} when the folder has none (read once per process)."""
        return read_yaml(Path(folder) / self.metadata_file, self.kind)

    def ids(self) -> list[str]:
        """Ids of the component folders (every folder here with a metadata file)."""
        return sorted(p.parent.name for p in self.folder.glob(f"*/{self.metadata_file}"))

    def metadata(self, component_id: str) -> dict:
        if not (self.folder / component_id / self.metadata_file).exists():
            raise ConfigError(
                f"{self.kind} {component_id!r}: no folder {self.folder / component_id} with a "
                f"{self.metadata_file} (known: {', '.join(self.ids())})"
            )
        return dict(self.read_metadata(self.folder / component_id))

    def load(self, component_id: str) -> type:
        """The component's class; :attr:`error` when its packages are not importable here."""
        meta = self.metadata(component_id)
        module, _, name = meta["entry"].partition(":")
        try:
            return getattr(importlib.import_module(f"{self.package}.{component_id}.{module}"), name)
        except ImportError as e:
            if (e.name or "").split(".")[0] in ("cellplm", ""):  # our own code is broken: say so, do not hide it
                raise
            setup = meta.get("setup") or f"run it in its environment ({meta.get('env')})"
            raise self.error(
                f"{sys.executable} cannot import package {e.name!r}, which {self.kind} {component_id} needs; {setup}"
            ) from e

    def classes(self) -> dict[str, type | Unavailable]:
        """Component id -> its class, or the :attr:`error` saying why it cannot run here."""
        out = {}
        for component_id in self.ids():
            try:
                out[component_id] = self.load(component_id)
            except self.error as e:
                out[component_id] = e
        return out

    def resolve(self, component: str | type, base: type) -> tuple[type, dict, Unavailable | None]:
        """(class, metadata, why it is unavailable or None) of a component id or class; an unavailable one gets
        ``base`` as its class, so that a harness can still build its record."""
        if not isinstance(component, str):
            return component, component.metadata(), None
        meta = self.metadata(component)
        try:
            return self.load(component), meta, None
        except self.error as e:
            return base, meta, e


class Parameterised:
    """Base of the component classes: seed, params and the metadata file beside the class's module.

    Subclasses set :attr:`registry` (which names the metadata file). ``device``, ``n_genes_used`` and ``extra``
    (provenance: checkpoint, settings worth recording) are filled by the component while it runs and go into the
    run record.
    """

    registry: ClassVar[Registry]
    packages: tuple[str, ...] = ()  # distributions whose versions go into the run record

    def __init__(self, seed: int = 0, **params):
        self.seed = seed
        self.params = params
        self.n_genes_used: int | None = None
        self.device = "cpu"
        self.extra: dict = {}

    @classmethod
    def metadata(cls) -> dict:
        """The metadata file of the folder of the class's module ({} for a class defined elsewhere)."""
        module = sys.modules[cls.__module__]
        return cls.registry.read_metadata(Path(module.__file__).parent) if getattr(module, "__file__", None) else {}

    @classmethod
    def defaults(cls) -> dict:
        return dict(cls.metadata().get("params") or {})

    def param(self, key):
        """Hyperparameter ``key``: the value given, else the component's default (``params`` of its metadata)."""
        return self.params[key] if key in self.params else self.defaults()[key]

    def check_params(self) -> None:
        """ValueError naming any given parameter the component does not know (i.e. not among its defaults)."""
        known = self.defaults()
        unknown = sorted(set(self.params) - set(known))
        if unknown:
            name = self.metadata().get("label", type(self).__name__)
            raise ValueError(f"unknown {name} parameter(s): {', '.join(unknown)} (known: {', '.join(known)})")
