"""Helpers the Snakefile imports at start-up (standard library only, so the DAG builds fast).

Config checks beyond the JSON schema, the table of remote files, per-job parameters, and the hash of the
``cellplm`` package that goes into ``params:`` so that code changes rerun the jobs they affect.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import sys
import traceback
from pathlib import Path

from .errors import BenchError, ConfigError

# name: (package, path inside the package, what it is)
BUILTIN = {
    "pbmc68k_reduced": ("scanpy", "datasets/10x_pbmc68k_reduced.h5ad",
                        "700 PBMCs (10x), log-normalised .raw plus n_counts; 10 labels in bulk_labels"),
}


def package_file(package: str, relpath: str) -> Path:
    """Locate a data file inside an installed package without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed; it ships the demo data")
    return Path(list(spec.submodule_search_locations)[0]) / relpath


def builtin_path(name: str) -> Path:
    if name not in BUILTIN:
        raise KeyError(f"unknown builtin dataset {name!r}; choose from {sorted(BUILTIN)}")
    package, relpath, _ = BUILTIN[name]
    return package_file(package, relpath)


def check_config(config: dict, root: Path) -> None:
    """Cross-references the schema cannot express. Raises ConfigError with a one-line message."""
    run = config["run"]
    for kind, known in (("dataset", config["datasets"]), ("method", config["methods"]), ("split", config["splits"])):
        for name in run[f"{kind}s"]:
            if name not in known:
                raise ConfigError(f"config: unknown {kind} '{name}' in run.{kind}s (known: {', '.join(sorted(known))})")
    for name in run["datasets"]:
        ds = config["datasets"][name]
        for split in ds.get("splits") or []:
            if split not in config["splits"]:
                raise ConfigError(f"config: dataset '{name}' lists unknown split '{split}'")
        fr = ds["split_fractions"]
        if abs(fr["train"] + fr["valid"] + fr["test"] - 1) > 1e-9:
            raise ConfigError(f"config: datasets.{name}.split_fractions must sum to 1, got {fr}")
        src = ds["source"]
        if src["kind"] == "local" and not (root / src["path"]).exists() and not Path(src["path"]).exists():
            raise ConfigError(f"config: dataset '{name}': local file {src['path']} does not exist")
    for name in run["methods"]:
        m = config["methods"][name]
        for key in ("script", "env"):
            if not (root / m[key]).exists():
                raise ConfigError(f"config: method '{name}': {key} file {m[key]} does not exist")
    files = {}
    for name in run["datasets"]:
        for f in remote_files(config["datasets"][name]["source"]):
            old = files.setdefault(f["filename"], f)
            if old["url"] != f["url"]:
                raise ConfigError(f"config: download file name '{f['filename']}' is used for two URLs")


def remote_files(source: dict) -> list[dict]:
    """The files a dataset source downloads: [{url, filename, sha256}]."""
    kind = source["kind"]
    if kind in ("download", "archive"):
        return [{"url": source["url"], "filename": source["filename"], "sha256": source.get("sha256")}]
    if kind == "cellxgene":
        return [{"url": f"cellxgene://{source['dataset_id']}", "filename": f"cellxgene_{source['dataset_id']}.h5ad",
                 "sha256": source.get("sha256")}]
    if kind == "pbmc12k":
        return [{"url": f["url"], "filename": f["filename"], "sha256": f.get("sha256")} for f in source["files"]]
    return []


def dataset_splits(config: dict, dataset: str) -> list[str]:
    """Split variants run on a dataset: its own ``splits`` list, else ``run.splits``."""
    return config["datasets"][dataset].get("splits") or config["run"]["splits"]


def method_labels(config: dict) -> dict[str, str]:
    """Method id -> the name shown in tables and plots."""
    return {m: c["label"] for m, c in config["methods"].items()}


def method_params(method: dict, param_set: str) -> dict:
    params = dict(method.get("params") or {})
    if param_set == "test":
        params.update(method.get("test_params") or {})
    return params


def code_hash(root: Path) -> str:
    """sha256 over the cellplm package sources (file names and contents), first 16 hex digits."""
    h = hashlib.sha256()
    for p in sorted((root / "cellplm").rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def to_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@contextlib.contextmanager
def job(snakemake):
    """Run a workflow script's body with stdout/stderr going to its log.

    A :class:`BenchError` (bad input, failed download, ...) ends the job with its one-line message on the
    console and in the log, without a traceback; anything else logs the full traceback.
    """
    console = sys.stderr
    log_path = snakemake.log[0] if len(snakemake.log) else None
    log = open(log_path, "w", buffering=1) if log_path else console
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = log
    try:
        yield log
    except BenchError as e:
        print(f"ERROR: {e}", file=log)
        print(f"ERROR: {e}", file=console)
        raise SystemExit(1) from None
    except Exception:
        traceback.print_exc(file=log)
        raise
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        if log is not console:
            log.close()
