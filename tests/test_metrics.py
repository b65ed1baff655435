"""Metrics against values computed by hand."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellplm.bench.metrics import confusion, evaluate, per_class, score

# truth: A A A A B B C ; pred: A A A B B C C
TRUE = ["A", "A", "A", "A", "B", "B", "C"]
PRED = ["A", "A", "A", "B", "B", "C", "C"]


def test_scores_by_hand():
    s = score(TRUE, PRED)
    assert s["accuracy"] == pytest.approx(5 / 7)
    # recalls: A 3/4, B 1/2, C 1/1
    assert s["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    # precisions: A 3/3, B 1/2, C 1/2
    assert s["macro_precision"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    f1 = [2 * 1 * 0.75 / 1.75, 0.5, 2 * 0.5 * 1 / 1.5]
    assert s["macro_f1"] == pytest.approx(np.mean(f1))


def test_predicted_label_absent_from_truth():
    # "D" is predicted but never true: it counts in macro F1/precision (0), not in balanced accuracy
    s = score(["A", "A", "B", "B"], ["A", "D", "B", "B"])
    assert s["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    assert s["macro_precision"] == pytest.approx((1 + 1 + 0) / 3)
    assert s["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_torchmetrics_readings_equal_torchmetrics_both_ways():
    """Our two readings are torchmetrics' multiclass_accuracy called as CellPLM and as scDiff call it."""
    import torch
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_precision

    # the example: D is predicted but absent from the truth
    s = score(["A", "A", "B", "B"], ["A", "D", "B", "B"])
    assert s["tm_macro_accuracy"] == pytest.approx(0.5)  # recalls A 1/2, B 1, D 0 (tp + fp > 0) -> 1.5 / 3
    assert s["balanced_accuracy"] == pytest.approx(0.75)  # sklearn leaves D out: can only be higher
    assert s["tm_macro_accuracy_swapped"] == pytest.approx((1 + 1 + 0) / 3)  # precisions A 1, B 1, D 0
    # by hand on TRUE/PRED, and against torchmetrics on an integer encoding of our own
    code = {"A": 0, "B": 1, "C": 2}
    t = torch.tensor([code[x] for x in TRUE])
    p = torch.tensor([code[x] for x in PRED])
    s = score(TRUE, PRED)
    assert s["tm_macro_accuracy"] == pytest.approx(float(multiclass_accuracy(p, t, num_classes=3)))
    assert s["tm_macro_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    assert s["tm_macro_accuracy_swapped"] == pytest.approx(float(multiclass_accuracy(t, p, num_classes=3)))
    assert s["tm_macro_accuracy_swapped"] == pytest.approx(float(multiclass_precision(p, t, num_classes=3)))
    assert s["tm_macro_accuracy_swapped"] == pytest.approx(
        s["macro_precision"]
    )  # scDiff's "accuracy" = macro precision
    # a larger random case: the readings do not depend on unused class slots, and match the sklearn twins
    rng = np.random.default_rng(0)
    truth = rng.choice(list("ABCDE"), size=300)
    pred = np.where(rng.random(300) < 0.7, truth, rng.choice(list("ABCDEFG"), size=300))
    s = score(truth, pred)
    assert s["tm_macro_accuracy"] < s["balanced_accuracy"]  # F and G are predicted but never true
    assert s["tm_macro_accuracy_swapped"] == pytest.approx(s["macro_precision"])
    # one class only: still defined (torchmetrics needs num_classes >= 2; the spare class has no weight)
    assert score(["A", "A"], ["A", "A"])["tm_macro_accuracy"] == pytest.approx(1.0)


def test_per_class_and_confusion():
    pc = per_class(TRUE, PRED).set_index("cell_type")
    assert pc.loc["A", "recall"] == pytest.approx(0.75) and pc.loc["C", "precision"] == pytest.approx(0.5)
    assert pc["support"].tolist() == [4, 2, 1]
    cm = confusion(TRUE, PRED)
    assert cm.loc["A", "B"] == 1 and cm.loc["B", "C"] == 1 and cm.to_numpy().trace() == 5


def _files(pred, status="ok"):
    idx = [f"c{i}" for i in range(len(TRUE))]
    sol = ad.AnnData(obs=pd.DataFrame({"cell_type": TRUE}, index=idx))
    p = ad.AnnData(obs=pd.DataFrame({"label_pred": pred}, index=idx[::-1]))  # order must not matter
    p.uns["status"] = status
    return sol, p


def test_evaluate_aligns_by_cell_name_and_records_failures():
    ids = {"dataset": "d", "split": "s", "method": "m", "seed": 0}
    sol, p = _files(PRED[::-1])
    out = evaluate(sol, p, ids)
    assert out["scores"].set_index("metric").loc["accuracy", "value"] == pytest.approx(5 / 7)
    sol, p = _files([None] * 7, status="failed")
    p.uns["reason"] = "RuntimeError: boom"
    out = evaluate(sol, p, ids)
    assert out["scores"]["value"].isna().all() and set(out["scores"]["status"]) == {"failed"}
    assert out["scores"]["reason"].iloc[0] == "RuntimeError: boom"


def test_missing_test_cells_are_an_error():
    sol, p = _files(PRED[::-1])
    p = p[1:].copy()
    with pytest.raises(ValueError, match="prediction lacks 1 of 7 test cells"):
        evaluate(sol, p, {"dataset": "d", "split": "s", "method": "m", "seed": 0})
