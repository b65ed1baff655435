#!/usr/bin/env python
"""Time one command (the demo's workflow, the test suite) and write its wall and CPU time to a benchmark result file.

    .venv/bin/python benchmarks/timed.py demo -- .venv/bin/snakemake --cores 2 --configfile config/demo.yaml
    .venv/bin/python benchmarks/timed.py make_test -- make test
    .venv/bin/python benchmarks/timed.py --compare demo demo_before demo_warm demo_cold

Run it in a fresh clone (the demo must have nothing done yet). The command's output goes to the terminal and to
``logs/timed_<name>.log``; for a Snakemake run the job count and Snakemake's own "Elapsed time" are read from it.
For a Snakemake run it also sums every job's wall time (from the log's start and "Finished jobid" stamps, whole
seconds) by rule, and it records the CPU time of the whole process tree (user + system of the command and every
process it waited for) and of the command's own process (Snakemake's scheduler), sampled each half second.
The file ``benchmarks/results/<name>.json`` (written only when the command succeeds) carries the date, machine,
versions and commit; ``benchmarks/readme_tables.py`` puts it into README.md (and docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, provenance, write_result  # noqa: E402


def snakemake_summary(output: str) -> dict:
    """Jobs done and Snakemake's elapsed seconds, from a run's output (empty when it is not a Snakemake run)."""
    out = {}
    if steps := re.findall(r"^(\d+) of (\d+) steps \(100%\) done", output, re.M):
        out["jobs"] = int(steps[-1][1])
    if elapsed := re.findall(r"^Elapsed time: (\d+):(\d\d):(\d\d(?:\.\d+)?)", output, re.M):
        h, m, s = elapsed[-1]
        out["snakemake_elapsed_s"] = round(int(h) * 3600 + int(m) * 60 + float(s), 1)
    return out


DURATION = re.compile(r"^(\d+\.\d+)s (call|setup|teardown) +(\S+)$", re.M)


def pytest_durations(output: str) -> list[dict]:
    """pytest's "slowest durations" lines (``--durations``, set in pyproject.toml), slowest first."""
    return [{"seconds": float(s), "phase": phase, "test": test} for s, phase, test in DURATION.findall(output)]


JOB_START = re.compile(
    r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]\n(?:local)?(?:rule|checkpoint) (\w+):\n(?:.*\n)*?\s+jobid: (\d+)$", re.M
)
JOB_END = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]\nFinished jobid: (\d+)", re.M)


def job_times(output: str) -> dict:
    """Every finished job's wall seconds, summed and counted by rule, from a Snakemake log (empty when none)."""
    from datetime import datetime

    def stamp(text):
        return datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")

    started = {jobid: (rule, stamp(when)) for when, rule, jobid in JOB_START.findall(output)}
    by_rule: dict[str, dict] = {}
    for when, jobid in JOB_END.findall(output):
        if jobid in started:
            rule, t0 = started[jobid]
            row = by_rule.setdefault(rule, {"rule": rule, "jobs": 0, "wall_s": 0.0})
            row["jobs"] += 1
            row["wall_s"] += (stamp(when) - t0).total_seconds()
    return dict(sorted(by_rule.items(), key=lambda kv: -kv[1]["wall_s"]))


def own_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc), None when it is gone."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


TARGETS = {"jobs_wall_s": 0.5, "cpu_s": 0.5}  # the demo's work now over before, at most
COLD_OVER_WARM, COLD_MAX_S = 1.25, 300.0  # a first run's workflow over a second one's, and in seconds


