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

Modules, one per concept: :mod:`.config` (the settings), :mod:`.options` (the command line, defined once; no
torch), :mod:`.corpus`, :mod:`.seeding` (random streams: the resume state is the step alone),
:mod:`.distributed`, :mod:`.objective` (loss and schedule), :mod:`.loss_log`, :mod:`.checkpoints`, :mod:`.loop`
(the training loop) and :mod:`.cli`. The names below are imported on first use, so that :mod:`.options` is
importable without torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "PretrainConfig": ".config",
    "CorpusItem": ".corpus",
    "balanced_partition": ".distributed",
    "pretrain": ".loop",
    "PretrainResult": ".loop",
    "add_arguments": ".options",
    "config_args": ".options",
    "run_from_args": ".cli",
    "main": ".cli",
    "BEST": ".checkpoints",
    "LAST": ".checkpoints",
    "META_JSON": ".checkpoints",
    "DIGEST_ENV": ".checkpoints",
    "LOSS_LOG": ".loss_log",
    "LOG_COLUMNS": ".loss_log",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
