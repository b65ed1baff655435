"""Annotation methods, one folder each (the OpenProblems layout).

``<id>/method.yaml`` holds what describes the method (label, implementation, env, GPU, control or not, published
name, default params, test params, threads, interpreter) and names its Annotator class (:mod:`.base`) with
``entry: <module>:<class>``, a module of the same folder; :func:`.base.run` is the harness. The workflow reads every
folder's metadata as its method registry (:class:`~cellplm.bench.registry.Registry`), and runs any method with one
command (``python -m cellplm.bench.methods <id> --help``). Adding a method is adding a folder. A method is imported
only when it runs, so a method whose packages are missing from the interpreter is a ``not_applicable`` run that
names them, never a silently missing row.

Beside the folders, ``zeroshot.yaml`` declares the zero-shot rows: one per embedding method of a run
(:func:`zeroshot_rows`), each a kNN on that embedding (:mod:`.zeroshot`).
"""

from __future__ import annotations

from pathlib import Path

from ..registry import Registry, Unavailable, read_yaml

FOLDER = Path(__file__).parent
METADATA = "method.yaml"
ZEROSHOT = FOLDER / "zeroshot.yaml"  # the declaration of the zero-shot rows


class MethodUnavailable(Unavailable):
    """The method's code cannot be imported by this interpreter (its packages are missing)."""


REGISTRY = Registry(__name__, FOLDER, METADATA, "method", MethodUnavailable)


# The registry's public functions, under the names the workflow and the tests use.
read_metadata = REGISTRY.read_metadata  # a method folder's method.yaml; {} when it has none
method_ids = REGISTRY.ids  # ids of the folders with a method.yaml
metadata = REGISTRY.metadata  # a method's method.yaml (ConfigError for an unknown id)
load = REGISTRY.load  # a method's Annotator class; MethodUnavailable when its packages are not importable here
registry = REGISTRY.classes  # method id -> its Annotator class, or the MethodUnavailable saying why not


def zeroshot_row_id(embedding: str) -> str:
    """The id of the zero-shot row of embedding method ``embedding`` (``cellplm`` -> ``cellplm_zeroshot``)."""
    return read_yaml(ZEROSHOT, "zero-shot row")["id"].format(embedding=embedding)


def zeroshot_rows(embeddings: dict, k: int) -> dict:
    """Registry entries of the zero-shot rows that ``zeroshot.yaml`` declares, one for each embedding method of
    ``embeddings`` (id -> its registry entry), with ``k`` neighbours; ``zeroshot_of`` names the embedding. The row
    of a control embedding (``control: true``) is a control row."""
    declared = dict(read_yaml(ZEROSHOT, "zero-shot row"))
    declared.pop("id")
    out = {}
    for emb, spec in embeddings.items():
        words = {"embedding": emb, "label": spec["label"], "implementation": spec.get("implementation", ""), "k": k}
        out[zeroshot_row_id(emb)] = {
            **{key: value.format(**words) if isinstance(value, str) else value for key, value in declared.items()},
            "params": {"k": k},
            "zeroshot_of": emb,
            "control": bool(spec.get("control")),
            "note": spec.get("note"),
        }  # the embedding's caveat goes on its row, and so does its being a control
    return out
