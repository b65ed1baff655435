"""Masked cell modelling pretraining of CellPLM over tissue sentences (single process or torchrun DDP).

    python -m cellplm.pretrain A.h5ad B.h5ad --out runs/p1 --shape tiny --epochs 20
    torchrun --nproc_per_node 8 -m cellplm.pretrain A.h5ad ... --out runs/p1 --shape 85M

Corpus: AnnData objects or h5ad files of raw counts. Each item is split into sentences by ``obs[sentence_key]``
(a sample or a field of view; a missing column makes the whole item one sentence). Genes are matched to the
model vocabulary; each item's measured genes form the ``gene_mask`` of its sentences. The decoder covariates are
``batch`` = the global sentence index over the corpus and ``dataset`` = the corpus item index. One optimiser step
is one sentence per process (upstream trains one tissue per step too); sentences over
``max_cells_per_sentence`` cells are subsampled afresh each time they are used, then the model's own cell
dropping and masking apply.

Schedule: AdamW, linear warm-up over ``warmup_steps`` updates, then constant (default) or cosine decay to
``min_lr_ratio · lr`` at the last step. Constant is the default because it lets a finished run be continued
with more epochs without changing any step already taken.

Determinism: every random draw is seeded from (seed, epoch, step, rank) through ``numpy.random.SeedSequence``:
the epoch's sentence order (seed, epoch), a sentence's subsample, the masking ``torch.Generator`` and the global
torch RNG (dropout, latent sampling) reseeded before every step. No RNG state has to be carried between steps,
so a run resumed from ``<out>/last`` retraces the uninterrupted run bit for bit on the CPU (given the same
thread count and world size). On CUDA some kernels (index_put with accumulation, embedding_bag backward) are
not deterministic, so a resumed GPU run is statistically, not bitwise, the same.

Outputs in ``out_dir``:
- ``model.config.json`` + ``model.best.ckpt``: the best weights by validation loss (``load_model``-ready), with
  a ``pretraining`` metadata dict beside ``model_state_dict``.
- ``last.config.json`` + ``last.best.ckpt``: the training checkpoint (optimiser, scheduler, epoch, step, best
  loss, metadata), written atomically every ``checkpoint_every`` steps and at each epoch end.
- ``loss.tsv``: one row per step (split=train, averaged over ranks) and one per epoch (split=val).
- ``pretraining.json``: the metadata and the run summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from . import __version__
from .errors import CellPLMError, ConfigError, InputError
from .io import atomic_path, write_json
from .data import GeneMatch, check_counts, counts_matrix, gene_totals, groups, match_genes, sentences
from .model.cellplm import CellPLM
from .model.checkpoint import checkpoint_paths, read_checkpoint, save_checkpoint
from .model.config import SHAPES, CellPLMConfig, config_for_shape
from .model.sentence import Sentence
from .runtime import PRECISIONS, Runtime

log = logging.getLogger(__name__)

BEST = "model"  # <out>/model.config.json + model.best.ckpt
LAST = "last"  # <out>/last.config.json + last.best.ckpt
LOSS_LOG = "loss.tsv"
META_JSON = "pretraining.json"
LOG_COLUMNS = ("step", "epoch", "split", "loss", "latent_loss", "reconstruction_loss", "lr", "n_cells", "seconds")
DIGEST_ENV = "CELLPLM_PRETRAIN_DIGEST_DIR"  # if set, each rank writes rank<r>.sha256 of its final parameters

# Random streams: one seed per (seed, stream, epoch, step, rank).
_ORDER, _SUBSAMPLE, _MASK, _TORCH, _VAL_SPLIT = range(5)

# PretrainConfig fields that may differ when resuming (they do not change the trajectory of the steps taken).
_RESUME_FREE = {"epochs", "checkpoint_every", "max_steps", "device", "backed"}


@dataclass
class PretrainConfig:
    epochs: int = 10  # passes over the training sentences
    lr: float = 2e-4  # peak learning rate (released config: 2e-4)
    weight_decay: float = 1e-8  # AdamW weight decay (released config: 1e-8)
    warmup_steps: int = 1000  # linear warm-up over this many optimiser steps
    schedule: str = "constant"  # after warm-up: "constant" or "cosine" (to min_lr_ratio · lr at the last step)
    min_lr_ratio: float = 0.0  # floor of the cosine schedule, as a fraction of lr
    clip: float = 1.0  # max global gradient norm; 0 disables clipping
    seed: int = 0  # root of every random draw (init, split, order, subsampling, masking, dropout)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"; under torchrun CUDA ranks use LOCAL_RANK
    precision: str = "auto"  # "auto", "fp32" or "bf16" (autocast for encoder and decoder; losses in fp32)
    sentence_key: str | None = "batch"  # obs column defining sentences; a missing column = one sentence per item
    spatial_key: str | None = None  # obsm key of cell coordinates (items without it have no coordinates)
    layer: str | None = None  # layer with raw counts (default: layers['counts'] if present, else X)
    gene_ids: str | None = None  # var column with Ensembl ids (default: detected, see data.ensembl_ids)
    max_cells_per_sentence: int = 2000  # larger sentences are subsampled afresh at each use (upstream: 2000)
    val_sentences: int = 10  # whole sentences held out for the validation loss (released config: val_num=10)
    checkpoint_every: int = 1000  # write <out>/last every this many steps (and at every epoch end)
    max_steps: int | None = None  # stop after this many global steps (as if interrupted; resume continues)
    backed: bool = False  # read h5ad files in backed mode (memory bounded by a sentence; slower)

    def __post_init__(self):
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"schedule {self.schedule!r}: choose constant or cosine")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        for name in ("epochs", "max_cells_per_sentence", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.warmup_steps < 0 or self.val_sentences < 0 or self.clip < 0 or self.lr <= 0:
            raise ConfigError("warmup_steps, val_sentences and clip must be >= 0 and lr > 0")


@dataclass
class CorpusItem:
    """One corpus item: an AnnData or an h5ad path; keys left None take the PretrainConfig's."""

    name: str
    data: object  # AnnData, str or Path
    sentence_key: str | None = None
    spatial_key: str | None = None


