"""Embedding methods for the zero-shot track, one folder each (the OpenProblems layout, as the annotation methods).

``<id>/embedding.yaml`` holds what describes the embedding method (label, implementation, env, GPU, default params,
test params, threads, interpreter, setup, model, cellplm_checkpoint) and names its Embedder class (:mod:`.base`)
with ``entry: <module>:<class>``, a module of the same folder; :func:`.base.run` is the harness and
``python -m cellplm.bench.embeddings <id> --help`` the runner. An embedding method sees the cells of one split (train
then test, raw counts, ``obs['batch']`` only: never a label) and returns one vector per cell. A method whose
packages are missing from the interpreter is a ``not_applicable`` run that names them.
"""

from __future__ import annotations

from pathlib import Path

from ..registry import Registry, Unavailable

FOLDER = Path(__file__).parent
METADATA = "embedding.yaml"


class EmbeddingUnavailable(Unavailable):
    """The embedding method's code cannot be imported by this interpreter (its packages are missing)."""


REGISTRY = Registry(__name__, FOLDER, METADATA, "embedding method", EmbeddingUnavailable)

read_metadata = REGISTRY.read_metadata  # an embedding folder's embedding.yaml; {} when it has none
embedding_ids = REGISTRY.ids  # ids of the folders with an embedding.yaml
metadata = REGISTRY.metadata  # an embedding method's embedding.yaml (ConfigError for an unknown id)
load = REGISTRY.load  # its Embedder class; EmbeddingUnavailable when its packages are not importable here
registry = REGISTRY.classes  # embedding id -> its Embedder class, or the EmbeddingUnavailable saying why not
