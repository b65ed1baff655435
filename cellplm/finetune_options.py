"""The fine-tuning options, defined once: :class:`FinetuneConfig`, what :class:`cellplm.finetune.CellTypeAnnotator`
takes, with the help text of each option, and the ``cellplm finetune`` command line built from it
(:func:`add_arguments`, :func:`from_args`), so that the two cannot drift apart, as the pretraining command line is
built from its options (:mod:`cellplm.pretrain.options`).

Standard library only (no torch): the command line builds its parser from it.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, dataclass, field, fields

from .keys import BATCH, IS_VALIDATION
from .model.config import SHAPES
from .runtime import PRECISIONS


def _option(default, text: str, flag: str | None = None, choices=None):
    """A field of :class:`FinetuneConfig` and what its command-line option says. ``flag``: the switch of a field
    whose default is true and that the switch turns off (``--inductive`` for ``transductive``)."""
    return field(default=default, metadata={"help": text, "flag": flag, "choices": choices})


@dataclass
class FinetuneConfig:
    n_hvg: int = _option(
        3000, "seurat_v3 HVGs on all cells seen in fit (then intersected with the vocabulary); 0 = all genes"
    )
    transductive: bool = _option(
        True,
        "keep test cells out of the training sentences (default: they are in them, as context, as upstream does)",
        flag="--inductive",
    )
    lr: float = _option(5e-3, "learning rate of the encoder, latent and head")
    embedder_lr_scale: float = _option(0.1, "embedder learning rate = lr x this")
    weight_decay: float = _option(1e-7, "weight decay of the encoder, latent and head")
    embedder_weight_decay: float = _option(1e-10, "weight decay of the embedder")
    warmup_epochs: int = _option(30, "epochs of linear warm-up of the main group")
    max_epochs: int = _option(2000, "at most this many epochs (upstream's)")
    patience: int = _option(200, "early stopping: stop this many epochs after the best validation macro-F1")
    plateau_patience: int = _option(25, "ReduceLROnPlateau patience on the training loss, stepped every step")
    plateau_factor: float = _option(0.95, "ReduceLROnPlateau factor")
    clip: float = _option(2.0, "max gradient norm")
    dropout: float = _option(0.5, "dropout")
    eval_every: int = _option(1, "validation pass every k epochs (upstream: every epoch)")
    valid_fraction: float = _option(
        0.1, f"share of the training cells held out for validation when the training data has no obs['{IS_VALIDATION}']"
    )
    group_key: str = _option(
        BATCH, "obs column whose values are the sentences (tissues); missing column = one sentence"
    )
    min_gene_share: float = _option(0.3, "refuse (exit 3, not applicable) below this share of genes in the vocabulary")
    min_count_share: float = _option(0.5, "... or below this share of counts")
    shape: str = _option("85M", "model shape without a checkpoint (random initialisation)", choices=tuple(SHAPES))
    device: str = _option("auto", "auto (CUDA if visible, else CPU), cpu, cuda, cuda:1 ...")
    precision: str = _option(
        "auto",
        "matrix-product precision: auto = bf16 where the hardware has native bf16, else fp32 (upstream's arithmetic)",
        choices=PRECISIONS,
    )
    seed: int = _option(0, "random seed (torch, numpy, the validation hold-out)")
    progress: bool = _option(True, "no progress bars", flag="--no-progress")


def _flag(f: Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add one option per field of :class:`FinetuneConfig` to ``parser``: ``--max-epochs`` for ``max_epochs``, its
    type and default the field's; a true-by-default field is turned off by its ``flag``."""
    for f in fields(FinetuneConfig):
        help_, default = f.metadata["help"], f.default
        if default is MISSING:
            raise TypeError(f"FinetuneConfig.{f.name} has no default")
        if isinstance(default, bool):
            action = "store_false" if default else "store_true"
            parser.add_argument(_flag(f), dest=f.name, action=action, help=help_)
        else:
            parser.add_argument(
                _flag(f),
                dest=f.name,
                type=type(default),
                default=default,
                choices=f.metadata.get("choices"),
                help=f"{help_} (default: {default})",
            )
    return parser


def from_args(args: argparse.Namespace) -> dict:
    """The :class:`FinetuneConfig` options of parsed arguments (keyword arguments of ``CellTypeAnnotator``)."""
    return {f.name: getattr(args, f.name) for f in fields(FinetuneConfig)}
