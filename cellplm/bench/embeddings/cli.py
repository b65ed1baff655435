"""The command line that runs any embedding method (``python -m cellplm.bench.embeddings <id> --help``).

The contract: read ``--train`` and ``--test`` (one split; and ``--solution``, its test labels, for the controls that
need the labels), write ``--embedding`` (h5ad, ``obsm['X_emb']`` for every cell, train then test) and ``--record``
(JSON), both always, both atomically (:func:`.base.run`).

``python -m cellplm.bench.embeddings batch --runs RUNS ...`` embeds the split with several embedding methods in one
process (the workflow's embedding batch jobs: one job per dataset for the embedding methods with ``batch: true``, so
that their imports and start-up are paid once); each run is the same as its own command would be.
"""

from __future__ import annotations

import argparse
import sys

from ...keys import BATCH, EMBEDDING, LABEL
from .. import harness
from ..harness import add_run_arguments, cli_main
from . import METADATA, embedding_ids, metadata
from .base import EmbeddingIds, run


def parser(embedding_id: str | None = None) -> argparse.ArgumentParser:
    """The runner's parser; with an embedding id, its help describes that method (label and implementation)."""
    about = ""
    if embedding_id in embedding_ids():
        meta = metadata(embedding_id)
        about = f" {embedding_id}: {meta['label']}. Implementation: {meta.get('implementation', '')}."
    p = argparse.ArgumentParser(
        prog="python -m cellplm.bench.embeddings",
        description="Embed the cells of one split (train then test; labels are never read, except by the controls "
        "that need them) with one embedding method, write the embedding and a run record. Embedding methods: "
        + ", ".join(embedding_ids())
        + " (cellplm/bench/embeddings/<id>/)."
        + about,
    )
    p.add_argument(
        "embedding",
        choices=embedding_ids(),
        metavar="embedding",
        help="embedding method id (a folder with an embedding.yaml)",
    )
    add_split_inputs(p)
    p.add_argument(
        "--embedding",
        required=True,
        dest="embedding_path",
        metavar="EMBEDDING",
        help=f"output h5ad: obs {BATCH} and set, obsm['{EMBEDDING}'] (float32) for every cell when the run is ok",
    )
    p.add_argument(
        "--as",
        dest="run_id",
        metavar="ID",
        help="record the run under this id, a variant of the embedding method (e.g. cellplm_random16: cellplm's code "
        "with other params; default: the method's id)",
    )
    add_run_arguments(p, METADATA)
    return p


def add_split_inputs(p) -> None:
    """The split's files every run reads: --train, --test and, for the controls that need the labels, --solution."""
    p.add_argument("--train", required=True, help=f"train.h5ad (raw counts in X, obs['{BATCH}']; labels are dropped)")
    p.add_argument("--test", required=True, help=f"test.h5ad (raw counts in X, obs['{BATCH}'])")
    p.add_argument(
        "--solution", help=f"solution.h5ad (obs['{LABEL}'] of the test cells; read only by controls that need labels)"
    )


def batch_parser() -> argparse.ArgumentParser:
    p = harness.batch_parser(
        "embeddings",
        "Embed one split's cells with several embedding methods, one after the other in this process, each exactly as "
        "its own command would (its seeding, embedding file and run record).",
        add_split_inputs,
        'JSON list of runs: {"embedding": method id, "id": the id to record (a variant\'s, e.g. cellplm_random16), '
        '"params": {...}, "embedding_path": path, "record": path}',
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of every run")
    return p


def batch_main(argv) -> int:
    """Every run of ``--runs`` in order (:func:`~cellplm.bench.harness.batch_main`)."""
    args = batch_parser().parse_args(argv)

    def run_one(spec, params):
        ids = EmbeddingIds(args.dataset, args.split, spec.get("id") or spec["embedding"], args.seed, args.param_set)
        return run(
            spec["embedding"],
            ids,
            args.train,
            args.test,
            spec["embedding_path"],
            spec["record"],
            params=params,
            solution_path=args.solution,
            on_error=args.on_error,
            log=print,
        )

    return harness.batch_main(args.runs, run_one)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [harness.BATCH_COMMAND]:
        return batch_main(argv[1:])
    args = parser(argv[0] if argv else None).parse_args(argv)
    ids = EmbeddingIds(args.dataset, args.split, args.run_id or args.embedding, args.seed, args.param_set)
    return cli_main(
        args.params,
        metadata(args.embedding).get("params") or {},
        lambda params: run(
            args.embedding,
            ids,
            args.train,
            args.test,
            args.embedding_path,
            args.record,
            params=params,
            solution_path=args.solution,
            on_error=args.on_error,
            log=print,
        ),
    )
