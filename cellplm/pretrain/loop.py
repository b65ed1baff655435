"""The training loop: held-out sentences, model and optimiser, resuming, epochs of one sentence per step and
process, validation, the best and the training checkpoints, and the run summary."""

from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import CellPLMError, ConfigError
from ..io import write_json
from ..model.cellplm import CellPLM
from ..model.checkpoint import checkpoint_paths, read_checkpoint
from ..model.config import SHAPES, CellPLMConfig, config_for_shape
from ..runtime import Runtime
from . import seeding
from .checkpoints import BEST, LAST, META_JSON, check_resume, save_best, save_training_checkpoint, write_digest
from .config import PretrainConfig
from .corpus import Ref, load_corpus, sentence
from .distributed import Dist, balanced_partition, setup_dist
from .loss_log import LOSS_LOG, LossLog
from .objective import Objective, lr_lambda

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    checkpoint: Path  # prefix of the best checkpoint: <out>/model
    summary: dict = field(default_factory=dict)


def resolve_model_config(model_config) -> tuple[CellPLMConfig, str]:
    if model_config is None:
        model_config = "small"
    if isinstance(model_config, str):
        if model_config not in SHAPES:
            raise ConfigError(f"unknown model shape {model_config!r}; choose one of {', '.join(SHAPES)}")
        return config_for_shape(model_config), model_config
    if not isinstance(model_config, CellPLMConfig):
        raise ConfigError("model_config must be a CellPLMConfig, a shape name or None")
    shape = next(
        (name for name, dims in SHAPES.items() if all(getattr(model_config, k) == v for k, v in dims.items())), "custom"
    )
    return model_config, shape


