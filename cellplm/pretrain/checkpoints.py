"""The run's checkpoints: the best weights (``<out>/model``), the training checkpoint (``<out>/last``) with
everything a resumed run needs, the check that a resumed run asks for the same training, and parameter digests."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from torch import nn

from ..errors import ConfigError
from ..model.checkpoint import checkpoint_paths, save_checkpoint
from ..model.config import CellPLMConfig
from .config import RESUME_FREE

BEST = "model"  # <out>/model.config.json + model.best.ckpt
LAST = "last"  # <out>/last.config.json + last.best.ckpt
META_JSON = "pretraining.json"
DIGEST_ENV = "CELLPLM_PRETRAIN_DIGEST_DIR"  # if set, each rank writes rank<r>.sha256 of its final parameters


def model_fields(config: CellPLMConfig) -> dict:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "extra"}


def check_resume(out: Path, model_config: CellPLMConfig, meta: dict, blob: dict) -> None:
    prefix = out / LAST
    saved = CellPLMConfig.load(checkpoint_paths(prefix)[0])
    a, b = model_fields(saved), model_fields(model_config)
    diff = sorted(k for k in a if a[k] != b[k])
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a[k]!r} vs requested {b[k]!r}" for k in diff if k != "gene_list")
        shown = shown or "gene_list"
        raise ConfigError(f"{prefix}: cannot resume, the model config differs ({shown})")
    old = blob.get("pretraining", {})
    old_h, new_h = old.get("hyperparameters", {}), meta["hyperparameters"]
    diff = sorted(k for k in new_h if k not in RESUME_FREE and old_h.get(k) != new_h[k])
    if diff:
        raise ConfigError(
            f"{prefix}: cannot resume, the training settings differ ("
            + ", ".join(f"{k}: checkpoint {old_h.get(k)!r} vs requested {new_h[k]!r}" for k in diff)
            + ")"
        )
    for key, what in (("corpus", "corpus"), ("world_size", "number of processes"), ("precision", "precision")):
        if old.get(key) != meta[key]:
            raise ConfigError(
                f"{prefix}: cannot resume, the {what} differs (checkpoint {old.get(key)!r} vs requested {meta[key]!r})"
            )


def digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def write_digest(model: nn.Module, rank: int) -> None:
    """With ``$CELLPLM_PRETRAIN_DIGEST_DIR`` set, write ``rank<r>.sha256`` of the final parameters there."""
    if os.environ.get(DIGEST_ENV):
        d = Path(os.environ[DIGEST_ENV])
        d.mkdir(parents=True, exist_ok=True)
        (d / f"rank{rank}.sha256").write_text(digest(model) + "\n")


def save_training_checkpoint(
    out: Path,
    model,
    optimizer,
    scheduler,
    *,
    epoch: int,
    step: int,
    best_loss: float,
    best_epoch,
    log_rows: int,
    meta: dict,
) -> None:
    """``<out>/last``: the weights with the optimiser, scheduler and loop state a resumed run continues from."""
    save_checkpoint(
        model,
        out / LAST,
        extra={
            "optimizer_state_dict": optimizer.state_dict(),
            "scheduler_state_dict": scheduler.state_dict(),
            "epoch": epoch,
            "step": step,
            "best_loss": best_loss,
            "best_epoch": best_epoch,
            "log_rows": log_rows,
            "pretraining": meta,
        },
    )


def save_best(out: Path, model, *, meta: dict, epoch: int, step: int, best_loss: float) -> None:
    """``<out>/model``: the best weights so far, ``load_model``-ready."""
    save_checkpoint(
        model, out / BEST, extra={"pretraining": meta, "epoch": epoch, "step": step, "best_loss": best_loss}
    )