@dataclass
class PretrainResult:
    checkpoint: Path  # prefix of the best checkpoint: <out>/model
    summary: dict = field(default_factory=dict)


# ---- corpus ---------------------------------------------------------------------------------------------------

@dataclass
class _Item:
    name: str
    source: str  # what error messages name: the file path, or the item name
    adata: object
    match: GeneMatch
    gene_mask: torch.Tensor  # V bool
    spatial_key: str | None
    n_cells: int


@dataclass
class _Ref:
    item: int
    label: str
    cells: np.ndarray  # rows of the item's AnnData (cells without vocabulary counts removed)
    batch_id: int


def _as_items(corpus) -> list[CorpusItem]:
    if isinstance(corpus, (str, Path, CorpusItem)) or hasattr(corpus, "obs"):
        corpus = [corpus]
    items, seen = [], set()
    for i, entry in enumerate(corpus):
        if isinstance(entry, CorpusItem):
            item = entry
        elif isinstance(entry, tuple) and len(entry) == 2:
            item = CorpusItem(str(entry[0]), entry[1])
        elif isinstance(entry, (str, Path)):
            item = CorpusItem(Path(entry).name.removesuffix(".h5ad"), entry)
        elif hasattr(entry, "obs"):
            item = CorpusItem(str(entry.uns.get("name", f"corpus[{i}]")) if hasattr(entry, "uns") else f"corpus[{i}]", entry)
        else:
            raise ConfigError(f"corpus[{i}]: expected an AnnData, an h5ad path, a (name, data) pair or a CorpusItem")
        name, k = item.name, 2
        while name in seen:
            name, k = f"{item.name}#{k}", k + 1
        seen.add(name)
        items.append(dataclasses.replace(item, name=name))
    if not items:
        raise ConfigError("the corpus is empty")
    return items


