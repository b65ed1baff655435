"""Annotation methods, one folder each (the OpenProblems layout).

``<id>/method.yaml`` holds what describes the method (label, implementation, env, GPU, control or not, published
name, default params, test params, threads, interpreter) and names its Annotator class (:mod:`.base`) with
``entry: <module>:<class>``, a module of the same folder; :func:`.base.run` is the harness. The workflow reads every
folder's metadata as its method registry (:class:`~cellplm.bench.registry.Registry`), and runs any method with one
command (``python -m cellplm.bench.methods <id> --help``). Adding a method is adding a folder. A method is imported
only when it runs, so a method whose packages are missing from the interpreter is a ``not_applicable`` run that
names them, never a silently missing row.
"""

from __future__ import annotations

from pathlib import Path

from ..registry import Registry, Unavailable

FOLDER = Path(__file__).parent
METADATA = "method.yaml"


class MethodUnavailable(Unavailable):
    """The method's code cannot be imported by this interpreter (its packages are missing)."""


REGISTRY = Registry(__name__, FOLDER, METADATA, "method", MethodUnavailable)


# The registry's public functions, under the names the workflow and the tests use.
read_metadata = REGISTRY.read_metadata  # a method folder's method.yaml; {} when it has none
method_ids = REGISTRY.ids  # ids of the folders with a method.yaml
metadata = REGISTRY.metadata  # a method's method.yaml (ConfigError for an unknown id)
load = REGISTRY.load  # a method's Annotator class; MethodUnavailable when its packages are not importable here
registry = REGISTRY.classes  # method id -> its Annotator class, or the MethodUnavailable saying why not
