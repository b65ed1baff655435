"""``cellplm pretrain`` / ``python -m cellplm.pretrain``: the options of :mod:`.options` to a pretraining run."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ..errors import CellPLMError
from .config import PretrainConfig
from .options import build_parser


def run_from_args(args: argparse.Namespace) -> int:
    from ..model.config import config_for_shape
    from .loop import pretrain

    try:
        cfg = PretrainConfig(
            epochs=args.epochs,
            lr=args.lr,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
            schedule=args.schedule,
            clip=args.clip,
            seed=args.seed,
            device=args.device,
            precision=args.precision,
            sentence_key=args.sentence_key,
            spatial_key=args.spatial_key,
            layer=args.layer,
            max_cells_per_sentence=args.max_cells_per_sentence,
            val_sentences=args.val_sentences,
            checkpoint_every=args.checkpoint_every,
            max_steps=args.max_steps,
            backed=args.backed,
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
    from . import __doc__ as doc

    args = build_parser(description=doc.splitlines()[0]).parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(message)s",
    )
    return run_from_args(args)
