"""Scores of one prediction against its solution.

Definitions (all from scikit-learn, stated because the published table is ambiguous):

- ``accuracy``: micro accuracy, the share of test cells labelled correctly.
- ``balanced_accuracy``: mean per-class recall over the cell types present in the solution. This is what the
  CellPLM README table calls "accuracy" (torchmetrics ``multiclass_accuracy`` defaults to ``average="macro"``).
- ``macro_f1``: unweighted mean F1 over the union of true and predicted labels (a label never predicted has
  F1 0; a predicted label absent from the truth has F1 0).
- ``macro_precision``: unweighted mean precision over the same union (precision 0 for labels never predicted).
  scDiff's evaluation swaps predictions and truth, so its "accuracy" is effectively this number.
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

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_precision")
METRIC_LABELS = {
    "accuracy": "Accuracy (micro)",
    "balanced_accuracy": "Balanced accuracy (macro recall)",
    "macro_f1": "Macro F1",
    "macro_precision": "Macro precision",
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
        scores = pd.DataFrame([{**base, "metric": m, "value": np.nan, "status": status, "reason": reason}
                               for m in METRICS])
        return {"scores": scores, "per_class": pd.DataFrame(), "confusion": pd.DataFrame()}
    truth = solution.obs["cell_type"].astype(str)
    missing = truth.index.difference(prediction.obs_names)
    if len(missing):
        raise ValueError(f"prediction lacks {len(missing)} of {len(truth)} test cells (e.g. {missing[0]})")
    pred = prediction.obs["label_pred"].reindex(truth.index).astype(str)
    values = score(truth.to_numpy(), pred.to_numpy())
    scores = pd.DataFrame([{**base, "metric": m, "value": v, "status": "ok", "reason": ""} for m, v in values.items()])
    pc = per_class(truth, pred)
    for k, v in reversed(base.items()):
        pc.insert(0, k, v)
    return {"scores": scores, "per_class": pc, "confusion": confusion(truth, pred)}