def _open(item: CorpusItem, backed: bool):
    from .io import read_h5ad

    if isinstance(item.data, (str, Path)):
        path = Path(item.data)
        if backed:
            import anndata as ad

            if not path.exists():
                raise InputError(path, "file does not exist")
            try:
                return ad.read_h5ad(path, backed="r"), str(path)
            except Exception as e:  # noqa: BLE001 - h5py raises many types for damaged files
                raise InputError(path, f"not a readable h5ad file: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        return read_h5ad(path), str(path)
    return item.data, item.name


def _vocab_totals(X, in_vocab: np.ndarray, chunk: int = 50_000) -> np.ndarray:
    """Per-cell sum of the counts in vocabulary genes (row chunks; works on backed matrices)."""
    n = X.shape[0]
    out = np.zeros(n, dtype=np.float64)
    w = in_vocab.astype(np.float64)
    for start in range(0, n, chunk):
        block = X[start:start + chunk]
        block = block if sp.issparse(block) else np.asarray(block)
        out[start:start + chunk] = np.asarray(block @ w).ravel()
    return out


def _load_corpus(corpus, cfg: PretrainConfig, vocabulary: list[str]) -> tuple[list[_Item], list[_Ref]]:
    n_vocab = len(vocabulary)
    items, refs = [], []
    for d, spec in enumerate(_as_items(corpus)):
        adata, source = _open(spec, cfg.backed)
        try:
            X = counts_matrix(adata, cfg.layer)
        except KeyError:
            raise InputError(source, f"no layer {cfg.layer!r} (layers: {', '.join(adata.layers) or 'none'})") from None
        head = X[: min(adata.n_obs, 20_000)] if cfg.backed else X
        check_counts(head, source)
        try:
            match = match_genes(adata.var, adata.var_names, vocabulary, gene_ids=cfg.gene_ids,
                                gene_totals=gene_totals(adata, cfg.layer))
        except KeyError as e:
            raise InputError(source, f"no var column {e} with gene ids") from None
        if match.n_matched == 0:
            raise InputError(source, f"no genes in the CellPLM vocabulary ({match.n_genes} genes; ids from {match.id_source})")
        gene_mask = torch.zeros(n_vocab, dtype=torch.bool)
        gene_mask[torch.as_tensor(match.vocab_index[match.vocab_index >= 0])] = True
        spatial = spec.spatial_key or cfg.spatial_key
        if spatial is not None and spatial not in adata.obsm:
            log.info("%s: no obsm[%r]; its cells have no coordinates", spec.name, spatial)
            spatial = None
        totals = _vocab_totals(X, match.vocab_index >= 0)
        key = spec.sentence_key or cfg.sentence_key
        if key is not None and key not in adata.obs.columns:
            log.info("%s: no obs column %r; the whole item is one sentence", spec.name, key)
        n_dropped = 0
        for group in groups(adata.obs, key):
            label = str(adata.obs[key].iloc[group[0]]) if len(group) and key in adata.obs.columns else "all"
            keep = np.sort(group[totals[group] > 0])
            n_dropped += len(group) - len(keep)
            if len(keep) == 0:
                what = "no cells" if len(group) == 0 else f"{len(group)} cells but no counts in vocabulary genes"
                raise InputError(source, f"corpus item {spec.name!r}: sentence {label!r} is empty ({what})")
            refs.append(_Ref(item=d, label=f"{spec.name}/{label}", cells=keep, batch_id=len(refs)))
        if n_dropped:
            log.info("%s: %d cells without counts in vocabulary genes left out", spec.name, n_dropped)
        log.info("%s: %d cells, %s", spec.name, adata.n_obs, match.describe())
        items.append(_Item(spec.name, source, adata, match, gene_mask, spatial, int(adata.n_obs)))
    return items, refs


def _sentence(items: list[_Item], ref: _Ref, cells: np.ndarray, cfg: PretrainConfig) -> Sentence:
    item = items[ref.item]
    n_vocab = item.gene_mask.numel()
    (_, s), = sentences(item.adata, item.match.vocab_index, n_vocab, group_key=None, layer=cfg.layer, spatial_key=item.spatial_key,
                        cells=cells)
    n = s.n_cells
    return dataclasses.replace(s, batch=torch.full((n,), ref.batch_id, dtype=torch.int64),
                               dataset=torch.full((n,), ref.item, dtype=torch.int64), gene_mask=item.gene_mask)


# ---- randomness -----------------------------------------------------------------------------------------------

def _seed(*key: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _subsample(cells: np.ndarray, max_cells: int, rng: np.random.Generator) -> np.ndarray:
    if len(cells) <= max_cells:
        return cells
    return np.sort(rng.choice(cells, size=max_cells, replace=False))


def balanced_partition(sizes: Sequence[int], order: Sequence[int], world: int) -> list[list[int]]:
    """Split ``order`` (sentence ids) over ``world`` ranks with equal step counts and balanced cell totals.

    Largest first, each to the lightest rank that still has room; a rank short of ceil(n/world) sentences
    repeats sentences from the start of ``order``. Each rank visits its sentences in ``order``'s order.
    """
    n = len(order)
    steps = math.ceil(n / world)
    parts: list[list[int]] = [[] for _ in range(world)]
    loads = [0] * world
    for j in sorted(order, key=lambda j: -sizes[j]):  # stable: ties keep the (random) epoch order
        r = min((r for r in range(world) if len(parts[r]) < steps), key=lambda r: (loads[r], r))
        parts[r].append(j)
        loads[r] += sizes[j]
    pos = {j: k for k, j in enumerate(order)}
    for part in parts:
        part.sort(key=pos.__getitem__)
        k = 0
        while len(part) < steps:
            part.append(order[k % n])
            k += 1
    return parts


# ---- distributed ----------------------------------------------------------------------------------------------

@dataclass
class _Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    created: bool = False

    @property
    def on(self) -> bool:
        return self.world > 1

    def barrier(self):
        if self.on:
            torch.distributed.barrier()

    def mean(self, values: list[float], device) -> list[float]:
        if not self.on:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return (t / self.world).tolist()

    def sum(self, values: list[float], device) -> list[float]:
        if not self.on:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return t.tolist()


def _setup_dist(device: str) -> tuple[_Dist, str]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), device
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    created = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
        created = True
    return _Dist(dist.get_world_size(), dist.get_rank(), local, created), device


# ---- the objective --------------------------------------------------------------------------------------------

class _Objective(nn.Module):
    """The pretraining loss as a module for DDP (the model keeps latent, decoder and losses in fp32 under autocast)."""

    def __init__(self, model: CellPLM, runtime: Runtime):
        super().__init__()
        self.model = model
        self.runtime = runtime

    def forward(self, sentence: Sentence, generator: torch.Generator):
        with self.runtime.autocast():
            out = self.model.pretrain_step(sentence, generator)
        return out.loss, out.latent_loss, out.reconstruction_loss


def _lr_lambda(cfg: PretrainConfig, total_steps: int) -> Callable[[int], float]:
    warm, floor = cfg.warmup_steps, cfg.min_lr_ratio

    def factor(k: int) -> float:  # k: number of updates already taken
        if k < warm:
            return (k + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        span = max(1, total_steps - warm)
        progress = min(1.0, (k - warm) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


# ---- logging of losses ----------------------------------------------------------------------------------------

class _LossLog:
    """``loss.tsv``, appended row by row (rank 0); a resumed run truncates it to the rows its checkpoint saw."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled, self.rows = path, enabled, 0

    def start(self, keep_rows: int | None):
        if not self.enabled:
            return
        lines = [] if keep_rows is None or not self.path.exists() else self.path.read_text().splitlines()[1:]
        if keep_rows is not None and len(lines) < keep_rows:
            raise InputError(self.path, f"holds {len(lines)} rows but the checkpoint expects {keep_rows}")
        lines = lines[:keep_rows] if keep_rows is not None else []
        with atomic_path(self.path) as tmp:
            tmp.write_text("\n".join(["\t".join(LOG_COLUMNS), *lines]) + "\n")
        self.rows = len(lines)

    def add(self, **row):
        if not self.enabled:
            return
        fmt = {k: (repr(float(v)) if isinstance(v, float) else str(v)) for k, v in row.items()}
        with open(self.path, "a") as fh:
            fh.write("\t".join(fmt[c] for c in LOG_COLUMNS) + "\n")
        self.rows += 1


# ---- checkpoints ----------------------------------------------------------------------------------------------

def _model_fields(config: CellPLMConfig) -> dict:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "extra"}


def _check_resume(out: Path, model_config: CellPLMConfig, meta: dict, blob: dict) -> None:
    prefix = out / LAST
    saved = CellPLMConfig.load(checkpoint_paths(prefix)[0])
    a, b = _model_fields(saved), _model_fields(model_config)
    diff = sorted(k for k in a if a[k] != b[k])
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a[k]!r} vs requested {b[k]!r}" for k in diff if k != "gene_list")
        shown = shown or "gene_list"
        raise ConfigError(f"{prefix}: cannot resume, the model config differs ({shown})")
    old = blob.get("pretraining", {})
    old_h, new_h = old.get("hyperparameters", {}), meta["hyperparameters"]
    diff = sorted(k for k in new_h if k not in _RESUME_FREE and old_h.get(k) != new_h[k])
    if diff:
        raise ConfigError(f"{prefix}: cannot resume, the training settings differ ("
                          + ", ".join(f"{k}: checkpoint {old_h.get(k)!r} vs requested {new_h[k]!r}" for k in diff) + ")")
    for key, what in (("corpus", "corpus"), ("world_size", "number of processes"), ("precision", "precision")):
        if old.get(key) != meta[key]:
            raise ConfigError(f"{prefix}: cannot resume, the {what} differs (checkpoint {old.get(key)!r} vs "
                              f"requested {meta[key]!r})")


def _digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---- the loop -------------------------------------------------------------------------------------------------

def _resolve_model_config(model_config) -> tuple[CellPLMConfig, str]:
    if model_config is None:
        model_config = "small"
    if isinstance(model_config, str):
        if model_config not in SHAPES:
            raise ConfigError(f"unknown model shape {model_config!r}; choose one of {', '.join(SHAPES)}")
        return config_for_shape(model_config), model_config
    if not isinstance(model_config, CellPLMConfig):
        raise ConfigError("model_config must be a CellPLMConfig, a shape name or None")
    shape = next((name for name, dims in SHAPES.items()
                  if all(getattr(model_config, k) == v for k, v in dims.items())), "custom")
    return model_config, shape


def pretrain(corpus, out_dir, config: PretrainConfig | None = None, model_config: CellPLMConfig | str | None = None,
             resume: bool = False, progress: bool = True) -> PretrainResult:
    """Pretrain CellPLM on ``corpus``; write ``<out_dir>/model`` (best), ``<out_dir>/last`` and ``loss.tsv``.

    ``corpus``: AnnData objects, h5ad paths, (name, AnnData-or-path) pairs or :class:`CorpusItem` s.
    ``model_config``: a CellPLMConfig, a shape name ("tiny", "small", "85M"; default "small").
    ``resume``: continue from ``<out_dir>/last`` if it exists (its settings must match).
    Under torchrun (WORLD_SIZE > 1) every rank calls this; only rank 0 writes files.
    """
    cfg = config or PretrainConfig()
    out = Path(out_dir)
    t_start = time.time()
    dist_, device = _setup_dist(cfg.device)
    try:
        return _pretrain(corpus, out, cfg, model_config, resume, progress, dist_, device, t_start)
    finally:
        if dist_.created:
            torch.distributed.destroy_process_group()


def _pretrain(corpus, out: Path, cfg, model_config, resume, progress, dist_: _Dist, device: str, t_start) -> PretrainResult:
    from tqdm.auto import tqdm

    main = dist_.rank == 0
    runtime = Runtime.resolve(device, cfg.precision)
    base, shape = _resolve_model_config(model_config)
    items, refs = _load_corpus(corpus, cfg, base.gene_list)

    # held-out sentences
    n = len(refs)
    n_val = min(cfg.val_sentences, n)
    use_val = n_val > 0 and n - n_val >= 1
    if use_val:
        val_ids = sorted(_rng(cfg.seed, _VAL_SPLIT).permutation(n)[:n_val].tolist())
    else:
        val_ids = []
        why = "val_sentences=0" if cfg.val_sentences == 0 else f"too few sentences ({n}) to hold out {cfg.val_sentences}"
        log.warning("no held-out validation (%s): the best checkpoint is chosen by the epoch's mean training loss", why)
    val_set = set(val_ids)
    train_ids = [j for j in range(n) if j not in val_set]
    sizes = [min(len(r.cells), cfg.max_cells_per_sentence) for r in refs]
    # training-script fields of the upstream config format describe this run, not the released one
    run_fields = {"name": f"cellplm_pretrain_{shape}", "dataset": "+".join(it.name for it in items)[:200],
                  "lr": cfg.lr, "wd": cfg.weight_decay, "epochs": cfg.epochs, "val_num": len(val_ids),
                  "ddp": dist_.on}
    model_config = base.replace(head_type=None, latent_mod="gmvae", out_dim=base.n_genes, batch_num=len(refs),
                                dataset_num=len(items), extra={**base.extra, **run_fields})
    steps_per_epoch = math.ceil(len(train_ids) / dist_.world)
    total_steps = steps_per_epoch * cfg.epochs

    meta = {
        "pretrained_here": True,
        "corpus": [{"name": it.name, "source": it.source if isinstance(it.source, str) else it.name,
                    "n_cells": it.n_cells, "n_sentences": sum(r.item == d for r in refs),
                    "n_genes_matched": it.match.n_matched, "spatial": it.spatial_key is not None}
                   for d, it in enumerate(items)],
        "n_sentences": n, "n_train_sentences": len(train_ids), "n_val_sentences": len(val_ids),
        "selection": "validation loss" if use_val else "training loss",
        "shape": shape,
        "hyperparameters": asdict(cfg),
        "seed": cfg.seed,
        "versions": {"cellplm": __version__, "torch": str(torch.__version__), "numpy": str(np.__version__),
                     "python": platform.python_version()},
        "device": str(runtime.device), "device_name": runtime.describe(), "precision": runtime.precision,
        "world_size": dist_.world, "steps_per_epoch": steps_per_epoch, "resumed": False,
    }

    # model, optimiser, schedule
    torch.manual_seed(_seed(cfg.seed, _TORCH, 0, 0, 0))
    model = CellPLM(model_config).to(runtime.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, total_steps))

    last_config, last_weights = checkpoint_paths(out / LAST)
    step, best, log_rows, best_epoch = 0, math.inf, None, None
    if last_weights.exists() and not resume:
        raise ConfigError(f"{out}: already holds a pretraining run ({last_weights.name}); pass resume=True (--resume) "
                          "to continue it or choose another output folder")
    if resume and last_weights.exists():
        blob = read_checkpoint(last_weights)
        _check_resume(out, model_config, meta, blob)
        model.load_state_dict(blob["model_state_dict"])
        optimizer.load_state_dict(blob["optimizer_state_dict"])
        scheduler.load_state_dict(blob["scheduler_state_dict"])
        step, best, log_rows = int(blob["step"]), float(blob["best_loss"]), int(blob["log_rows"])
        best_epoch = blob.get("best_epoch")
        meta["resumed"] = True
        meta["resumed_at_step"] = step
        if cfg.schedule == "cosine" and blob["pretraining"]["hyperparameters"]["epochs"] != cfg.epochs:
            log.warning("resuming a cosine schedule with a different number of epochs changes its remaining shape")
        log.info("resuming from %s at step %d (epoch %d)", last_weights, step, step // steps_per_epoch)
    elif resume:
        log.info("no checkpoint in %s; starting a fresh run", out)

    loss_log = _LossLog(out / LOSS_LOG, main)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    loss_log.start(log_rows)
    dist_.barrier()

    objective = _Objective(model, runtime)
    if dist_.on:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # find_unused_parameters: the free-bits floors cut the KL terms' graph, missing_pe/pe rows and covariate
        # rows of other sentences get no gradient in a step.
        train_module = DDP(objective, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
                           find_unused_parameters=True)
    else:
        train_module = objective

    log.info("pretraining %s model (%d parameters) on %d sentences (%d train, %d validation) of %d item(s); %d "
             "step(s) per epoch x %d epoch(s) on %d process(es), %s", shape, sum(p.numel() for p in model.parameters()),
             n, len(train_ids), len(val_ids), len(items), steps_per_epoch, cfg.epochs, dist_.world, runtime.describe())

    def save_last(epoch: int):
        if not main:
            return
        save_checkpoint(model, out / LAST, extra={
            "optimizer_state_dict": optimizer.state_dict(), "scheduler_state_dict": scheduler.state_dict(),
            "epoch": epoch, "step": step, "best_loss": best, "best_epoch": best_epoch, "log_rows": loss_log.rows,
            "pretraining": meta,
        })

    def validate() -> list[float]:  # mean loss, latent loss, reconstruction loss over the validation sentences
        objective.eval()
        total, latent_total, recon_total, count = 0.0, 0.0, 0.0, 0
        with torch.no_grad():
            for k, j in enumerate(val_ids):
                if k % dist_.world != dist_.rank:
                    continue
                torch.manual_seed(_seed(cfg.seed, _TORCH, 1 << 30, j, 0))
                cells = _subsample(refs[j].cells, cfg.max_cells_per_sentence, _rng(cfg.seed, _SUBSAMPLE, 1 << 30, j))
                s = _sentence(items, refs[j], cells, cfg).to(runtime.device)
                gen = torch.Generator().manual_seed(_seed(cfg.seed, _MASK, 1 << 30, j, 0))
                loss, latent, recon = objective(s, gen)
                total, latent_total, recon_total = total + loss.item(), latent_total + latent.item(), recon_total + recon.item()
                count += 1
        objective.train()
        sums = dist_.sum([total, latent_total, recon_total, count], runtime.device)
        return [v / sums[3] for v in sums[:3]]

    start_epoch = step // steps_per_epoch
    stopped = False
    bar = tqdm(total=total_steps, initial=min(step, total_steps), disable=not (progress and main), desc="pretrain",
               unit="step", dynamic_ncols=True)
    objective.train()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            order = [train_ids[k] for k in _rng(cfg.seed, _ORDER, epoch).permutation(len(train_ids))]
            plan = balanced_partition(sizes, order, dist_.world)[dist_.rank]
            epoch_losses = []
            for i in range(step - epoch * steps_per_epoch, steps_per_epoch):
                t0 = time.time()
                g = epoch * steps_per_epoch + i
                ref = refs[plan[i]]
                torch.manual_seed(_seed(cfg.seed, _TORCH, epoch, g, dist_.rank))
                cells = _subsample(ref.cells, cfg.max_cells_per_sentence, _rng(cfg.seed, _SUBSAMPLE, epoch, g, dist_.rank))
                s = _sentence(items, ref, cells, cfg).to(runtime.device)
                gen = torch.Generator().manual_seed(_seed(cfg.seed, _MASK, epoch, g, dist_.rank))
                lr = scheduler.get_last_lr()[0]
                optimizer.zero_grad(set_to_none=True)
                loss, latent, recon = train_module(s, gen)
                if not torch.isfinite(loss):
                    raise CellPLMError(f"pretraining diverged: non-finite loss at step {g + 1} (sentence {ref.label}); "
                                     "lower --lr or use --precision fp32")
                loss.backward()
                if cfg.clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                optimizer.step()
                scheduler.step()
                step = g + 1
                values = dist_.mean([loss.item(), latent.item(), recon.item(), float(s.n_cells)], runtime.device)
                epoch_losses.append(values[0])
                loss_log.add(step=step, epoch=epoch, split="train", loss=values[0], latent_loss=values[1],
                             reconstruction_loss=values[2], lr=lr, n_cells=int(round(values[3] * dist_.world)),
                             seconds=round(time.time() - t0, 4))
                bar.update(1)
                bar.set_postfix(loss=f"{values[0]:.4g}", epoch=epoch)
                end_of_epoch = i == steps_per_epoch - 1
                if end_of_epoch:
                    break
                stopped = cfg.max_steps is not None and step >= cfg.max_steps
                if stopped or step % cfg.checkpoint_every == 0:
                    save_last(epoch)
                if stopped:
                    break
            if stopped:
                break
            # epoch end: validation (or the epoch's training loss), best checkpoint, training checkpoint
            if use_val:
                t0 = time.time()
                val, val_latent, val_recon = validate()
                loss_log.add(step=step, epoch=epoch, split="val", loss=val, latent_loss=val_latent,
                             reconstruction_loss=val_recon, lr=lr,
                             n_cells=sum(sizes[j] for j in val_ids), seconds=round(time.time() - t0, 4))
                log.info("epoch %d: training loss %.4f, validation loss %.4f", epoch, float(np.mean(epoch_losses)), val)
            else:
                val = float(np.mean(epoch_losses)) if epoch_losses else math.inf
                log.info("epoch %d: training loss %.4f (no validation sentences)", epoch, val)
            if val < best:
                best, best_epoch = val, epoch
                if main:
                    save_checkpoint(model, out / BEST, extra={"pretraining": meta, "epoch": epoch, "step": step,
                                                             "best_loss": best})
            save_last(epoch + 1)
            dist_.barrier()
            if cfg.max_steps is not None and step >= cfg.max_steps and step < total_steps:
                stopped = True
                break
    finally:
        bar.close()

    if os.environ.get(DIGEST_ENV):
        d = Path(os.environ[DIGEST_ENV])
        d.mkdir(parents=True, exist_ok=True)
        (d / f"rank{dist_.rank}.sha256").write_text(_digest(model) + "\n")

    summary = {
        "best_checkpoint": str(out / BEST), "best_loss": None if math.isinf(best) else best, "best_epoch": best_epoch,
        "selection": meta["selection"], "steps": step, "total_steps": total_steps, "finished": step >= total_steps,
        "stopped_early": stopped, "epochs": cfg.epochs, "resumed": meta["resumed"],
        "seconds": round(time.time() - t_start, 2), "world_size": dist_.world,
    }
    if main:
        write_json({"pretraining": meta, "summary": summary}, out / META_JSON)
    dist_.barrier()
    if stopped:
        log.info("stopped after %d step(s) (max_steps); continue with resume", step)
    else:
        log.info("done: best %s %.4f at epoch %s; %s", meta["selection"], best, best_epoch, out / BEST)
    return PretrainResult(checkpoint=out / BEST, summary=summary)


# ---- command line ---------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = PretrainConfig()
    p = parser
    p.add_argument("corpus", nargs="+", help="h5ad files of raw counts (one corpus item each)")
    p.add_argument("--out", required=True, help="output folder (model.*, last.*, loss.tsv, pretraining.json)")
    p.add_argument("--shape", default="small", choices=list(SHAPES), help="model shape (default: small)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--schedule", choices=("constant", "cosine"), default=d.schedule, help="after warm-up")
    p.add_argument("--clip", type=float, default=d.clip, help="max gradient norm (0: off)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision)
    p.add_argument("--sentence-key", default=d.sentence_key, help="obs column of sentences (sample / field of view)")
    p.add_argument("--spatial-key", default=d.spatial_key, help="obsm key of cell coordinates")
    p.add_argument("--spatial-pe", action="store_true", help="build the model with the 2-D spatial encoding")
    p.add_argument("--layer", default=d.layer, help="layer with raw counts")
    p.add_argument("--max-cells-per-sentence", type=int, default=d.max_cells_per_sentence)
    p.add_argument("--val-sentences", type=int, default=d.val_sentences)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resume continues)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last if present")
    p.add_argument("--backed", action="store_true", help="read h5ad files backed (bounded memory)")
    p.add_argument("--no-progress", action="store_true")
    return p


def run_from_args(args: argparse.Namespace) -> int:
    try:
        cfg = PretrainConfig(
            epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
            schedule=args.schedule, clip=args.clip, seed=args.seed, device=args.device, precision=args.precision,
            sentence_key=args.sentence_key, spatial_key=args.spatial_key, layer=args.layer,
            max_cells_per_sentence=args.max_cells_per_sentence, val_sentences=args.val_sentences,
            checkpoint_every=args.checkpoint_every, max_steps=args.max_steps, backed=args.backed,
        )
        model_config = config_for_shape(args.shape, spatial_pe=bool(getattr(args, "spatial_pe", False)))
        result = pretrain(args.corpus, args.out, cfg, model_config, resume=args.resume, progress=not args.no_progress)
    except CellPLMError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"checkpoint": str(result.checkpoint), **result.summary}))
    return 0


def main(argv=None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="cellplm pretrain", description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(message)s")
    return run_from_args(args)


if __name__ == "__main__":
    raise SystemExit(main())
