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

import importlib.metadata
import platform
import random
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ...memory import peak_gpu_mb, peak_rss_mb
from ..errors import NotApplicable
from ..io import read_h5ad, write_h5ad, write_json
from . import read_metadata

STATUSES = ("ok", "not_applicable", "failed")


class Annotator:
    """Base class of all methods. Subclasses implement fit/predict; what describes them (label, implementation,
    control or not, default params) is the ``method.yaml`` beside their module."""

    packages: tuple[str, ...] = ()  # distributions whose versions go into the run record
    needs_solution: bool = False  # control methods only
    transductive: bool = False  # fit also sees the (unlabelled) test cells, as scANVI and CellPLM do

    def __init__(self, seed: int = 0, **params):
        self.seed = seed
        self.params = params
        self.n_genes_used: int | None = None
        self.device = "cpu"
        self.extra: dict = {}  # anything else worth recording (e.g. checkpoint provenance)

    @classmethod
    def metadata(cls) -> dict:
        """The ``method.yaml`` of the folder of the class's module ({} for a class defined elsewhere)."""
        module = sys.modules[cls.__module__]
        return read_metadata(Path(module.__file__).parent) if getattr(module, "__file__", None) else {}

    @classmethod
    def defaults(cls) -> dict:
        return dict(cls.metadata().get("params") or {})

    def param(self, key):
        """Hyperparameter ``key``: the value given, else the method's default (``params`` of its method.yaml)."""
        return self.params[key] if key in self.params else self.defaults()[key]

    def check_params(self) -> None:
        """ValueError naming any given parameter the method does not know (i.e. not among its defaults)."""
        known = self.defaults()
        unknown = sorted(set(self.params) - set(known))
        if unknown:
            name = self.metadata().get("label", type(self).__name__)
            raise ValueError(f"unknown {name} parameter(s): {', '.join(unknown)} (known: {', '.join(known)})")

    def fit(self, train: ad.AnnData, solution: ad.AnnData | None = None,
            unlabelled: ad.AnnData | None = None) -> "Annotator":
        raise NotImplementedError

    def predict(self, test: ad.AnnData) -> np.ndarray:
        raise NotImplementedError


@dataclass
class RunIds:
    dataset: str
    split: str
    method: str
    seed: int
    param_set: str = "default"


@dataclass
class RunRecord:
    ids: RunIds
    status: str = "ok"
    reason: str = ""
    fit_s: float | None = None
    predict_s: float | None = None
    peak_rss_mb: float | None = None
    peak_gpu_mb: float | None = None
    device: str = "cpu"
    n_genes_used: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    params: dict = field(default_factory=dict)
    implementation: str = ""
    is_control: bool = False
    versions: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    host: str = field(default_factory=socket.gethostname)
    finished: str = ""

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "ids"}
        d.update(self.ids.__dict__)
        return d


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def versions(packages) -> dict:
    out = {"python": platform.python_version()}
    for name in ("numpy", "scikit-learn", "anndata", "scanpy", *packages):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


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
    params = dict(params or {})
    unavailable = None
    if isinstance(method, str):
        from . import MethodUnavailable, load, metadata

        meta = metadata(method)
        try:
            annotator_cls = load(method)
        except MethodUnavailable as e:
            annotator_cls, unavailable = Annotator, e
    else:
        annotator_cls, meta = method, method.metadata()
    record = RunRecord(ids=ids, params=params, implementation=meta.get("implementation", ""),
                       is_control=bool(meta.get("control", False)), versions=versions(annotator_cls.packages))
    train = read_h5ad(train_path)
    test = read_h5ad(test_path)
    record.n_train, record.n_test = train.n_obs, test.n_obs
    predictions = pd.Series(pd.NA, index=test.obs_names, dtype="string")
    model = None
    try:
        if unavailable is not None:
            raise NotApplicable(str(unavailable))
        seed_everything(ids.seed)
        model = annotator_cls(seed=ids.seed, **params)
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
        record.device, record.n_genes_used, record.extra = model.device, model.n_genes_used, model.extra
        log(f"{ids.method} on {ids.dataset}/{ids.split} seed {ids.seed}: fit {record.fit_s:.2f}s, "
            f"predict {record.predict_s:.2f}s, {record.n_genes_used} genes, device {record.device}")
    except NotApplicable as e:
        record.status, record.reason = "not_applicable", str(e)
        log(f"{ids.method}: not applicable: {e}")
    except Exception as e:
        if on_error == "raise":
            raise
        record.status, record.reason = "failed", f"{type(e).__name__}: {e}".splitlines()[0][:500]
        log(f"{ids.method}: FAILED\n{traceback.format_exc()}")
    if model is not None and record.status != "ok":  # what the method learnt before stopping (e.g. checkpoint provenance)
        record.extra = model.extra
    record.peak_rss_mb = peak_rss_mb()
    record.peak_gpu_mb = peak_gpu_mb()
    record.finished = datetime.now(timezone.utc).isoformat(timespec="seconds")

    pred = ad.AnnData(obs=pd.DataFrame({"label_pred": predictions}, index=test.obs_names))
    pred.uns.update({"dataset_id": ids.dataset, "split_id": ids.split, "method_id": ids.method,
                     "seed": ids.seed, "status": record.status, "reason": record.reason})
    write_h5ad(pred, prediction_path)
    write_json(record.to_dict(), record_path)
    return record
