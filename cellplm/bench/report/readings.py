"""The published table's "accuracy" and its candidate readings: their names, the tolerance beyond which our
readings disagree, the one wording that explains them (benchmark.md and the HTML report's landing page both use
:func:`readings_text`), and the check of a published scores table's reading columns.

No script for the published table exists, so which computation its "accuracy" is can only be inferred from code:

- ``tm_macro_accuracy``: CellPLM's ``CellPLM/utils/eval.py::annotation_eval`` calls torchmetrics
  ``multiclass_accuracy(pred, true)`` (default macro): macro recall.
- ``tm_macro_accuracy_swapped``: scDiff's ``scdiff/evaluate.py::evaluate_annotation`` calls
  ``multiclass_accuracy(true, pred)``: macro precision.
- ``accuracy``: micro accuracy. DANCE scores its annotation methods (SingleCellNet, ACTINN, CellTypist among them)
  with ``acc`` by default (``dance/modules/base.py``: ``BaseClassificationMethod._DEFAULT_METRIC``;
  ``dance/utils/metrics.py::acc``: the share of cells whose predicted label is a true one), and scGPT's
  (``scgpt/trainer.py::test``) and Geneformer's (``examples/cell_classification.ipynb``) own fine-tuning code report
  scikit-learn's ``accuracy_score``.

Each is one of our metrics (:mod:`cellplm.bench.metrics`), so every published row can be shown beside our number
under each reading. Standard library only: the Snakefile imports it (through :mod:`.landing`) at start-up.
"""

from __future__ import annotations

import re

from ..errors import InputError

READINGS = ("tm_macro_accuracy", "tm_macro_accuracy_swapped", "accuracy")  # CellPLM's call, scDiff's, micro
READING_SHORT = {
    "tm_macro_accuracy": "macro recall (CellPLM's call)",
    "tm_macro_accuracy_swapped": "macro precision (scDiff's call)",
    "accuracy": "micro accuracy (DANCE's acc)",
}
READING_TOLERANCE = 0.005  # our readings further apart than this (max - min): the row is "reading uncertain"
PUBLISHED_COLUMNS = ("method", "dataset", "value", "std", "reading", "plausible_readings", "reading_basis", "source")


def readings_text(published_path: str) -> str:
    """What the published "accuracy" may be and how the comparison treats that, in Markdown inline markup
    (``rst`` turns it into reStructuredText): the one wording of benchmark.md and the report's landing page."""
    return (
        'The published table\'s "accuracy" comes with no script, and three computations are plausible for it, so'
        " every published row is shown beside our number under each: `tm_macro_accuracy` (torchmetrics"
        " `multiclass_accuracy(preds, target)`, macro recall, as CellPLM's `annotation_eval` calls it),"
        " `tm_macro_accuracy_swapped` (`multiclass_accuracy(target, preds)`, macro precision, the argument order of"
        " scDiff's `evaluate_annotation`) and `accuracy` (micro accuracy: the default `acc` score of DANCE, whose"
        " annotation methods include SingleCellNet, ACTINN and CellTypist, and what scGPT's and Geneformer's own"
        " fine-tuning code reports). The difference (ours minus published) is the headline under one reading only,"
        f" the one the evidence favours (column `reading` of `{published_path}`; `plausible_readings` and"
        " `reading_basis` say which others are possible and why). Where our three numbers differ by more than"
        f" {READING_TOLERANCE}, the row is flagged *reading uncertain*: the published value cannot be matched to one"
        " reading with confidence, and gaps between methods no larger than that spread say little."
    )


def rst(markdown: str) -> str:
    """Markdown inline code (`x`) as reStructuredText inline literals (``x``); emphasis is the same in both."""
    return re.sub(r"`([^`]+)`", r"``\1``", markdown)


def split_readings(value) -> list[str]:
    """``plausible_readings`` ("a;b") as a list."""
    return [r.strip() for r in str(value).split(";") if r.strip()] if isinstance(value, str) else []


def check_published(table, path):
    """``table`` (a published scores table read from ``path``) if every row names a known favoured ``reading``
    that is among its known ``plausible_readings``; otherwise an :class:`InputError` naming the file and the row."""
    missing = [c for c in PUBLISHED_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(
            path,
            f"missing column(s) {', '.join(missing)} (a published scores table has {', '.join(PUBLISHED_COLUMNS)})",
        )
    known = ", ".join(READINGS)
    for _, row in table.iterrows():
        where = f"{row['method']} / {row['dataset']}"
        plausible = split_readings(row["plausible_readings"])
        if not plausible:
            raise InputError(path, f"{where}: plausible_readings is empty (one or more of {known}, separated by ';')")
        for name in plausible + [row["reading"]]:
            if name not in READINGS:
                raise InputError(path, f"{where}: unknown reading {name!r} (known readings: {known})")
        if row["reading"] not in plausible:
            raise InputError(
                path,
                f"{where}: the favoured reading {row['reading']!r} is not among its "
                f"plausible_readings {row['plausible_readings']!r}",
            )
    return table
