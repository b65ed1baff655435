"""benchmarks/scale.py end to end on a tiny size: generation, preprocess, split, embed and its result file."""

import json
import subprocess
import sys

import pandas as pd

from conftest import ROOT

TOOL = ROOT / "benchmarks" / "scale.py"


def test_scale_benchmark_tiny(tmp_path):
    out = tmp_path / "bench" / "scale.json"
    cmd = [
        sys.executable,
        str(TOOL),
        "--cells",
        "1000",
        "2000",
        "--genes",
        "1500",
        "--counts-per-cell",
        "1000",
        "--shape",
        "tiny",
        "--threads",
        "1",
        "--workdir",
        str(tmp_path / "work"),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    result = json.loads(out.read_text())
    assert result["benchmark"] == "scale" and result["complete"] is True
    prov = result["provenance"]
    for key in ("date", "machine", "versions", "git_commit", "command", "options"):
        assert prov[key], key
    assert {"cpu", "cores", "ram_gib", "gpu", "os"} <= set(prov["machine"]) and prov["versions"]["python"]
    assert "--cells 1000 2000" in prov["command"] and prov["options"]["genes"] == 1500
    assert not list(out.parent.glob(".*partial*"))  # written atomically, no temporary left
    df = pd.DataFrame(result["rows"])
    for col in (
        "n_cells",
        "n_genes",
        "nnz",
        "step",
        "status",
        "wall_s",
        "peak_rss_gib",
        "peak_growth",
        "wall_growth",
        "cells_per_s",
        "device",
        "threads",
        "weights",
        "date",
    ):
        assert col in df.columns, col
    assert sorted(zip(df["n_cells"], df["step"])) == sorted(
        (n, s) for n in (1000, 2000) for s in ("preprocess", "split", "embed")
    )
    assert (df["status"] == "ok").all()
    assert (df["n_genes"] == 1500).all() and (df["nnz"] > 0).all()
    assert (df["peak_rss_gib"] > 0).all() and (df["wall_s"] > 0).all()
    for step, g in df.groupby("step"):
        g = g.set_index("n_cells")
        assert g.loc[1000, "peak_growth"] == 1.0
        expected = g.loc[2000, "peak_rss_gib"] / g.loc[1000, "peak_rss_gib"]
        assert abs(g.loc[2000, "peak_growth"] - expected) < 0.01, step
    emb = df[df["step"] == "embed"]
    assert (emb["cells_per_s"] > 0).all() and emb["weights"].str.contains("random weights, tiny shape").all()
    assert (df["nnz"][df["n_cells"] == 2000] > df["nnz"][df["n_cells"] == 1000].max()).all()  # nested datasets
    assert "| embed | 2,000 |" in proc.stdout and "peak growth" in proc.stdout  # the markdown table printed
    assert not (tmp_path / "work" / "n1000").exists()  # intermediates deleted without --keep
