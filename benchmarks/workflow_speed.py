#!/usr/bin/env python
"""Copy the workflow's embedding-speed rows into a benchmark result file (with date, machine and commit).

    .venv/bin/python benchmarks/workflow_speed.py results/speed/embedding.tsv      # or results/tables/speed.tsv

Run it on the machine that ran the workflow, right after the run: the provenance it records (machine, versions,
commit) is this machine's. Keeps the ``embedding_throughput`` rows (cells/s and ``speedup_vs_scgpt`` per model,
the job ``speed_embedding`` of rules/speed.smk) and writes ``benchmarks/results/embedding_speed_<cuda|cpu>.json``
atomically, with the source file's path and sha256 and whether CellPLM reached ``--target`` x scGPT's cells/s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, provenance, write_result  # noqa: E402

TARGET_VS_SCGPT = 100.0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("table", type=Path, help="results/speed/embedding.tsv or results/tables/speed.tsv of a workflow run")
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default=None,
        help="names the result file (default: cuda when the rows were measured on a CUDA device)",
    )
    p.add_argument("--target", type=float, default=TARGET_VS_SCGPT, help="CellPLM cells/s over scGPT's to call MET")
    p.add_argument(
        "--out", type=Path, default=None, help="result file (default benchmarks/results/embedding_speed_<device>.json)"
    )
    args = p.parse_args(argv)
    import pandas as pd

    from cellplm.checksum import sha256_file

    df = pd.read_csv(args.table, sep="\t")
    df = df[df["measure"] == "embedding_throughput"]
    if df.empty:
        raise SystemExit(f"{args.table}: no embedding_throughput rows")
    devices = " ".join(str(d) for d in df["device"].dropna())
    device = args.device or (
        "cuda" if any(k in devices.lower() for k in ("cuda", "nvidia", "gpu", "h100", "h200", "a100")) else "cpu"
    )
    rows = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in df.to_dict("records")]
    verdicts = []
    ours = df[(df["method"] == "cellplm") & (df["status"] == "ok")]
    if len(ours) and pd.notna(ours["speedup_vs_scgpt"].iloc[0]):
        x = float(ours["speedup_vs_scgpt"].iloc[0])
        verdicts.append(
            f"CellPLM {x:,.1f}x scGPT's cells/s (target >= {args.target:g}x): {'MET' if x >= args.target else 'MISSED'}"
        )
    else:
        verdicts.append("CellPLM against scGPT: no ratio (one of them did not run)")
    out = args.out or RESULTS / f"embedding_speed_{device}.json"
    write_result(
        out,
        "embedding_speed",
        provenance("benchmarks/workflow_speed.py", argv, vars(args)),
        rows,
        source={"path": str(args.table), "sha256": sha256_file(args.table)},
        verdicts=verdicts,
    )
    print("\n".join(verdicts))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
