"""Scores of one prediction against its solution.

Definitions, stated because the published table is ambiguous. Four come from scikit-learn:

- ``accuracy``: micro accuracy, the share of test cells labelled correctly.
- ``balanced_accuracy``: mean per-class recall over the cell types present in the solution only
  (``sklearn.metrics.balanced_accuracy_score``).
- ``macro_f1``: unweighted mean F1 over the union of true and predicted labels (a label never predicted has
  F1 0; a predicted label absent from the truth has F1 0).
- ``macro_precision``: unweighted mean precision over the same union (precision 0 for labels never predicted).

Two more are readings of the published table's "accuracy" (``accuracy`` is the third; see
:mod:`cellplm.bench.report.readings`), computed with torchmetrics itself (its functional
``multiclass_accuracy``, default ``average="macro"``), labels encoded over the sorted union of true and predicted
labels as scDiff's ``evaluate_annotation`` does:

- ``tm_macro_accuracy``: ``multiclass_accuracy(preds, target)``, the call in CellPLM's
  ``CellPLM/utils/eval.py::annotation_eval``. Mean recall over every class with tp + fp + fn > 0, so a class that
  is predicted but absent from the truth counts as recall 0 (``balanced_accuracy`` leaves it out and can only be
  higher: truth A A B B, prediction A D B B gives 0.50 here, 0.75 there).
- ``tm_macro_accuracy_swapped``: ``multiclass_accuracy(target, preds)``, the argument order of scDiff's
  ``scdiff/evaluate.py::evaluate_annotation`` (``multiclass_accuracy(true, pred, num_classes)``): per class it
  divides by the predicted count, so it is a macro precision.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    precision_score,
)

from ..keys import LABEL, PREDICTION

METRICS = (
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "macro_precision",
    "tm_macro_accuracy",
    "tm_macro_accuracy_swapped",
)
METRIC_LABELS = {
    "accuracy": "Accuracy (micro)",
    "balanced_accuracy": "Balanced accuracy (macro recall, classes in the truth)",
    "macro_f1": "Macro F1",
    "macro_precision": "Macro precision",
    "tm_macro_accuracy": "torchmetrics macro accuracy (CellPLM's call)",
    "tm_macro_accuracy_swapped": "torchmetrics macro accuracy, arguments swapped (scDiff's call = macro precision)",
}


def _labels(y_true, y_pred) -> np.ndarray:
    return np.array(sorted(set(map(str, y_true)) | set(map(str, y_pred))), dtype=object)


def score(y_true, y_pred) -> dict[str, float]:
    y_true = np.asarray(y_true, dtype=str)
    y_pred = np.asarray(y_pred, dtype=str)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.size} true labels but {y_pred.size} predictions")
    labels = _labels(y_true, y_pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # y_pred classes absent from y_true are excluded by design
        return {
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
            "macro_precision": float(precision_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
            **torchmetrics_readings(y_true, y_pred, labels),
        }


def torchmetrics_readings(y_true, y_pred, labels=None) -> dict[str, float]:
    """The published table's two readings of "accuracy", computed by torchmetrics (see the module docstring)."""
    import torch
    from torchmetrics.functional.classification import multiclass_accuracy

    labels = _labels(y_true, y_pred) if labels is None else labels
    code = {label: i for i, label in enumerate(labels)}
    target = torch.tensor([code[str(v)] for v in y_true], dtype=torch.long)
    preds = torch.tensor([code[str(v)] for v in y_pred], dtype=torch.long)
    n = max(len(labels), 2)  # torchmetrics needs two classes; an unused one has tp + fp + fn = 0 and weight 0
    return {
        "tm_macro_accuracy": float(multiclass_accuracy(preds, target, num_classes=n)),
        "tm_macro_accuracy_swapped": float(multiclass_accuracy(target, preds, num_classes=n)),
    }


def per_class(y_true, y_pred) -> pd.DataFrame:
    y_true = np.asarray(y_true, dtype=str)
    y_pred = np.asarray(y_pred, dtype=str)
    labels = _labels(y_true, y_pred)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return pd.DataFrame({"cell_type": labels, "precision": p, "recall": r, "f1": f, "support": s})


def confusion(y_true, y_pred) -> pd.DataFrame:
    """Counts; rows are true labels, columns predicted labels (union of both)."""
    y_true = np.asarray(y_true, dtype=str)
    y_pred = np.asarray(y_pred, dtype=str)
    labels = _labels(y_true, y_pred)
    m = confusion_matrix(y_true, y_pred, labels=labels)
    return pd.DataFrame(m, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted"))


def evaluate(solution, prediction, ids: dict) -> dict[str, pd.DataFrame]:
    """Score a prediction AnnData against a solution AnnData. A run that did not succeed gives NA rows."""
    status = str(prediction.uns.get("status", "ok"))
    reason = str(prediction.uns.get("reason", ""))
    base = {k: ids[k] for k in ("dataset", "split", "method", "seed")}
    if status != "ok":
        scores = pd.DataFrame(
            [{**base, "metric": m, "value": np.nan, "status": status, "reason": reason} for m in METRICS]
        )
        return {"scores": scores, "per_class": pd.DataFrame(), "confusion": pd.DataFrame()}
    truth = solution.obs[LABEL].astype(str)
    missing = truth.index.difference(prediction.obs_names)
    if len(missing):
        raise ValueError(f"prediction lacks {len(missing)} of {len(truth)} test cells (e.g. {missing[0]})")
    pred = prediction.obs[PREDICTION].reindex(truth.index).astype(str)
    values = score(truth.to_numpy(), pred.to_numpy())
    scores = pd.DataFrame([{**base, "metric": m, "value": v, "status": "ok", "reason": ""} for m, v in values.items()])
    pc = per_class(truth, pred)
    for k, v in reversed(base.items()):
        pc.insert(0, k, v)
    return {"scores": scores, "per_class": pc, "confusion": confusion(truth, pred)}
