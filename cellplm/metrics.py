"""Macro-F1 as the models' training loops use it to pick their best epoch (scikit-learn, imported when called)."""

from __future__ import annotations


def macro_f1(y_true, y_pred) -> float:
    """Macro-F1 over the classes that occur in the labels or the predictions, as upstream's torchmetrics
    ``multiclass_f1_score(num_classes=C)`` (a class with no true and no predicted cell is left out of the mean,
    not counted as 0; upstream ``CellPLM/utils/eval.py::annotation_eval``)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))
