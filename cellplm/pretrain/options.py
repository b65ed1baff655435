"""The pretraining command line, defined once: the parser of ``cellplm pretrain`` / ``python -m cellplm.pretrain``
and :func:`config_args`, which turns a settings mapping (the workflow config's ``cellplm.pretrain`` section) into
the arguments of that command, are both built from :data:`OPTIONS`, so the two cannot drift apart.

Standard library only (no torch): Snakemake imports this module while it parses the workflow.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..keys import BATCH
from ..model.config import SHAPES
from ..runtime import PRECISIONS
from .config import PretrainConfig

_D = PretrainConfig()


@dataclass(frozen=True)
class Option:
    flag: str  # "--warmup-steps"; its key in a settings mapping is "warmup_steps"
    kwargs: dict = field(default_factory=dict)  # argparse.add_argument keyword arguments

    @property
    def key(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def is_switch(self) -> bool:
        return self.kwargs.get("action") == "store_true"


OPTIONS: tuple[Option, ...] = (
    Option("--out", dict(required=True, help="output folder (model.*, last.*, loss.tsv, pretraining.json)")),
    Option("--shape", dict(default="small", choices=list(SHAPES), help="model shape (default: small)")),
    Option("--epochs", dict(type=int, default=_D.epochs)),
    Option("--lr", dict(type=float, default=_D.lr)),
    Option("--weight-decay", dict(type=float, default=_D.weight_decay)),
    Option("--warmup-steps", dict(type=int, default=_D.warmup_steps)),
    Option("--schedule", dict(choices=("constant", "cosine"), default=_D.schedule, help="after warm-up")),
    Option("--clip", dict(type=float, default=_D.clip, help="max gradient norm (0: off)")),
    Option("--seed", dict(type=int, default=_D.seed)),
    Option("--device", dict(default=_D.device)),
    Option("--precision", dict(choices=PRECISIONS, default=_D.precision)),
    Option("--sentence-key", dict(default=_D.sentence_key, help="obs column of sentences (sample / field of view)")),
    Option("--spatial-key", dict(default=_D.spatial_key, help="obsm key of cell coordinates")),
    Option("--spatial-pe", dict(action="store_true", help="build the model with the 2-D spatial encoding")),
    Option("--layer", dict(default=_D.layer, help="layer with raw counts")),
    Option("--max-cells-per-sentence", dict(type=int, default=_D.max_cells_per_sentence)),
    Option("--val-sentences", dict(type=int, default=_D.val_sentences)),
    Option("--checkpoint-every", dict(type=int, default=_D.checkpoint_every)),
    Option("--max-steps", dict(type=int, default=None, help="stop after this many steps (resume continues)")),
    Option("--resume", dict(action="store_true", help="continue from <out>/last if present")),
    Option("--backed", dict(action="store_true", help="read h5ad files backed (bounded memory)")),
    Option("--no-progress", dict(action="store_true")),
)
BY_KEY = {o.key: o for o in OPTIONS}

# The settings of the workflow config's cellplm.pretrain section that are options of the command, with the
# options the workflow always passes (None: taken from the section): its corpus files hold sentences in
# obs['batch'] and coordinates in obsm['spatial']; a job's log has no use for progress bars. In this order, the
# order of the command line the workflow has always written (a changed command line would rerun its jobs).
WORKFLOW_SETTINGS = {
    "shape": None,
    "epochs": None,
    "seed": None,
    "lr": None,
    "warmup_steps": None,
    "max_cells_per_sentence": None,
    "val_sentences": None,
    "device": None,
    "precision": None,
    "sentence_key": BATCH,
    "spatial_key": "spatial",
    "no_progress": True,
    "spatial_pe": None,
    "resume": None,
}
WORKFLOW_KEYS = tuple(k for k, fixed in WORKFLOW_SETTINGS.items() if fixed is None)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the corpus and every option of :data:`OPTIONS` to ``parser``."""
    parser.add_argument("corpus", nargs="+", help="h5ad files of raw counts (one corpus item each)")
    for option in OPTIONS:
        parser.add_argument(option.flag, **option.kwargs)
    return parser


def to_args(settings: Mapping[str, Any]) -> list[str]:
    """Command-line arguments for ``settings`` (keys: option names with underscores, e.g. ``warmup_steps``).

    A switch is passed when its value is true; an option whose value is None is left out (its default applies).
    Unknown keys raise KeyError.
    """
    args: list[str] = []
    for key, value in settings.items():
        option = BY_KEY[key]
        if option.is_switch:
            args += [option.flag] if value else []
        elif value is not None:
            args += [option.flag, str(value)]
    return args


def config_args(section: Mapping[str, Any]) -> list[str]:
    """The ``cellplm pretrain`` arguments (all but the corpus and ``--out``) of the workflow config's
    ``cellplm.pretrain`` section: its keys in :data:`WORKFLOW_KEYS` (other keys, such as ``corpus``, ``threads`` or
    ``gpu``, are the workflow's) and the fixed ones of :data:`WORKFLOW_SETTINGS`. Join them with
    :func:`shlex.join` for a shell line."""
    missing = [k for k in WORKFLOW_KEYS if k not in section]
    if missing:
        raise KeyError(f"cellplm.pretrain: missing {', '.join(missing)}")
    return to_args({k: section[k] if fixed is None else fixed for k, fixed in WORKFLOW_SETTINGS.items()})


def build_parser(prog: str = "cellplm pretrain", description: str | None = None) -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog=prog, description=description))