def pretrain(
    corpus,
    out_dir,
    config: PretrainConfig | None = None,
    model_config: CellPLMConfig | str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> PretrainResult:
    """Pretrain CellPLM on ``corpus``; write ``<out_dir>/model`` (best), ``<out_dir>/last`` and ``loss.tsv``.

    ``corpus``: AnnData objects, h5ad paths, (name, AnnData-or-path) pairs or :class:`CorpusItem` s.
    ``model_config``: a CellPLMConfig, a shape name ("tiny", "small", "85M"; default "small").
    ``resume``: continue from ``<out_dir>/last`` if it exists (its settings must match).
    Under torchrun (WORLD_SIZE > 1) every rank calls this; only rank 0 writes files.
    """
    cfg = config or PretrainConfig()
    out = Path(out_dir)
    t_start = time.time()
    dist_, device = setup_dist(cfg.device)
    try:
        return _Run(corpus, out, cfg, model_config, dist_, device).train(resume, progress, t_start)
    finally:
        if dist_.created:
            torch.distributed.destroy_process_group()


def _validation_split(n: int, cfg: PretrainConfig) -> list[int]:
    """The held-out sentences (none when ``val_sentences`` is 0 or would leave no training sentence)."""
    n_val = min(cfg.val_sentences, n)
    if n_val > 0 and n - n_val >= 1:
        return sorted(seeding.rng(cfg.seed, seeding.VAL_SPLIT).permutation(n)[:n_val].tolist())
    why = "val_sentences=0" if cfg.val_sentences == 0 else f"too few sentences ({n}) to hold out {cfg.val_sentences}"
    log.warning("no held-out validation (%s): the best checkpoint is chosen by the epoch's mean training loss", why)
    return []


class _Run:
    """One pretraining run of one process: its corpus, model, optimiser and loop state."""

    def __init__(self, corpus, out: Path, cfg: PretrainConfig, model_config, dist_: Dist, device: str):
        self.out, self.cfg, self.dist = out, cfg, dist_
        self.main = dist_.rank == 0
        self.runtime = Runtime.resolve(device, cfg.precision)
        base, shape = resolve_model_config(model_config)
        self.items, self.refs = load_corpus(corpus, cfg, base.gene_list)
        self.val_ids = _validation_split(len(self.refs), cfg)
        self.use_val = bool(self.val_ids)
        val_set = set(self.val_ids)
        self.train_ids = [j for j in range(len(self.refs)) if j not in val_set]
        self.sizes = [min(len(r.cells), cfg.max_cells_per_sentence) for r in self.refs]
        self.shape = shape
        self.model_config = self._run_model_config(base, shape)
        self.steps_per_epoch = math.ceil(len(self.train_ids) / dist_.world)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.meta = self._metadata(shape)
        # model, optimiser, schedule
        torch.manual_seed(seeding.seed(cfg.seed, seeding.TORCH, 0, 0, 0))
        self.model = CellPLM(self.model_config).to(self.runtime.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, self.total_steps))
        self.step, self.best, self.best_epoch = 0, math.inf, None
        self.loss_log = LossLog(out / LOSS_LOG, self.main)

    def _run_model_config(self, base: CellPLMConfig, shape: str) -> CellPLMConfig:
        cfg, items, refs = self.cfg, self.items, self.refs
        # training-script fields of the upstream config format describe this run, not the released one
        run_fields = {
            "name": f"cellplm_pretrain_{shape}",
            "dataset": "+".join(it.name for it in items)[:200],
            "lr": cfg.lr,
            "wd": cfg.weight_decay,
            "epochs": cfg.epochs,
            "val_num": len(self.val_ids),
            "ddp": self.dist.on,
        }
        return base.replace(
            head_type=None,
            latent_mod="gmvae",
            out_dim=base.n_genes,
            batch_num=len(refs),
            dataset_num=len(items),
            extra={**base.extra, **run_fields},
        )

    def _metadata(self, shape: str) -> dict:
        cfg, items, refs, runtime = self.cfg, self.items, self.refs, self.runtime
        return {
            "pretrained_here": True,
            "corpus": [
                {
                    "name": it.name,
                    "source": it.source if isinstance(it.source, str) else it.name,
                    "n_cells": it.n_cells,
                    "n_sentences": sum(r.item == d for r in refs),
                    "n_genes_matched": it.match.n_matched,
                    "spatial": it.spatial_key is not None,
                }
                for d, it in enumerate(items)
            ],
            "n_sentences": len(refs),
            "n_train_sentences": len(self.train_ids),
            "n_val_sentences": len(self.val_ids),
            "selection": "validation loss" if self.use_val else "training loss",
            "shape": shape,
            "hyperparameters": asdict(cfg),
            "seed": cfg.seed,
            "versions": {
                "cellplm": __version__,
                "torch": str(torch.__version__),
                "numpy": str(np.__version__),
                "python": platform.python_version(),
            },
            "device": str(runtime.device),
            "device_name": runtime.describe(),
            "precision": runtime.precision,
            "world_size": self.dist.world,
            "steps_per_epoch": self.steps_per_epoch,
            "resumed": False,
        }

    # ---- resuming ------------------------------------------------------------------------------------------------
    def _restore(self, resume: bool) -> int | None:
        """Continue from ``<out>/last`` when resuming; the number of loss-log rows it saw (None: a fresh run)."""
        out, cfg = self.out, self.cfg
        last_weights = checkpoint_paths(out / LAST)[1]
        if last_weights.exists() and not resume:
            raise ConfigError(
                f"{out}: already holds a pretraining run ({last_weights.name}); pass resume=True "
                "(--resume) to continue it or choose another output folder"
            )
        if not (resume and last_weights.exists()):
            if resume:
                log.info("no checkpoint in %s; starting a fresh run", out)
            return None
        blob = read_checkpoint(last_weights)
        check_resume(out, self.model_config, self.meta, blob)
        self.model.load_state_dict(blob["model_state_dict"])
        self.optimizer.load_state_dict(blob["optimizer_state_dict"])
        self.scheduler.load_state_dict(blob["scheduler_state_dict"])
        self.step, self.best = int(blob["step"]), float(blob["best_loss"])
        self.best_epoch = blob.get("best_epoch")
        self.meta["resumed"] = True
        self.meta["resumed_at_step"] = self.step
        if cfg.schedule == "cosine" and blob["pretraining"]["hyperparameters"]["epochs"] != cfg.epochs:
            log.warning("resuming a cosine schedule with a different number of epochs changes its remaining shape")
        log.info("resuming from %s at step %d (epoch %d)", last_weights, self.step, self.step // self.steps_per_epoch)
        return int(blob["log_rows"])

    def _training_module(self):
        if not self.dist.on:
            return self.objective
        from torch.nn.parallel import DistributedDataParallel as DDP

        # find_unused_parameters: the free-bits floors cut the KL terms' graph, missing_pe/pe rows and covariate
        # rows of other sentences get no gradient in a step.
        device = self.runtime.device
        return DDP(
            self.objective, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )

    def save_last(self, epoch: int) -> None:
        if self.main:
            save_training_checkpoint(
                self.out,
                self.model,
                self.optimizer,
                self.scheduler,
                epoch=epoch,
                step=self.step,
                best_loss=self.best,
                best_epoch=self.best_epoch,
                log_rows=self.loss_log.rows,
                meta=self.meta,
            )

    # ---- one sentence ------------------------------------------------------------------------------------------
    def _draw(self, ref: Ref, epoch: int, g: int, rank: int):
        """Seed torch for step ``g`` and give its (subsampled) sentence on the device and its masking generator."""
        cfg = self.cfg
        torch.manual_seed(seeding.seed(cfg.seed, seeding.TORCH, epoch, g, rank))
        cells = seeding.subsample(
            ref.cells, cfg.max_cells_per_sentence, seeding.rng(cfg.seed, seeding.SUBSAMPLE, epoch, g, rank)
        )
        s = sentence(self.items, ref, cells, cfg).to(self.runtime.device)
        return s, torch.Generator().manual_seed(seeding.seed(cfg.seed, seeding.MASK, epoch, g, rank))

    def validate(self) -> list[float]:
        """Mean loss, latent loss and reconstruction loss over the validation sentences (all ranks)."""
        objective, dist_, cfg = self.objective, self.dist, self.cfg
        objective.eval()
        total, latent_total, recon_total, count = 0.0, 0.0, 0.0, 0
        with torch.no_grad():
            for k, j in enumerate(self.val_ids):
                if k % dist_.world != dist_.rank:
                    continue
                # the validation draws are keyed (VALIDATION_EPOCH, sentence): the same at every epoch
                torch.manual_seed(seeding.seed(cfg.seed, seeding.TORCH, seeding.VALIDATION_EPOCH, j, 0))
                cells = seeding.subsample(
                    self.refs[j].cells,
                    cfg.max_cells_per_sentence,
                    seeding.rng(cfg.seed, seeding.SUBSAMPLE, seeding.VALIDATION_EPOCH, j),
                )
                s = sentence(self.items, self.refs[j], cells, cfg).to(self.runtime.device)
                gen = torch.Generator().manual_seed(
                    seeding.seed(cfg.seed, seeding.MASK, seeding.VALIDATION_EPOCH, j, 0)
                )
                loss, latent, recon = objective(s, gen)
                total, latent_total, recon_total = (
                    total + loss.item(),
                    latent_total + latent.item(),
                    recon_total + recon.item(),
                )
                count += 1
        objective.train()
        sums = dist_.sum([total, latent_total, recon_total, count], self.runtime.device)
        return [v / sums[3] for v in sums[:3]]

    # ---- epochs --------------------------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int, bar) -> tuple[list[float], float, bool]:
        """The epoch's remaining steps; its training losses, the last step's lr, and whether max_steps stopped it."""
        cfg, dist_, spe = self.cfg, self.dist, self.steps_per_epoch
        order = [
            self.train_ids[k] for k in seeding.rng(cfg.seed, seeding.ORDER, epoch).permutation(len(self.train_ids))
        ]
        plan = balanced_partition(self.sizes, order, dist_.world)[dist_.rank]
        epoch_losses, stopped = [], False
        for i in range(self.step - epoch * spe, spe):
            t0 = time.time()
            g = epoch * spe + i
            ref = self.refs[plan[i]]
            s, gen = self._draw(ref, epoch, g, dist_.rank)
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.zero_grad(set_to_none=True)
            loss, latent, recon = self.train_module(s, gen)
            if not torch.isfinite(loss):
                raise CellPLMError(
                    f"pretraining diverged: non-finite loss at step {g + 1} (sentence {ref.label}); "
                    "lower --lr or use --precision fp32"
                )
            loss.backward()
            if cfg.clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
            self.optimizer.step()
            self.scheduler.step()
            self.step = g + 1
            values = dist_.mean([loss.item(), latent.item(), recon.item(), float(s.n_cells)], self.runtime.device)
            epoch_losses.append(values[0])
            self.loss_log.add(
                step=self.step,
                epoch=epoch,
                split="train",
                loss=values[0],
                latent_loss=values[1],
                reconstruction_loss=values[2],
                lr=lr,
                n_cells=int(round(values[3] * dist_.world)),
                seconds=round(time.time() - t0, 4),
            )
            bar.update(1)
            bar.set_postfix(loss=f"{values[0]:.4g}", epoch=epoch)
            if i == spe - 1:  # end of the epoch: _end_epoch checkpoints
                break
            stopped = cfg.max_steps is not None and self.step >= cfg.max_steps
            if stopped or self.step % cfg.checkpoint_every == 0:
                self.save_last(epoch)
            if stopped:
                break
        return epoch_losses, lr, stopped

    def _end_epoch(self, epoch: int, epoch_losses: list[float], lr: float) -> None:
        """Validation (or the epoch's training loss), the best checkpoint, the training checkpoint."""
        if self.use_val:
            t0 = time.time()
            val, val_latent, val_recon = self.validate()
            self.loss_log.add(
                step=self.step,
                epoch=epoch,
                split="val",
                loss=val,
                latent_loss=val_latent,
                reconstruction_loss=val_recon,
                lr=lr,
                n_cells=sum(self.sizes[j] for j in self.val_ids),
                seconds=round(time.time() - t0, 4),
            )
            log.info("epoch %d: training loss %.4f, validation loss %.4f", epoch, float(np.mean(epoch_losses)), val)
        else:
            val = float(np.mean(epoch_losses)) if epoch_losses else math.inf
            log.info("epoch %d: training loss %.4f (no validation sentences)", epoch, val)
        if val < self.best:
            self.best, self.best_epoch = val, epoch
            if self.main:
                save_best(self.out, self.model, meta=self.meta, epoch=epoch, step=self.step, best_loss=self.best)
        self.save_last(epoch + 1)
        self.dist.barrier()

    def _epochs(self, progress: bool) -> bool:
        """Train from the current step to the end (or to max_steps); whether max_steps stopped the run."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        stopped = False
        bar = tqdm(
            total=self.total_steps,
            initial=min(self.step, self.total_steps),
            disable=not (progress and self.main),
            desc="pretrain",
            unit="step",
            dynamic_ncols=True,
        )
        self.objective.train()
        try:
            for epoch in range(self.step // self.steps_per_epoch, cfg.epochs):
                epoch_losses, lr, stopped = self._train_epoch(epoch, bar)
                if stopped:
                    break
                self._end_epoch(epoch, epoch_losses, lr)
                if cfg.max_steps is not None and self.step >= cfg.max_steps and self.step < self.total_steps:
                    stopped = True
                    break
        finally:
            bar.close()
        return stopped

    # ---- the run -------------------------------------------------------------------------------------------------
    def train(self, resume: bool, progress: bool, t_start: float) -> PretrainResult:
        out, dist_ = self.out, self.dist
        log_rows = self._restore(resume)
        if self.main:
            out.mkdir(parents=True, exist_ok=True)
        self.loss_log.start(log_rows)
        dist_.barrier()
        self.objective = Objective(self.model, self.runtime)
        self.train_module = self._training_module()
        log.info(
            "pretraining %s model (%d parameters) on %d sentences (%d train, %d validation) of %d item(s); %d "
            "step(s) per epoch x %d epoch(s) on %d process(es), %s",
            self.shape,
            sum(p.numel() for p in self.model.parameters()),
            len(self.refs),
            len(self.train_ids),
            len(self.val_ids),
            len(self.items),
            self.steps_per_epoch,
            self.cfg.epochs,
            dist_.world,
            self.runtime.describe(),
        )
        stopped = self._epochs(progress)
        write_digest(self.model, dist_.rank)
        return self._finish(stopped, t_start)

    def _finish(self, stopped: bool, t_start: float) -> PretrainResult:
        out, best, meta = self.out, self.best, self.meta
        summary = {
            "best_checkpoint": str(out / BEST),
            "best_loss": None if math.isinf(best) else best,
            "best_epoch": self.best_epoch,
            "selection": meta["selection"],
            "steps": self.step,
            "total_steps": self.total_steps,
            "finished": self.step >= self.total_steps,
            "stopped_early": stopped,
            "epochs": self.cfg.epochs,
            "resumed": meta["resumed"],
            "seconds": round(time.time() - t_start, 2),
            "world_size": self.dist.world,
        }
        if self.main:
            write_json({"pretraining": meta, "summary": summary}, out / META_JSON)
        self.dist.barrier()
        if stopped:
            log.info("stopped after %d step(s) (max_steps); continue with resume", self.step)
        else:
            log.info("done: best %s %.4f at epoch %s; %s", meta["selection"], best, self.best_epoch, out / BEST)
        return PretrainResult(checkpoint=out / BEST, summary=summary)
