#!/usr/bin/env python
"""Time one command (the demo's workflow, the test suite) and write its wall time to a benchmark result file.

    .venv/bin/python benchmarks/timed.py demo -- .venv/bin/snakemake --cores 2 --configfile config/demo.yaml
    .venv/bin/python benchmarks/timed.py make_test -- make test

Run it in a fresh clone (the demo must have nothing done yet). The command's output goes to the terminal and to
``logs/timed_<name>.log``; for a Snakemake run the job count and Snakemake's own "Elapsed time" are read from it.
The file ``benchmarks/results/<name>.json`` (written only when the command succeeds) carries the date, machine,
versions and commit; ``benchmarks/readme_tables.py`` puts it into the README.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
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


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], usage="%(prog)s NAME -- COMMAND ...")
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
    with open(log, "w") as fh:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            sys.stdout.write(line)
            fh.write(line)
        code = proc.wait()
    wall = time.perf_counter() - t0
    if code != 0:
        print(f"{' '.join(command)} failed (exit {code}); no result written (log: {log})", file=sys.stderr)
        return code
    row = {
        "name": args.name,
        "command": " ".join(command),
        "wall_s": round(wall, 1),
        **snakemake_summary(log.read_text()),
    }
    out = write_result(RESULTS / f"{args.name}.json", "timed", prov, [row])
    print(f"{args.name}: {wall:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
