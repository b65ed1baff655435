"""The method contract and the harness that runs one method on one split and records the run.

A method is a scikit-learn-style annotator: ``fit(train)`` on the labelled training AnnData (raw counts in
``X``, ``obs['cell_type']``, ``obs['batch']``, ``obs['is_validation']``), then ``predict(test)`` returning one
label per test cell. Test labels never reach a method; only control methods that declare
``needs_solution = True`` (the true-labels control) receive the solution. Transductive methods
(``transductive = True``) also receive the unlabelled test cells in ``fit``.

:func:`run` wraps fit and predict with timers, peak-memory tracking and seeding, and always writes a
prediction file and a run record. A method that raises :class:`~cellplm.bench.errors.NotApplicable` is
recorded as ``not_applicable``; any other exception as ``failed`` (or re-raised with ``on_error="raise"``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd

from ...keys import PREDICTION
from ...memory import reset_peak_rss
from ..harness import Record, finish, instantiate, outcome, versions
from ..io import read_h5ad, write_h5ad, write_json
from ..registry import Parameterised
from . import REGISTRY


class Annotator(Parameterised):
    """Base class of all methods. Subclasses implement fit/predict; what describes them (label, implementation,
    control or not, default params) is the ``method.yaml`` beside their module (:class:`Parameterised`)."""

    registry = REGISTRY
    needs_solution: bool = False  # control methods only
    transductive: bool = False  # fit also sees the (unlabelled) test cells, as scANVI and CellPLM do

    def fit(
        self, train: ad.AnnData, solution: ad.AnnData | None = None, unlabelled: ad.AnnData | None = None
    ) -> "Annotator":
        raise NotImplementedError

    def predict(self, test: ad.AnnData) -> np.ndarray:
        raise NotImplementedError

    def predict_variants(self, test: ad.AnnData) -> dict[str, np.ndarray]:
        """Labels of the test cells from the same fitted model under other settings, by name (e.g. CellPLM's
        sentence policies: the tissue-context track); written beside the prediction as ``obs['label_pred_<name>']``.
        None by default."""
        return {}


def variant_column(name: str) -> str:
    """The prediction file's column of a variant prediction (:meth:`Annotator.predict_variants`)."""
    return f"{PREDICTION}_{name}"


@dataclass
class RunIds:
    dataset: str
    split: str
    method: str
    seed: int
    param_set: str = "default"


@dataclass
class RunRecord(Record):
    fit_s: float | None = None
    predict_s: float | None = None
    n_train: int | None = None
    n_test: int | None = None
    is_control: bool = False


def run(
    method,
    ids: RunIds,
    train_path,
    test_path,
    prediction_path,
    record_path,
    params: dict | None = None,
    solution_path=None,
    on_error: str = "record",
    log=print,
) -> RunRecord:
    """Fit and predict one method on one split; always write ``prediction_path`` and ``record_path``.

    ``method`` is an Annotator class or a method id (its folder); a method that this interpreter cannot import
    is recorded as ``not_applicable`` with what is missing.
    """
    reset_peak_rss()  # this run's peak, also when a process runs several (a batch job)
    params = dict(params or {})
    annotator_cls, meta, unavailable = REGISTRY.resolve(method, Annotator)
    record = RunRecord(
        ids=ids,
        params=params,
        implementation=meta.get("implementation", ""),
        is_control=bool(meta.get("control", False)),
        versions=versions(annotator_cls.packages),
    )
    train = read_h5ad(train_path)
    test = read_h5ad(test_path)
    record.n_train, record.n_test = train.n_obs, test.n_obs
    predictions = pd.Series(pd.NA, index=test.obs_names, dtype="string")
    variants: dict[str, pd.Series] = {}
    model = None
    with outcome(record, ids.method, on_error, log):
        model = instantiate(annotator_cls, unavailable, ids.seed, params)
        solution = read_h5ad(solution_path) if annotator_cls.needs_solution else None
        t0 = time.perf_counter()
        model.fit(train, solution=solution, unlabelled=test if annotator_cls.transductive else None)
        record.fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        labels = np.asarray(model.predict(test), dtype=object)
        record.predict_s = time.perf_counter() - t0
        if labels.shape != (test.n_obs,):
            raise RuntimeError(f"predict returned {labels.shape[0]} labels for {test.n_obs} test cells")
        predictions = pd.Series(labels.astype(str), index=test.obs_names, dtype="string")
        for name, labels in model.predict_variants(test).items():
            labels = np.asarray(labels, dtype=object)
            if labels.shape != (test.n_obs,):
                raise RuntimeError(f"predict_variants '{name}': {labels.shape[0]} labels for {test.n_obs} test cells")
            variants[variant_column(name)] = pd.Series(labels.astype(str), index=test.obs_names, dtype="string")
        record.device, record.n_genes_used, record.extra = model.device, model.n_genes_used, model.extra
        log(
            f"{ids.method} on {ids.dataset}/{ids.split} seed {ids.seed}: fit {record.fit_s:.2f}s, "
            f"predict {record.predict_s:.2f}s, {record.n_genes_used} genes, device {record.device}"
        )
    finish(record, model)

    pred = ad.AnnData(obs=pd.DataFrame({PREDICTION: predictions, **variants}, index=test.obs_names))
    pred.uns.update(
        {
            "dataset_id": ids.dataset,
            "split_id": ids.split,
            "method_id": ids.method,
            "seed": ids.seed,
            "status": record.status,
            "reason": record.reason,
        }
    )
    write_h5ad(pred, prediction_path)
    write_json(record.to_dict(), record_path)
    return record
