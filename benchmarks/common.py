"""What every benchmark result file carries, and how it is written.

A result file (``benchmarks/results/<name>.json``) is one JSON object: ``benchmark`` (its name), ``provenance``
(:func:`provenance`: date, machine, versions, git commit, the exact command and options) and the benchmark's own
``rows`` (a list of flat dicts). It is written atomically (a temporary file beside it, then ``os.replace``), so
a killed run leaves the previous file intact. ``benchmarks/readme_tables.py`` renders the tables of README.md and
docs/ from them.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU's vector-instruction flags (SSE, AVX, AVX-512, AMX, FMA, F16C): what decides which kernels torch runs,
    so results that differ between machines in their last digits can be traced to them."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return []
    return sorted(f for f in flags if f.startswith(("sse", "ssse", "avx", "amx", "fma", "f16c")))


def ram_gib() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return float("nan")


def gpu_name() -> str | None:
    """The first CUDA GPU torch sees, or None (torch imported only if it is already loaded or importable)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "ram_gib": ram_gib(),
        "gpu": gpu_name(),
        "os": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def git_commit() -> str:
    """HEAD of this repository, with ``+dirty`` when tracked files differ from it (the result then is not exactly
    that commit's code)."""

    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD").stdout.strip() or "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def versions() -> dict:
    out = {"python": platform.python_version()}
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda"] = torch.version.cuda
    except ImportError:
        out["torch"] = None
    try:
        from importlib.metadata import version

        out["upstream_cellplm"] = version("cellplm")
    except Exception:  # noqa: BLE001 - not installed in this environment
        out["upstream_cellplm"] = None
    return out


def provenance(script: str, argv: list[str], options: dict) -> dict:
    """Date, machine, versions, commit and the exact command (``script`` relative to the repository root)."""
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "versions": versions(),
        "git_commit": git_commit(),
        "command": shlex.join(["python", script, *argv]),
        "interpreter": sys.executable,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()},
    }


def write_result(path, benchmark: str, prov: dict, rows: list[dict], **extra) -> Path:
    """Write one result file atomically (JSON; NaN written as null). Standard library only (cellplm.io), so that
    timed.py can time the environment builds with the system's python, before any venv exists."""
    from cellplm.io import write_json

    path = Path(path)
    write_json(_clean({"benchmark": benchmark, "provenance": prov, "rows": rows, **extra}), path)
    return path


def _clean(o):
    import math

    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):  # numpy scalar
        return _clean(o.item())
    return o
