"""What the harnesses that run one component and record it share (annotation methods, embedding methods).

Seeding, the package versions of the record, the outcome of a run (``ok``; ``not_applicable`` when the component
raises :class:`~cellplm.bench.errors.NotApplicable`; ``failed`` for any other exception, or re-raised with
``on_error="raise"``), peak memory, and the runners' common options, their ``--params`` and their exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import platform
import random
import socket
import sys
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from ..memory import peak_gpu_mb, peak_rss_mb
from .errors import BenchError, NotApplicable, OutputError, exit_after_output_error


@dataclass
class Record:
    """The fields of every run record; a harness's record adds its timings and sizes. ``ids`` (a dataclass of
    dataset, split, component, seed, param set) is flattened into the JSON."""

    ids: object
    status: str = "ok"
    reason: str = ""
    peak_rss_mb: float | None = None
    peak_gpu_mb: float | None = None
    device: str = "cpu"
    n_genes_used: int | None = None
    params: dict = field(default_factory=dict)
    implementation: str = ""
    versions: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    host: str = field(default_factory=socket.gethostname)
    finished: str = ""

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "ids"}
        d.update(self.ids.__dict__)
        return d


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def versions(packages) -> dict:
    out = {"python": platform.python_version()}
    for name in ("numpy", "scikit-learn", "anndata", "scanpy", *packages):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def instantiate(cls, unavailable: ImportError | None, seed: int, params: dict):
    """The component ``cls(seed=seed, **params)`` after seeding everything; NotApplicable (naming what is missing)
    when its packages are not importable here."""
    if unavailable is not None:
        raise NotApplicable(str(unavailable))
    seed_everything(seed)
    return cls(seed=seed, **params)


@contextlib.contextmanager
def outcome(record: Record, name: str, on_error: str = "record", log=print):
    """Run the block; NotApplicable -> status ``not_applicable``, any other exception -> ``failed`` (first line of
    the message), or re-raised with ``on_error="raise"``."""
    try:
        yield
    except NotApplicable as e:
        record.status, record.reason = "not_applicable", str(e)
        log(f"{name}: not applicable: {e}")
    except Exception as e:
        if on_error == "raise":
            raise
        record.status, record.reason = "failed", f"{type(e).__name__}: {e}".splitlines()[0][:500]
        log(f"{name}: FAILED\n{traceback.format_exc()}")


def finish(record: Record, component) -> None:
    """Peak memory and the end time; a run that stopped keeps what the component learnt before stopping (e.g.
    checkpoint provenance)."""
    if component is not None and record.status != "ok":
        record.extra = component.extra
    record.peak_rss_mb = peak_rss_mb()
    record.peak_gpu_mb = peak_gpu_mb()
    record.finished = datetime.now(timezone.utc).isoformat(timespec="seconds")


def add_run_arguments(p, metadata_file: str) -> None:
    """The runners' options other than their inputs and main output: --record, the ids, --params, --on-error."""
    p.add_argument("--record", required=True, help="output JSON run record (status, timings, memory, versions)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the method")
    p.add_argument(
        "--params",
        default=None,
        help=f"JSON object of hyperparameters (default: the method's params from its {metadata_file})",
    )
    add_split_run_arguments(p)


def add_split_run_arguments(p) -> None:
    """What every run of a split shares (also a batch of runs): the dataset, split and parameter-set ids, and
    --on-error."""
    p.add_argument("--dataset", default="dataset", help="dataset id written into the outputs")
    p.add_argument("--split", default="published", help="split id written into the outputs")
    p.add_argument("--param-set", default="default", help="name of the parameter set, recorded")
    p.add_argument(
        "--on-error",
        choices=["record", "raise"],
        default="record",
        help="record a crash as a 'failed' row (default) or raise it",
    )


def cli_main(params_text: str | None, defaults: dict, run_with) -> int:
    """The runners' main after argument parsing: ``--params`` (a JSON object; without it ``defaults``, the
    component's params), then ``run_with(params)`` -> its record.

    Exit status 2 with one line when ``--params`` is not a JSON object; 1 with one line for a
    :class:`~cellplm.bench.errors.BenchError` (an unwritable output exits as
    :func:`~cellplm.bench.errors.exit_after_output_error` does); 0 otherwise, whatever the run's status.
    """
    try:
        params = dict(defaults) if params_text is None else json.loads(params_text)
        if not isinstance(params, dict):
            raise ValueError("not an object")
    except ValueError as e:
        print(f"ERROR: --params: not a JSON object ({e})", file=sys.stderr)
        return 2
    try:
        record = run_with(params)
    except BenchError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        if isinstance(e, OutputError):
            exit_after_output_error()
        return 1
    print(f"status: {record.status}" + (f" ({record.reason})" if record.reason else ""))
    return 0


BATCH_COMMAND = "batch"  # the runners' first argument that selects their batch command


def batch_parser(package: str, description: str, add_inputs, runs_help: str) -> argparse.ArgumentParser:
    """The batch command's parser of ``python -m cellplm.bench.<package>``: the split's inputs (``add_inputs``),
    ``--runs`` and what every run of the split shares."""
    p = argparse.ArgumentParser(prog=f"python -m cellplm.bench.{package} {BATCH_COMMAND}", description=description)
    add_inputs(p)
    p.add_argument("--runs", required=True, help=runs_help)
    add_split_run_arguments(p)
    return p


def batch_main(runs_text: str, run_one) -> int:
    """The batch commands' loop: ``--runs``, a JSON list of run objects, each run as :func:`cli_main` runs one
    command, with the run's ``params``: ``run_one(spec, params)`` -> its record. Exit status 2 with one line when
    ``--runs`` is not such a list; otherwise that of the first run that cannot write its outputs (the runs after it
    are not started), else 0."""
    try:
        runs = json.loads(runs_text)
        if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
            raise ValueError("not a list of objects")
    except ValueError as e:
        print(f"ERROR: --runs: not a JSON list of runs ({e})", file=sys.stderr)
        return 2
    for spec in runs:
        code = cli_main(json.dumps(spec["params"]), {}, lambda params, spec=spec: run_one(spec, params))
        if code:
            return code
    return 0
