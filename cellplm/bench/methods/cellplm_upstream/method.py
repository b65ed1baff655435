"""CellPLM fine-tuned for cell-type annotation by the authors' own code: ``CellTypeAnnotationPipeline`` of the
``cellplm`` 0.1.0.post2 package (import name ``CellPLM``), configured as their annotation tutorial does
(OmicsML/CellPLM ``tutorials/cell_type_annotation.ipynb``).

Runs only where that package is installed (``.venv-upstream``, built by ``tools/upstream_env.sh``, or the conda
env ``workflow/envs/cellplm_upstream.yaml``); elsewhere importing this module fails and the method registry makes
the rows not applicable, naming the missing package. It is this project's reference for its own re-implementation
(``cellplm_finetune``): both run on the same split files with the same checkpoint, so a gap between the two is the
re-implementation's, and the fidelity table (:mod:`cellplm.bench.report.fidelity`) puts them side by side.

What the tutorial does and what is done here:

- ``set_seed(seed)`` (``CellPLM.utils``), then ``CellTypeAnnotationDefaultModelConfig`` with ``out_dim`` = the
  number of classes, ``CellTypeAnnotationDefaultPipelineConfig`` (``epochs``, ``es``, ``lr``, ``wd``, ``hvg``,
  ``patience`` from this method's params, upstream's values by default),
  ``CellTypeAnnotationPipeline(pretrain_prefix, overwrite_config, pretrain_directory)``, then
  ``fit(adata, config, split_field, train_split='train', valid_split='valid', label_fields)`` and ``predict(adata)``
  on the same AnnData.
- The AnnData: the training cells (``obs['is_validation']`` -> split 'valid', others 'train') and the test cells
  (split 'test') concatenated, raw counts in ``X``; ``obs['batch']`` is our canonical batch column (upstream's
  ``TranscriptomicDataset`` makes one sentence per value of a column literally named 'batch'); ``var_names`` are
  Ensembl ids (``var['ensembl_id']``, else symbols mapped offline with GENCODE v44), with
  ``ensembl_auto_conversion=False``: upstream's conversion queries mygene over the network. Genes outside the
  vocabulary keep their names, so that upstream's seurat_v3 HVGs are computed on all genes, then intersected with
  the vocabulary, as in upstream's ``common_preprocess``.
- Where that fit cannot run, the row is not applicable and says why: a split without validation cells, or one
  with a sentence without training cells (a batch hold-out: upstream scores each sentence's training cells with
  torchmetrics, which fails on an empty one).
- The class set: test labels are hidden by the benchmark's contract, so test cells carry a placeholder that is a
  training class; they are outside the loss (``split == 'train'``) and the validation (``split == 'valid'``), and
  upstream's label encoder is fitted on the training classes only. The tutorial fits it on all cells, test labels
  included; a class found only in test would then get an output unit never trained positively.
- Device ``auto`` (CUDA when visible); fp32, upstream's only arithmetic.
- One patch, applied while the pipeline is built and recorded with the run (``extra['patches']``):
  ``CellPLM.pipeline.load_pretrain`` reads the weights with a bare ``torch.load(ckpt_path)``, which on torch >= 2.6
  unpickles weights-only and without ``map_location`` fails for a file saved from a GPU on a machine without one;
  there it reads the file with :func:`cellplm.model.checkpoint.read_checkpoint` instead (weights-only, a file that
  holds Python objects only when its sha256 is trusted, tensors mapped to the CPU, where ``load_pretrain`` builds
  the model before ``fit`` moves it to the device).

Upstream prints two lines per epoch; they go to the job's log (stdout) and are read back for the record's
``epochs_run``, ``best_epoch`` and ``best_valid_macro_f1`` (as printed, 4 decimals).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from unittest import mock

import CellPLM  # noqa: F401 - first: where the authors' package is missing, this ImportError names it
import skmisc  # noqa: F401 - scanpy's seurat_v3 HVGs, which upstream's common_preprocess computes, need it
import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import CellPLM.pipeline as upstream_pipeline
from CellPLM.pipeline.cell_type_annotation import (
    CellTypeAnnotationDefaultModelConfig,
    CellTypeAnnotationDefaultPipelineConfig,
    CellTypeAnnotationPipeline,
)
from CellPLM.utils import set_seed

from .... import keys
from ....data import check_counts, counts_matrix, match_genes, require_coverage
from ....model.checkpoint import WEIGHTS_SUFFIX, checkpoint_paths, read_checkpoint
from ....runtime import device_name, resolve_device
from ...checkpoints import use_checkpoint
from ...data.split import describe_sentences
from ...errors import NotApplicable
from ..base import Annotator
from ...finetune_protocol import CLASS_SET

SPLIT, LABEL = "split", "celltype"  # the obs columns of the tutorial's AnnData (its sentences: obs["batch"])
PIPELINE_PARAMS = ("epochs", "es", "lr", "wd", "hvg", "patience")  # keys of CellTypeAnnotationDefaultPipelineConfig
UPSTREAM_WARMUP = 30  # upstream's fit: `if epoch < 30:` linear warm-up of the main group, hard-coded
PATCHES = [
    "CellPLM.pipeline.load_pretrain: torch.load(ckpt_path) -> cellplm.model.checkpoint.read_checkpoint (weights-only "
    "unpickling, a file holding Python objects only with a trusted sha256; tensors mapped to the CPU, where "
    "load_pretrain builds the model before fit moves it to the device), while the pipeline is built",
]
GENE_IDS = (
    "var_names = Ensembl ids ({source}); ensembl_auto_conversion=False (upstream's symbol conversion queries "
    "mygene over the network)"
)
EPOCH_LINE = re.compile(r"^Epoch (\d+) \| Train loss")
VALID_F1 = re.compile(r"Valid f1: (\S+)")
STOPPED = re.compile(r"Early stopped\. Best validation performance achieved at epoch (\d+)")


class CellPLMUpstream(Annotator):
    """Params: upstream's pipeline config (``epochs``, ``es``, ``lr``, ``wd``, ``hvg``, ``patience``), ``device``,
    the gene-coverage thresholds of ``cellplm_finetune`` (``min_gene_share``, ``min_count_share``: below them the
    row is not applicable) and the checkpoint the workflow gives (``checkpoint``, ``checkpoint_kind``,
    ``trusted_sha256``)."""

    packages = ("cellplm", "torch", "torchmetrics", "scikit-misc")
    transductive = True  # the tutorial's fit sees every cell; the loss and the validation only theirs

    def fit(self, train, solution=None, unlabelled=None):
        self.check_params()
        p = self.param
        if not p("checkpoint"):
            raise NotApplicable(
                "the authors' pipeline fine-tunes a pretrained checkpoint and none is configured "
                "(cellplm.checkpoint.source: none)"
            )
        prefix, self.extra = use_checkpoint(p("checkpoint"), p("checkpoint_kind"), p("trusted_sha256"))
        device = resolve_device(p("device"))
        self.device = device.type
        classes = sorted(set(train.obs[keys.LABEL].astype(str)))
        self.config_ = {**CellTypeAnnotationDefaultPipelineConfig, **{k: p(k) for k in PIPELINE_PARAMS}}
        set_seed(self.seed)  # python, numpy, torch (and CUDA), as the tutorial's first cell
        weights = checkpoint_paths(prefix)[1]
        with upstream_output() as out, safe_checkpoint_loading(p("trusted_sha256")) as loaded:
            self.pipeline_ = CellTypeAnnotationPipeline(
                pretrain_prefix=weights.name.removesuffix(WEIGHTS_SUFFIX),
                pretrain_directory=str(weights.parent),
                overwrite_config={**CellTypeAnnotationDefaultModelConfig, "out_dim": len(classes)},
            )
        self.extra["weights"] = weights_report(self.pipeline_.model, loaded)
        self.train_ = train
        vocabulary = sorted(self.pipeline_.model.gene_set)
        self.data_, match = upstream_anndata(train, unlabelled, vocabulary, placeholder=classes[0])
        self.extra["genes"] = match.to_dict()
        require_coverage(match, "training data", p("min_gene_share"), p("min_count_share"))
        require_trainable(self.data_)
        with upstream_output() as out:
            self.pipeline_.fit(
                self.data_,
                self.config_,
                split_field=SPLIT,
                train_split="train",
                valid_split="valid",
                label_fields=[LABEL],
                ensembl_auto_conversion=False,
                device=device,
            )
        fitted = self.pipeline_.label_encoders[LABEL].classes_.tolist()
        if fitted != classes:  # the encoder must know exactly the training classes (the placeholder is one of them)
            raise RuntimeError(f"upstream's label encoder holds {fitted}, not the training classes {classes}")
        self.n_genes_used = len(self.pipeline_.gene_list)
        self.extra["genes"]["n_selected"] = self.n_genes_used
        self.extra.update(training_summary(out.lines))
        self.extra.update(
            precision="fp32",
            device_detail=f"{device_name(device)}, fp32",
            patches=PATCHES,
            gene_ids=GENE_IDS.format(source=match.id_source),
            sentences=describe_sentences(train.uns, int(self.data_.obs["batch"].nunique())),
            class_set=CLASS_SET.format(n=len(classes)) + f"; test cells carry the placeholder label '{classes[0]}', a "
            "training class, outside the loss and the validation",
            protocol={
                "max_epochs": p("epochs"),
                "patience": p("es"),
                "warmup_epochs": UPSTREAM_WARMUP,
                "lr": p("lr"),
                "weight_decay": p("wd"),
                "n_hvg": p("hvg"),
                "plateau_patience": p("patience"),
            },
            pipeline_config={k: self.config_[k] for k in sorted(self.config_)},
        )
        return self

    def predict(self, test):
        data = self.data_
        if not data.obs_names[(data.obs[SPLIT] == "test").to_numpy()].equals(test.obs_names):
            data = upstream_anndata(
                self.train_,
                test,
                sorted(self.pipeline_.model.gene_set),
                placeholder=self.pipeline_.label_encoders[LABEL].classes_[0],
            )[0]
        with upstream_output():
            codes = self.pipeline_.predict(data, self.config_, ensembl_auto_conversion=False, device=self.device)
        labels = self.pipeline_.label_encoders[LABEL].inverse_transform(codes.cpu().numpy())
        return np.asarray(labels, dtype=object)[(data.obs[SPLIT] == "test").to_numpy()]


def upstream_anndata(train: ad.AnnData, test: ad.AnnData | None, vocabulary: list[str], placeholder: str):
    """The AnnData the tutorial hands to ``fit`` and ``predict``, and how its genes match the vocabulary.

    Train cells (split 'valid' where ``obs['is_validation']``, else 'train') then test cells (split 'test', label
    ``placeholder``); raw counts; ``obs['batch']``; ``var_names`` the vocabulary's Ensembl id of each gene matched
    (the first column of a duplicated id wins, as in ``cellplm_finetune``), the original name otherwise.
    """
    parts = [train] + ([test] if test is not None else [])
    for name, part in zip(("training data", "test data"), parts):
        check_counts(counts_matrix(part)[: min(part.n_obs, 2000)], name)
    X = sp.vstack([sp.csr_matrix(counts_matrix(part)) for part in parts], format="csr").astype(np.float32)
    match = match_genes(train.var, train.var_names, vocabulary, gene_totals=np.asarray(X.sum(0)).ravel())
    names = np.where(
        match.vocab_index >= 0,
        np.asarray(vocabulary, dtype=object)[match.vocab_index],
        train.var_names.to_numpy(dtype=object),
    )
    valid = (
        train.obs[keys.IS_VALIDATION].astype(bool).to_numpy()
        if keys.IS_VALIDATION in train.obs
        else np.zeros(train.n_obs, dtype=bool)
    )
    n_test = test.n_obs if test is not None else 0
    obs = pd.DataFrame(
        {
            "batch": np.concatenate([part.obs[keys.BATCH].astype(str).to_numpy() for part in parts]),
            SPLIT: np.concatenate([np.where(valid, "valid", "train"), np.full(n_test, "test")]),
            LABEL: np.concatenate([train.obs[keys.LABEL].astype(str).to_numpy(), np.full(n_test, placeholder)]),
        },
        index=np.concatenate([part.obs_names.to_numpy() for part in parts]),
    )
    data = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=pd.Index(names.astype(str))))
    data.var_names_make_unique()
    return data, match


def require_trainable(data: ad.AnnData) -> None:
    """:class:`NotApplicable` where the authors' ``fit`` cannot run on this split, rather than its crash: it keeps the
    epoch of the best validation F1, so it needs validation cells; and it scores every sentence's training cells with
    torchmetrics, which fails on a sentence that has none (a split holding out whole batches, e.g. batch_holdout)."""
    split = data.obs[SPLIT]
    if not (split == "valid").any():
        raise NotApplicable(
            "the authors' fit keeps the epoch of the best validation F1, and the training data has no "
            "validation cells (obs['is_validation'])"
        )
    trained = split.eq("train").groupby(data.obs["batch"]).any()
    untrained = trained.index[~trained.to_numpy()].tolist()
    if untrained:
        raise NotApplicable(
            f"the authors' fit scores the training cells of every sentence and fails on one without "
            f"any: {len(untrained)} of {len(trained)} sentences (obs['batch'] "
            f"{', '.join(map(repr, untrained[:3]))}) hold no training cell (a split that holds out "
            "whole batches)"
        )


class _Output(io.TextIOBase):
    """What upstream prints: passed on to the job's log and kept, line by line, to be read back."""

    def __init__(self, sink):
        self.sink, self.lines, self._tail = sink, [], ""

    def write(self, text: str) -> int:
        self.sink.write(text)
        *done, self._tail = (self._tail + text).split("\n")
        self.lines += done
        return len(text)

    def flush(self) -> None:
        self.sink.flush()


