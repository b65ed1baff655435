"""The command line that runs any method (``python -m cellplm.bench.methods <method> --help``).

The contract: read ``--train`` and ``--test`` (and ``--solution`` for controls), write ``--prediction`` (h5ad,
``obs['label_pred']``) and ``--record`` (JSON). A method written in another language plugs in with a script of
its own that follows it (key ``script`` of its method.yaml).
"""

from __future__ import annotations

import argparse
import sys

from ...keys import BATCH, LABEL, PREDICTION
from ..harness import add_run_arguments, cli_main
from . import METADATA, method_ids, metadata
from .base import RunIds, run


def parser(method_id: str | None = None) -> argparse.ArgumentParser:
    """The runner's parser; with a method id, its help describes that method (label and implementation)."""
    about = ""
    if method_id in method_ids():
        meta = metadata(method_id)
        about = f" {method_id}: {meta['label']}. Implementation: {meta.get('implementation', '')}."
    p = argparse.ArgumentParser(
        prog="python -m cellplm.bench.methods",
        description="Run one method: fit on the train split, predict the test cells, write a prediction file and a "
        "run record. Methods: " + ", ".join(method_ids()) + " (cellplm/bench/methods/<method>/)." + about,
    )
    p.add_argument("method", choices=method_ids(), metavar="method", help="method id (a folder with a method.yaml)")
    p.add_argument("--train", required=True, help=f"train.h5ad (raw counts in X, obs['{LABEL}'], obs['{BATCH}'])")
    p.add_argument("--test", required=True, help=f"test.h5ad (raw counts in X, obs['{BATCH}'], no labels)")
    p.add_argument("--solution", help="solution.h5ad (only control methods that need the truth read it)")
    p.add_argument("--prediction", required=True, help=f"output h5ad with obs['{PREDICTION}'] for every test cell")
    add_run_arguments(p, METADATA)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser(argv[0] if argv else None).parse_args(argv)
    ids = RunIds(args.dataset, args.split, args.method, args.seed, args.param_set)
    return cli_main(
        args.params,
        metadata(args.method).get("params") or {},
        lambda params: run(
            args.method,
            ids,
            args.train,
            args.test,
            args.prediction,
            args.record,
            params=params,
            solution_path=args.solution,
            on_error=args.on_error,
            log=print,
        ),
    )