def compare(out: str, before: str, warm: str, cold: str) -> Path:
    """The first-run result: three timed runs of the demo and the targets (see the module docstring)."""
    runs = {}
    for role, name in (("before", before), ("warm", warm), ("cold", cold)):
        result = json.loads((RESULTS / f"{name}.json").read_text())
        [row] = result["rows"]
        runs[role] = {
            "role": role,
            "file": f"{name}.json",
            "commit": result["provenance"]["git_commit"],
            "date": result["provenance"]["date"],
            "machine": result["provenance"]["machine"],
            **{
                k: row.get(k)
                for k in ("wall_s", "jobs", "jobs_wall_s", "cpu_s", "command_cpu_s", "snakemake_elapsed_s", "by_rule")
            },
        }
    machines = {
        (r["machine"].get("cpu"), r["machine"].get("cores"), tuple(r["machine"].get("cpu_flags") or ()))
        for r in runs.values()
    }
    ratios = {f"{k}_over_before": runs["warm"][k] / runs["before"][k] for k in TARGETS}
    ratios["cold_over_warm"] = runs["cold"]["wall_s"] / runs["warm"]["wall_s"]
    verdicts = [
        f"{k.replace('_s', '').replace('_', ' ')}: {ratios[f'{k}_over_before']:.2f}x of before "
        f"({'met' if ratios[f'{k}_over_before'] <= t else 'NOT met'}: at most {t}x)"
        for k, t in TARGETS.items()
    ]
    verdicts.append(
        f"cold over warm: {ratios['cold_over_warm']:.2f}x "
        f"({'met' if ratios['cold_over_warm'] <= COLD_OVER_WARM else 'NOT met'}: at most {COLD_OVER_WARM}x)"
    )
    verdicts.append(
        f"cold workflow: {runs['cold']['wall_s']:.0f} s "
        f"({'met' if runs['cold']['wall_s'] <= COLD_MAX_S else 'NOT met'}: at most {COLD_MAX_S:.0f} s)"
    )
    prov = provenance(
        "benchmarks/timed.py", ["--compare", out, before, warm, cold], {"before": before, "warm": warm, "cold": cold}
    )
    return write_result(
        RESULTS / f"{out}.json",
        "timed_compare",
        prov,
        list(runs.values()),
        ratios=ratios,
        verdicts=verdicts,
        one_machine=len(machines) == 1,
    )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--compare"]:
        if len(argv) != 5:
            print(
                "usage: timed.py --compare OUT BEFORE WARM COLD (names of result files in benchmarks/results/)",
                file=sys.stderr,
            )
            return 2
        path = compare(*argv[1:])
        print("\n".join(json.loads(path.read_text())["verdicts"]) + f"\nwrote {path}")
        return 0
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s NAME -- COMMAND ...\n       %(prog)s --compare OUT BEFORE WARM COLD",
        epilog="--compare: " + " ".join(__doc__.split("\n\n")[-1].split()),
    )
    p.add_argument("name", help="result file name: benchmarks/results/<name>.json")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command to time (after --)")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command given (put it after --)")
    log = ROOT / "logs" / f"timed_{args.name}.log"
    log.parent.mkdir(exist_ok=True)
    prov = provenance("benchmarks/timed.py", argv, {"name": args.name, "command": command})
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as fh:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        own = [0.0]
        sampler = threading.Thread(target=_sample_cpu, args=(proc, own), daemon=True)
        sampler.start()
        for line in proc.stdout:
            sys.stdout.write(line)
            fh.write(line)
        code = proc.wait()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if code != 0:
        print(f"{' '.join(command)} failed (exit {code}); no result written (log: {log})", file=sys.stderr)
        return code
    output = log.read_text()
    row = {
        "name": args.name,
        "command": " ".join(command),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "command_cpu_s": round(own[0], 1),
        **snakemake_summary(output),
    }
    if slowest := pytest_durations(output):
        row["slowest_tests"] = slowest
    if rules := job_times(output):
        row["jobs_wall_s"] = round(sum(r["wall_s"] for r in rules.values()), 1)
        row["by_rule"] = list(rules.values())
    out = write_result(RESULTS / f"{args.name}.json", "timed", prov, [row])
    print(f"{args.name}: {wall:.0f} s; wrote {out}")
    return 0


def _sample_cpu(proc, own: list) -> None:
    """Keep ``own[0]`` at the CPU seconds of ``proc`` itself (not its children) until it exits."""
    while proc.poll() is None:
        if (now := own_cpu_s(proc.pid)) is not None:
            own[0] = now
        time.sleep(0.5)


if __name__ == "__main__":
    raise SystemExit(main())
