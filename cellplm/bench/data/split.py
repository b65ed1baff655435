"""Train / test / solution files (the OpenProblems label-projection contract).

``published_random_split`` reproduces the scDiff protocol behind the CellPLM README table exactly:
``rng = numpy.random.default_rng(seed)``; ``perm = rng.permutation(range(N))``; cells at
``perm[int(N*train) : int(N*(train+valid))]`` are ``valid``, cells from ``perm[int(N*(train+valid)):]`` are
``test``, the rest ``train``. The seed is 10; 90/0/10 for PBMC12K and Pancreas, 80/10/10 for the CELLxGENE sets,
where a stored ``split`` column holding exactly train/valid/test is reused. Training uses train + valid
(scDiff's ``CellXGeneNotTest``).

``batch_holdout_split`` is a different, harder protocol (whole batches or donors held out for test), labelled
as such in every file it writes.

Files: ``train.h5ad`` (raw counts in ``X`` + ``obs['cell_type']``, ``obs['batch']``, ``obs['is_validation']``),
``test.h5ad`` (counts + ``obs['batch']``, no labels), ``solution.h5ad`` (``obs['cell_type']`` only). Their ``uns``
says how the split was made and, as ``uns['batch_key']``, which column of the dataset ``obs['batch']`` is (the
config's ``batch_key``; "" when the dataset has none), so that a CellPLM row can say what its sentences were
(:func:`describe_sentences`).
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd

from ...keys import BATCH, BATCH_KEY, IS_VALIDATION, LABEL
from ..errors import InputError

PUBLISHED_KEYS = ("train", "valid", "test")


@dataclass
class SplitSpec:
    """One split variant (mirrors a ``splits:`` entry of the config)."""

    name: str
    strategy: str = "random"  # "random" (published protocol) or "batch_holdout"
    seed: int = 10
    use_stored: bool = True  # random: reuse a stored obs['split'] holding exactly train/valid/test
    test_fraction: float = 0.2  # batch_holdout: share of cells (whole batches) to hold out
    validation_fraction: float = 0.1  # carved from train when the split itself has no validation cells
    unseen_test_classes: str = "error"  # or "drop": cell types found only in test

    @classmethod
    def from_config(cls, name: str, cfg: dict) -> "SplitSpec":
        fields = cls.__dataclass_fields__
        return cls(name=name, **{k: v for k, v in cfg.items() if k in fields and k != "name"})


def published_random_split(n: int, fractions: dict, seed: int = 10) -> np.ndarray:
    """Split labels ('train'/'valid'/'test') for ``n`` cells, exactly as scDiff computes them."""
    train, valid = float(fractions["train"]), float(fractions.get("valid", 0.0))
    if abs(train + valid + float(fractions.get("test", 0.0)) - 1) > 1e-9:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(range(n))
    labels = np.full(n, "train", dtype=object)
    labels[perm[int(n * train) : int(n * (train + valid))]] = "valid"
    labels[perm[int(n * (train + valid)) :]] = "test"
    return labels


def batch_holdout_split(batches, test_fraction: float, seed: int) -> np.ndarray:
    """Hold out whole batches (in a seeded random order) until at least ``test_fraction`` of cells are test."""
    batches = pd.Series(np.asarray(batches, dtype=str))
    sizes = batches.value_counts().sort_index()
    if len(sizes) < 2:
        raise ValueError(f"batch hold-out needs at least two batches, found {len(sizes)}")
    order = np.random.default_rng(seed).permutation(sizes.index.to_numpy())
    held, n_held = [], 0
    for b in order[:-1]:  # at least one batch stays in train
        if n_held >= test_fraction * len(batches):
            break
        held.append(b)
        n_held += sizes[b]
    return np.where(batches.isin(held), "test", "train").astype(object)


def assign_split(adata: ad.AnnData, spec: SplitSpec, fractions: dict, path="dataset") -> tuple[np.ndarray, str]:
    """Return per-cell 'train'/'valid'/'test' labels and a description of where they came from."""
    if spec.strategy == "random":
        stored = adata.obs.get("split")
        if spec.use_stored and stored is not None and sorted(pd.unique(stored.astype(str))) == sorted(PUBLISHED_KEYS):
            return stored.astype(str).to_numpy(dtype=object), "stored obs['split'] (reused, as published)"
        labels = published_random_split(adata.n_obs, fractions, spec.seed)
        return labels, (
            f"random cell-level split, numpy default_rng({spec.seed}), "
            f"train/valid/test = {fractions.get('train')}/{fractions.get('valid', 0.0)}/{fractions.get('test')}"
        )
    if spec.strategy == "batch_holdout":
        try:
            labels = batch_holdout_split(adata.obs[BATCH], spec.test_fraction, spec.seed)
        except ValueError as e:
            raise InputError(path, str(e)) from None
        held = sorted(pd.unique(adata.obs[BATCH].astype(str)[labels == "test"]))
        return labels, f"batch hold-out (NOT the published protocol): test batches {', '.join(held)}"
    raise ValueError(f"unknown split strategy {spec.strategy!r}")


def make_split(adata: ad.AnnData, spec: SplitSpec, fractions: dict, path="dataset") -> dict[str, ad.AnnData]:
    """Build the train, test and solution AnnData objects for one split variant."""
    labels, how = assign_split(adata, spec, fractions, path)
    test = labels == "test"
    if not test.any() or test.all():
        raise InputError(path, f"split '{spec.name}' leaves {'no' if not test.any() else 'only'} test cells")
    cell_type = adata.obs[LABEL].astype(str)
    unseen = sorted(set(cell_type[test]) - set(cell_type[~test]))
    dropped_unseen = {}
    if unseen:
        if spec.unseen_test_classes != "drop":
            counts = cell_type[test].value_counts()
            names = ", ".join(f"'{c}' ({counts[c]} cells)" for c in unseen[:3])
            raise InputError(
                path,
                f"split '{spec.name}': cell type {names} occurs only in the test set; "
                "set unseen_test_classes: drop to remove such cells",
            )
        mask = cell_type.isin(unseen).to_numpy() & test
        dropped_unseen = cell_type[mask].value_counts().to_dict()
        test = test & ~mask
        labels = np.where(mask, "dropped", labels)
    train_mask = np.isin(labels, ["train", "valid"])
    is_validation = _validation(labels, spec)

    meta = {
        "dataset_id": str(adata.uns.get("dataset_id", "")),
        "split_id": spec.name,
        "split_strategy": spec.strategy,
        "split_protocol": how,
        "split_seed": int(spec.seed),
        "published_protocol": spec.strategy == "random",
        "n_train": int(train_mask.sum()),
        "n_validation": int(is_validation.sum()),
        "n_test": int(test.sum()),
        "dropped_unseen_test_cells": ", ".join(f"{k} ({v})" for k, v in dropped_unseen.items()) or "none",
    }
    if BATCH_KEY in adata.uns:
        meta[BATCH_KEY] = str(adata.uns[BATCH_KEY])
    train = adata[train_mask].copy()
    train.obs = train.obs[[LABEL, BATCH]].copy()
    train.obs[IS_VALIDATION] = is_validation[train_mask]
    test_ad = adata[test].copy()
    test_ad.obs = test_ad.obs[[BATCH]].copy()
    solution = ad.AnnData(obs=adata.obs.loc[test, [LABEL, BATCH]].copy())
    for part in (train, test_ad, solution):
        part.uns = dict(meta)
    return {"train": train, "test": test_ad, "solution": solution}


def _validation(labels: np.ndarray, spec: SplitSpec) -> np.ndarray:
    """Validation cells: the split's own 'valid' cells, else a seeded share of the train cells."""
    if (labels == "valid").any():
        return labels == "valid"
    train_idx = np.flatnonzero(labels == "train")
    n_val = int(round(spec.validation_fraction * train_idx.size))
    chosen = np.random.default_rng(spec.seed).choice(train_idx, size=n_val, replace=False) if n_val else []
    out = np.zeros(labels.size, dtype=bool)
    out[chosen] = True
    return out


def describe_sentences(uns, n_sentences: int, group_key: str | None = BATCH) -> str:
    """How a CellPLM row grouped its cells into sentences, in words, for its run record (``extra['sentences']``).

    A CellPLM sentence is the cells sharing one value of ``obs[group_key]``; our canonical ``obs['batch']`` is the
    dataset's batch column (config ``batch_key``), which the split files name in ``uns['batch_key']`` (``uns``: the
    split file's). E.g. "one per obs['batch'] value (= dataset column 'tech'; 4 sentences)". ``group_key`` None: the
    cells had no such column, so all of them formed one sentence.
    """
    count = f"{n_sentences} sentence{'' if n_sentences == 1 else 's'}"
    if not group_key:
        return f"all cells in one ({count})"
    if group_key != BATCH:
        return f"one per obs['{group_key}'] value ({count})"
    key = uns.get(BATCH_KEY) if uns is not None else None
    source = (
        "dataset column not recorded in the split files"
        if key is None
        else "the dataset has no batch column: one value for all cells"
        if key == ""
        else f"= dataset column '{key}'"
    )
    return f"one per obs['batch'] value ({source}; {count})"
