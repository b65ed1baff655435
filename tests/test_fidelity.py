"""The fidelity table (ours minus the authors' code, cellplm_finetune vs cellplm_upstream) and the provenance the
CellPLM rows carry into the tables (precision, sentences), on hand-made scores and run records whose numbers are
worked out by hand."""

import json

import numpy as np
import pandas as pd
import pytest

from cellplm.bench.report import aggregate as agg
from cellplm.bench.report.fidelity import fidelity_table, markdown_lines

PROTOCOL = {
    "max_epochs": 40,
    "patience": 40,
    "warmup_epochs": 30,
    "lr": 0.005,
    "weight_decay": 1e-7,
    "n_hvg": 3000,
    "plateau_patience": 25,
}
RELEASED = "results/cellplm/checkpoints/released__20230926_85M/model"
SENTENCES = "one per obs['batch'] value (= dataset column 'tech'; 4 sentences)"


def record(method, seed, precision="fp32", status="ok", dataset="pancreas", **protocol):
    extra = (
        {}
        if status != "ok"
        else {
            "checkpoint": RELEASED,
            "checkpoint_kind": "released",
            "precision": precision,
            "sentences": SENTENCES,
            "protocol": {**PROTOCOL, **protocol},
        }
    )
    return {
        "dataset": dataset,
        "split": "published",
        "method": method,
        "seed": seed,
        "param_set": "default",
        "status": status,
        "reason": "" if status == "ok" else "RuntimeError: out of memory",
        "device": "cuda",
        "params": {"checkpoint": RELEASED, "checkpoint_kind": "released"},
        "extra": extra,
        "implementation": method,
        "versions": {"python": "3.11"},
    }


def read(tmp_path, recs):
    paths = []
    for i, r in enumerate(recs):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(r))
    return agg.read_records(paths)


def scores(rows, dataset="pancreas"):
    """(method, seed, metric, value); value None = a run that failed."""
    return pd.DataFrame(
        [
            {
                "dataset": dataset,
                "split": "published",
                "method": m,
                "seed": seed,
                "metric": metric,
                "value": np.nan if v is None else v,
                "status": "failed" if v is None else "ok",
                "reason": "RuntimeError: out of memory" if v is None else "",
            }
            for m, seed, metric, v in rows
        ]
    )


def test_ours_minus_the_authors_code_by_hand(tmp_path):
    # ours seeds 0 1 2: 0.90 0.80 0.70; authors' seeds 0 1 3: 0.85 0.80 0.60 (seed 2 failed)
    rows = [
        ("cellplm_finetune", 0, "macro_f1", 0.90),
        ("cellplm_finetune", 1, "macro_f1", 0.80),
        ("cellplm_finetune", 2, "macro_f1", 0.70),
        ("cellplm_upstream", 0, "macro_f1", 0.85),
        ("cellplm_upstream", 1, "macro_f1", 0.80),
        ("cellplm_upstream", 2, "macro_f1", None),
        ("cellplm_upstream", 3, "macro_f1", 0.60),
        ("knn_pca", 0, "macro_f1", 0.5),
    ]
    recs = read(
        tmp_path,
        [record("cellplm_finetune", s) for s in (0, 1, 2)]
        + [record("cellplm_upstream", s) for s in (0, 1, 3)]
        + [record("cellplm_upstream", 2, status="failed")],
    )
    table = fidelity_table(scores(rows), recs)
    assert len(table) == 1
    r = table.iloc[0]
    assert (r["ours_mean"], r["ours_n_seeds"]) == (pytest.approx(0.80), 3)
    assert (r["authors_mean"], r["authors_n_seeds"]) == (pytest.approx(0.75), 3)  # (0.85 + 0.80 + 0.60) / 3
    assert r["difference_of_means"] == pytest.approx(0.05)
    assert r["ours_sd"] == pytest.approx(0.1) and r["authors_sd"] == pytest.approx(np.std([0.85, 0.8, 0.6], ddof=1))
    # paired: seeds 0 and 1 only (ours has no seed 3, the authors' seed 2 failed): +0.05 and 0.00
    assert r["n_paired"] == 2 and r["paired_mean"] == pytest.approx(0.025)
    assert r["paired_sd"] == pytest.approx(np.sqrt(2 * 0.025**2))  # sd (ddof 1) of 0.05 and 0.00: 0.0354
    assert r["paired_differences"] == "seed 0: +0.0500; seed 1: +0.0000"
    assert (r["ours_status"], r["authors_status"]) == ("ok", "failed,ok")
    assert r["like_for_like"] and r["settings"].startswith(
        "like for like: checkpoint released (20230926_85M), precision fp32, max_epochs 40, patience 40"
    )