@contextlib.contextmanager
def upstream_output():
    out = _Output(sys.stdout)
    with contextlib.redirect_stdout(out):
        yield out


@contextlib.contextmanager
def safe_checkpoint_loading(trusted_sha256=None):
    """The one patch (:data:`PATCHES`): ``torch`` as ``CellPLM.pipeline`` sees it, with ``load`` reading the file
    with :func:`~cellplm.model.checkpoint.read_checkpoint` (``trusted_sha256``: the digests it may fully unpickle).
    Yields the state dicts it read."""
    loaded = []

    class TorchWithSafeLoad:
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def load(path, *args, **kwargs):
            blob = read_checkpoint(path, trusted_sha256)
            loaded.append(blob["model_state_dict"])
            return blob

    with mock.patch.object(upstream_pipeline, "torch", TorchWithSafeLoad()):
        yield loaded


def weights_report(model: torch.nn.Module, loaded: list[dict]) -> dict:
    """How many of the model's tensors ``load_pretrain`` took from the checkpoint (it silently skips a tensor whose
    shape differs), which of the model's were left fresh (the annotation task's new latent layer and head) and which
    of the file's it did not use (e.g. the pretraining decoder), by module."""
    if len(loaded) != 1:
        raise RuntimeError(f"upstream's load_pretrain read {len(loaded)} checkpoint files, expected one")
    state, own = loaded[0], model.state_dict()
    taken = {k for k, v in own.items() if k in state and tuple(state[k].shape) == tuple(v.shape)}

    def modules(keys):
        return sorted({".".join(k.split(".")[:2]) for k in keys})

    return {
        "loaded": len(taken),
        "fresh": len(own) - len(taken),
        "fresh_modules": modules(set(own) - taken),
        "unused": len(state) - len(taken),
        "unused_modules": modules(set(state) - taken),
    }


def training_summary(lines: list[str]) -> dict:
    """Epochs run, whether upstream stopped early, its best epoch and validation F1, read from its printed log
    (best epoch: the one it names when it stops early, else the last epoch with the highest printed F1, as its
    ``max(valid_metric) == valid_metric[-1]`` keeps the later of equal ones)."""
    epochs = sum(bool(EPOCH_LINE.match(line)) for line in lines)
    f1 = [float(m.group(1)) for m in map(VALID_F1.search, lines) if m]
    stopped = next((int(m.group(1)) for m in map(STOPPED.search, lines) if m), None)
    best = stopped if stopped is not None else (max(i for i, v in enumerate(f1) if v == max(f1)) if f1 else None)
    return {
        "epochs_run": epochs,
        "stopped_early": stopped is not None,
        "best_epoch": best,
        "best_valid_macro_f1": f1[best] if best is not None and best < len(f1) else None,
        "training_log": "epochs and validation F1 as upstream printed them (4 decimals), in the job's log",
    }
