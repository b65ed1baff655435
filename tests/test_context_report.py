"""The tissue-context track's tables and figures (cellplm.bench.report.context, context_plots) on hand-made inputs."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellplm.bench.report import context, context_plots

TRUTH = ["a", "a", "b", "b", "c", "c", "c", "a"]


def _run(tmp_path, seed, trained, variants, status="ok"):
    obs = pd.DataFrame(
        {"label_pred": trained, **{f"label_pred_{k}": v for k, v in variants.items()}},
        index=[f"c{i}" for i in range(len(trained))],
    )
    pred = tmp_path / f"pred{seed}.h5ad"
    ad.AnnData(obs=obs).write_h5ad(pred)
    about = {
        "single": {
            "policy": "single",
            "kind": "single",
            "k": 1,
            "seed": None,
            "with_training_cells": False,
            "seconds": 0.5,
            "status": "ok",
        },
        "random16": {
            "policy": "random:16",
            "kind": "random",
            "k": 16,
            "seed": seed,
            "with_training_cells": True,
            "seconds": 0.2,
            "status": "ok",
        },
        "spatial16": {"policy": "spatial:16", "status": "not_applicable", "reason": "no coordinates"},
    }
    record = {
        "dataset": "toy",
        "split": "published",
        "method": "cellplm_finetune",
        "seed": seed,
        "status": status,
        "reason": "" if status == "ok" else "boom",
        "predict_s": 0.1,
        "extra": {"context_predictions": {k: about[k] for k in [*variants, "spatial16"]}},
    }
    return pred, record


@pytest.fixture
def solution(tmp_path):
    path = tmp_path / "solution.h5ad"
    ad.AnnData(obs=pd.DataFrame({"cell_type": TRUTH, "batch": "b0"}, index=[f"c{i}" for i in range(8)])).write_h5ad(
        path
    )
    return path


def test_stability_counts_changed_labels_by_hand(tmp_path, solution):
    trained = ["a", "a", "b", "b", "c", "c", "c", "b"]  # 7 of 8 right
    single = ["a", "b", "b", "b", "c", "a", "c", "b"]  # differs from trained at cells 1 and 5
    random16 = list(trained)
    pred, record = _run(tmp_path, 0, trained, {"single": single, "random16": random16})
    rows = context.stability_rows(pred, solution, record).set_index("policy")
    assert list(rows.index) == ["as trained", "single", "random:16", "spatial:16"]
    assert rows.loc["as trained", "changed"] == 0 and rows.loc["random:16", "changed"] == 0
    assert rows.loc["single", "changed"] == pytest.approx(2 / 8)
    assert rows.loc["as trained", "accuracy"] == pytest.approx(7 / 8)
    assert rows.loc["single", "accuracy"] == pytest.approx(5 / 8)
    assert rows.loc["single", "with_training_cells"] == False  # noqa: E712 - a stored False, not a missing value
    assert rows.loc["spatial:16", "status"] == "not_applicable" and rows.loc["spatial:16", "reason"] == "no coordinates"
    # macro-F1 by hand for "as trained": a 2/2 right + 0 extra -> P 1 R 2/3; b P 2/3 R 1; c P 1 R 1
    f1 = np.mean([2 * 1 * (2 / 3) / (1 + 2 / 3), 2 * (2 / 3) * 1 / (2 / 3 + 1), 1.0])
    assert rows.loc["as trained", "macro_f1"] == pytest.approx(f1)


def test_stability_summary_over_seeds_and_failed_runs(tmp_path, solution):
    trained = ["a", "a", "b", "b", "c", "c", "c", "a"]
    tables = []
    for seed, flips in ((0, 1), (1, 3)):
        single = list(trained)
        for i in range(flips):
            single[i] = "c"
        pred, record = _run(tmp_path, seed, trained, {"single": single})
        tables.append(context.stability_rows(pred, solution, record))
    failed_pred, failed = _run(tmp_path, 2, trained, {"single": trained}, status="failed")
    tables.append(context.stability_rows(failed_pred, solution, failed))
    table = pd.concat(tables, ignore_index=True)
    assert (table[table["seed"] == 2]["status"] == "failed").all()
    summary = context.stability_summary(table).set_index("policy")
    assert summary.loc["single", "changed_mean"] == pytest.approx((1 / 8 + 3 / 8) / 2)
    assert summary.loc["single", "changed_std"] == pytest.approx(np.std([1 / 8, 3 / 8], ddof=1))
    assert summary.loc["single", "n_seeds"] == 2  # the failed run is not averaged in
    lines = "\n".join(context.markdown_lines(pd.DataFrame(columns=context.CURVE_COLUMNS), table, {}))
    assert "| published | cellplm_finetune | single | 0.748 ± 0.194 | 0.750 ± 0.177 | 0.250 ± 0.177 | 2 |" in lines
    assert "seed 2, as trained: failed (boom)" in lines
    context_plots.stability_plot(table, {}, tmp_path / "stability.png")
    assert (tmp_path / "stability.png").stat().st_size > 5000


def _record(embedding, policy, kind, k, mean_cells, status="ok", reason=""):
    return {
        "dataset": "toy",
        "embedding": embedding,
        "status": status,
        "reason": reason,
        "params": {"sentences": policy},
        "extra": {}
        if status != "ok"
        else {
            "n_sentences": 600 / mean_cells,
            "precision": "fp32",
            "sentence_policy": {
                "policy": policy,
                "kind": kind,
                "k": k,
                "seed": 0 if kind == "random" else None,
                "mean_cells": mean_cells,
            },
        },
    }


def test_context_curve_joins_scores_policies_and_knn_rows(tmp_path):
    records = [
        _record("cellplm", "batch", "batch", None, 300.0),
        _record("cellplm_single", "single", "single", 1, 1.0),
        _record("cellplm_random16", "random:16", "random", 16, 15.8),
        _record("cellplm_spatial16", "spatial:16", "spatial", 16, None, "not_applicable", "no obsm['spatial']"),
        {"dataset": "toy", "embedding": "pca", "status": "ok", "extra": {}},  # not a policy row
    ]
    zs = []
    for emb, total in (("cellplm", 0.6), ("cellplm_single", 0.4), ("cellplm_random16", 0.5), ("pca", 0.55)):
        for metric, value in (("bio_conservation", total + 0.1), ("total", total), ("isolated_labels", 0.9)):
            zs.append(
                {
                    "dataset": "toy",
                    "embedding": emb,
                    "metric": metric,
                    "value": value,
                    "status": "ok",
                    "reason": "",
                    "checkpoint": "tiny",
                    "device": "cpu",
                    "cells": "all 600 cells",
                    "embed_s": 1.0,
                    "cells_per_s": 600.0,
                }
            )
    zs.append(
        {
            "dataset": "toy",
            "embedding": "cellplm_spatial16",
            "metric": "total",
            "value": np.nan,
            "status": "not_applicable",
            "reason": "no obsm['spatial']",
            "checkpoint": "",
            "device": "",
            "cells": "",
            "embed_s": np.nan,
            "cells_per_s": np.nan,
        }
    )
    summary = pd.DataFrame(
        {
            "dataset": "toy",
            "method": ["cellplm_zeroshot", "cellplm_zeroshot", "pca_zeroshot"],
            "split": ["published", "batch_holdout", "published"],
            "metric": "macro_f1",
            "mean": [0.8, 0.6, 0.9],
        }
    )
    curve = context.context_curve(pd.DataFrame(zs), records, summary)
    assert set(curve["embedding"]) == {"cellplm", "cellplm_single", "cellplm_random16", "cellplm_spatial16"}
    assert list(curve.drop_duplicates("embedding")["policy"])[:3] == ["single", "random:16", "batch"]  # by size
    knn = curve[curve["metric"] == "knn_macro_f1"].set_index("embedding")
    assert knn.loc["cellplm", "value"] == pytest.approx(0.7)  # mean of its two splits
    assert np.isnan(knn.loc["cellplm_single", "value"]) and knn.loc["cellplm_single", "reason"] == "no kNN row"
    assert knn.loc["cellplm_single", "status"] == "missing"
    assert "isolated_labels" not in set(curve["metric"])
    spatial = curve[curve["embedding"] == "cellplm_spatial16"]
    assert (spatial["status"] == "not_applicable").all() and "obsm" in spatial["reason"].iloc[0]
    text = "\n".join(context.markdown_lines(curve, pd.DataFrame(columns=context.STABILITY_COLUMNS), {}, "Demo."))
    assert "| **batch** | 300 | 0.70 | – | 0.60 | 0.70 |" in text
    assert "| single | 1 | 0.50 | – | 0.40 |" in text
    assert "- spatial:16: not_applicable (no obsm['spatial'])" in text and "Demo." in text
    cost = "\n".join(context.cost_lines(curve))
    assert "### Cost of context" in cost and "| toy | single | 1 | 1.00 | 600 | cpu | fp32 |" in cost
    assert "spatial:16" not in cost  # a policy that did not run has no cost
    context_plots.curve_plot(curve, tmp_path / "curve.png")
    context_plots.cost_plot(curve, tmp_path / "cost.png")
    assert min((tmp_path / f).stat().st_size for f in ("curve.png", "cost.png")) > 5000