def test_settings_that_differ_are_named(tmp_path):
    rows = [("cellplm_finetune", 0, "accuracy", 0.9), ("cellplm_upstream", 0, "accuracy", 0.8)]
    recs = read(
        tmp_path,
        [record("cellplm_finetune", 0, precision="bf16", max_epochs=2000, patience=200), record("cellplm_upstream", 0)],
    )
    r = fidelity_table(scores(rows), recs).iloc[0]
    assert not r["like_for_like"]
    assert r["settings"] == (
        "settings differ (ours vs authors'): precision bf16 vs fp32; max_epochs 2000 vs 40; patience 200 vs 40"
    )
    assert r["n_paired"] == 1 and r["paired_mean"] == pytest.approx(0.1) and np.isnan(r["paired_sd"])


def test_one_side_missing_and_the_markdown_section(tmp_path):
    assert fidelity_table(scores([("knn_pca", 0, "accuracy", 0.5)]), pd.DataFrame()).empty
    rows = [
        ("cellplm_finetune", 0, "accuracy", 0.9),
        ("cellplm_finetune", 1, "accuracy", 0.7),
        ("cellplm_upstream", 0, "accuracy", None),
        ("cellplm_finetune", 0, "macro_f1", 0.6),
        ("cellplm_upstream", 0, "macro_f1", None),
    ]
    recs = read(
        tmp_path,
        [record("cellplm_finetune", 0), record("cellplm_finetune", 1), record("cellplm_upstream", 0, status="failed")],
    )
    table = fidelity_table(scores(rows), recs)
    assert list(table["metric"]) == ["accuracy", "macro_f1"]  # the order of METRICS
    r = table.iloc[0]
    assert r["ours_mean"] == pytest.approx(0.8) and r["authors_n_seeds"] == 0 and np.isnan(r["difference_of_means"])
    assert r["n_paired"] == 0 and not r["like_for_like"]
    assert r["settings"] == "settings unknown: no successful run of the authors' code recorded them"
    md = "\n".join(
        markdown_lines(
            table,
            {"cellplm_finetune": "CellPLM (fine-tuned)", "cellplm_upstream": "CellPLM (fine-tuned, authors' code)"},
        )
    )
    assert md.startswith("\n## Fidelity: ours vs the authors' code\n")
    assert "### pancreas, split `published`" in md and "Runs not ok: failed." in md
    assert "| Accuracy (micro) | 0.800 ± 0.141 (n 2) | failed | – | – |" in md
    assert markdown_lines(table.iloc[0:0], {}) == []


def test_cellplm_rows_carry_precision_and_sentences_into_the_tables(tmp_path):
    recs = read(
        tmp_path,
        [record("cellplm_finetune", 0), record("cellplm_upstream", 0), record("cellplm_finetune", 1, precision="bf16")],
    )
    assert list(recs["precision"]) == ["fp32", "fp32", "bf16"] and (recs["sentences"] == SENTENCES).all()
    sc = agg.with_provenance(
        scores(
            [
                ("cellplm_finetune", 0, "accuracy", 0.9),
                ("cellplm_finetune", 1, "accuracy", 0.7),
                ("cellplm_upstream", 0, "accuracy", 0.8),
            ]
        ),
        recs,
    )
    summary = agg.summarise(sc).set_index("method")
    assert summary.loc["cellplm_finetune", "precision"] == "bf16; fp32"  # each seed's, never hidden
    assert summary.loc["cellplm_upstream", "sentences"] == SENTENCES
    runs = agg.runs_table(recs)
    assert list(runs.columns[4:7]) == ["checkpoint", "precision", "sentences"]
    config = {
        "run": {"param_set": "default", "seeds": [0, 1], "methods": ["cellplm_finetune", "cellplm_upstream"]},
        "splits": {"published": {"strategy": "random"}},
        "methods": {
            "cellplm_finetune": {"label": "CellPLM (fine-tuned)"},
            "cellplm_upstream": {"label": "CellPLM (fine-tuned, authors' code)"},
        },
        "cellplm": {"checkpoint": {"source": "release"}},
        "published": "config/published_scores.tsv",
    }
    md = agg.markdown(
        agg.summarise(sc[sc["seed"] == 0]),
        pd.DataFrame(),
        runs,
        pd.DataFrame(),
        config,
        pd.DataFrame(),
        fidelity=["", "## Fidelity: ours vs the authors' code"],
    )
    assert "| CellPLM (fine-tuned) [released (20230926_85M), fp32] | 0.900 |" in md
    assert "| CellPLM (fine-tuned, authors' code) [released (20230926_85M), fp32] | 0.800 |" in md
    assert "- CellPLM sentences: one per value of `obs['batch']`, the dataset's `batch_key` column" in md
    assert "how the authors grouped these datasets into sentences is not published, so this grouping is an " in md
    assert md.index("## Fidelity: ours vs the authors' code") > md.index("## Runs that did not produce predictions")
