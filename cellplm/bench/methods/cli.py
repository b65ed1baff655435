"""The command line every method script offers (``python workflow/scripts/methods/<method>.py --help``).

The same contract lets a user plug in a method in any language: read ``--train`` and ``--test`` (and
``--solution`` for controls), write ``--prediction`` (h5ad, ``obs['label_pred']``) and ``--record`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import BenchError, OutputError, exit_after_output_error
from .base import RunIds, run


def parser(annotator_cls) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=sys.argv[0] if sys.argv and sys.argv[0] else "method",
        description=f"{annotator_cls.label or annotator_cls.__name__}: fit on the train split, predict the test "
                    f"cells, write a prediction file and a run record. Implementation: {annotator_cls.implementation}.",
    )
    p.add_argument("--train", required=True, help="train.h5ad (raw counts in X, obs['cell_type'], obs['batch'])")
    p.add_argument("--test", required=True, help="test.h5ad (raw counts in X, obs['batch'], no labels)")
    p.add_argument("--solution", help="solution.h5ad (only control methods that need the truth read it)")
    p.add_argument("--prediction", required=True, help="output h5ad with obs['label_pred'] for every test cell")
    p.add_argument("--record", required=True, help="output JSON run record (status, timings, memory, versions)")
    p.add_argument("--dataset", default="dataset", help="dataset id written into the outputs")
    p.add_argument("--split", default="published", help="split id written into the outputs")
    p.add_argument("--method", default=None, help="method id written into the outputs (default: script name)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the method")
    p.add_argument("--param-set", default="default", help="name of the parameter set, recorded")
    p.add_argument("--params", default="{}", help="JSON object of hyperparameters")
    p.add_argument("--on-error", choices=["record", "raise"], default="record",
                   help="record a crash as a 'failed' row (default) or raise it")
    return p


def main(annotator_cls, argv=None) -> int:
    args = parser(annotator_cls).parse_args(argv)
    try:
        params = json.loads(args.params)
        if not isinstance(params, dict):
            raise ValueError("not an object")
    except ValueError as e:
        print(f"ERROR: --params: not a JSON object ({e})", file=sys.stderr)
        return 2
    method = args.method or annotator_cls.__name__
    ids = RunIds(args.dataset, args.split, method, args.seed, args.param_set)
    try:
        record = run(annotator_cls, ids, args.train, args.test, args.prediction, args.record, params=params,
                     solution_path=args.solution, on_error=args.on_error, log=print)
    except BenchError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        if isinstance(e, OutputError):
            exit_after_output_error()
        return 1
    print(f"status: {record.status}" + (f" ({record.reason})" if record.reason else ""))
    return 0
