"""`make clean-demo`: delete what `make demo` wrote, and nothing else.

The demo shares results/, logs/ and resources/ with a full run (whose downloads alone are many GB), so nothing is
removed by folder: every file that a job of the demo writes (outputs, logs, benchmark files), as
`snakemake -n --forceall --configfile config/demo.yaml` lists them, the pretraining's training checkpoint beside
the CellPLM it pretrained (not a declared output) and the HTML report of `make demo`, then the folders this left
empty. The environments' build logs, a full run's files and .snakemake/ (conda environments of
--use-conda) stay.

Usage (from the workflow root): python tools/clean_demo.py [--dry-run]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

DEMO_CONFIG = "config/demo.yaml"
REPORT = "results/report.html"  # written by `make demo` with --report, not by a job
FOLDERS = ("results", "logs", "resources")  # cellplm.bench.workflow.OUTPUT_FOLDERS: where jobs write
JOB_FILES = re.compile(r"^    (?:output|log|benchmark): (.+)$", re.M)
# The training checkpoint the pretraining leaves beside model.best.ckpt: cellplm.pretrain.checkpoints.LAST (not
# imported, it imports torch); the cellplm_pretrain rule removes the same two files before a fresh run.
PRETRAINED_WEIGHTS = "model.best.ckpt"
TRAINING_CHECKPOINT = ("last.config.json", "last.best.ckpt")


def demo_files(snakemake: list[str]) -> list[Path]:
    """Every file a job of the demo writes (existing or not), from the dry run of all its jobs."""
    out = subprocess.run([*snakemake, "-n", "--forceall", "--configfile", DEMO_CONFIG], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"clean-demo: `snakemake -n --configfile {DEMO_CONFIG}` failed:\n{out.stderr[-2000:]}")
    files = {Path(f) for m in JOB_FILES.finditer(out.stdout) for f in m.group(1).split(", ")}
    if not files:
        sys.exit(f"clean-demo: `snakemake -n --forceall --configfile {DEMO_CONFIG}` listed no job files")
    files |= {f.parent / name for f in files if f.name == PRETRAINED_WEIGHTS for name in TRAINING_CHECKPOINT}
    return sorted(files | {Path(REPORT)})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="list the files that would be deleted")
    parser.add_argument(
        "--snakemake",
        default=f"{sys.executable} -m snakemake",
        help="command that runs snakemake (default: this interpreter's)",
    )
    args = parser.parse_args(argv)
    removed = [f for f in demo_files(args.snakemake.split()) if f.is_file() or f.is_symlink()]
    for f in removed:
        if args.dry_run:
            print(f)
        else:
            f.unlink()
    if not args.dry_run:
        for top in FOLDERS:  # deepest first, so that a folder emptied of empty folders goes too
            for folder, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count(os.sep)):
                if not os.listdir(folder):
                    os.rmdir(folder)
    print(f"clean-demo: {'would delete' if args.dry_run else 'deleted'} {len(removed)} files of the demo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
