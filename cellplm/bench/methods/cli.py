"""The command line that runs any method (``python -m cellplm.bench.methods <method> --help``).

The contract: read ``--train`` and ``--test`` (and ``--solution`` for controls), write ``--prediction`` (h5ad,
``obs['label_pred']``) and ``--record`` (JSON). A method written in another language plugs in with a script of
its own that follows it (key ``script`` of its method.yaml).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import BenchError, OutputError, exit_after_output_error
from . import method_ids, metadata
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
    p.add_argument("--train", required=True, help="train.h5ad (raw counts in X, obs['cell_type'], obs['batch'])")
    p.add_argument("--test", required=True, help="test.h5ad (raw counts in X, obs['batch'], no labels)")
    p.add_argument("--solution", help="solution.h5ad (only control methods that need the truth read it)")
    p.add_argument("--prediction", required=True, help="output h5ad with obs['label_pred'] for every test cell")
    p.add_argument("--record", required=True, help="output JSON run record (status, timings, memory, versions)")
    p.add_argument("--dataset", default="dataset", help="dataset id written into the outputs")
    p.add_argument("--split", default="published", help="split id written into the outputs")
    p.add_argument("--seed", type=int, default=0, help="random seed of the method")
    p.add_argument("--param-set", default="default", help="name of the parameter set, recorded")
    p.add_argument("--params", default=None,
                   help="JSON object of hyperparameters (default: the method's params from its method.yaml)")
    p.add_argument("--on-error", choices=["record", "raise"], default="record",
                   help="record a crash as a 'failed' row (default) or raise it")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser(argv[0] if argv else None).parse_args(argv)
    try:
        params = json.loads(args.params) if args.params is not None else dict(metadata(args.method).get("params") or {})
        if not isinstance(params, dict):
            raise ValueError("not an object")
    except ValueError as e:
        print(f"ERROR: --params: not a JSON object ({e})", file=sys.stderr)
        return 2
    ids = RunIds(args.dataset, args.split, args.method, args.seed, args.param_set)
    try:
        record = run(args.method, ids, args.train, args.test, args.prediction, args.record, params=params,
                     solution_path=args.solution, on_error=args.on_error, log=print)
    except BenchError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        if isinstance(e, OutputError):
            exit_after_output_error()
        return 1
    print(f"status: {record.status}" + (f" ({record.reason})" if record.reason else ""))
    return 0
