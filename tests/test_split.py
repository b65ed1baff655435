"""Splits: the published seed-10 protocol exactly, stored splits, validation carve, contracts, batch hold-out."""

import numpy as np
import pytest

from cellplm.bench.errors import InputError
from cellplm.bench.data.split import SplitSpec, batch_holdout_split, make_split, published_random_split
from conftest import make_counts_adata

# numpy.random.default_rng(10).permutation(25), written out so that the test fails if the protocol changes
PERM25 = [7, 9, 11, 5, 17, 23, 19, 6, 1, 4, 15, 18, 10, 22, 14, 3, 16, 2, 12, 20, 8, 21, 0, 13, 24]


def test_published_split_pbmc12k_pancreas_fractions():
    labels = published_random_split(20, {"train": 0.9, "valid": 0.0, "test": 0.1}, seed=10)
    # perm = [9, 5, 16, 14, 11, 7, 6, 1, 4, 15, 10, 19, 3, 18, 2, 12, 17, 8, 0, 13]; test = perm[18:]
    assert sorted(np.flatnonzero(labels == "test")) == [0, 13]
    assert (labels == "valid").sum() == 0 and (labels == "train").sum() == 18


def test_published_split_cellxgene_fractions():
    labels = published_random_split(25, {"train": 0.8, "valid": 0.1, "test": 0.1}, seed=10)
    # valid = perm[int(25*0.8):int(25*(0.8+0.1))] = perm[20:22]; test = perm[22:]
    assert sorted(np.flatnonzero(labels == "valid")) == sorted(PERM25[20:22]) == [8, 21]
    assert sorted(np.flatnonzero(labels == "test")) == sorted(PERM25[22:]) == [0, 13, 24]


def test_other_seed_differs():
    a = published_random_split(100, {"train": 0.9, "valid": 0.0, "test": 0.1}, seed=10)
    b = published_random_split(100, {"train": 0.9, "valid": 0.0, "test": 0.1}, seed=11)
    assert not np.array_equal(a, b)


def canonical(n=60, n_types=3, batches=3):
    a = make_counts_adata(n_cells=n, n_types=n_types, batches=batches)
    a.uns["dataset_id"] = "toy"
    return a


def test_file_contract_and_validation():
    parts = make_split(canonical(), SplitSpec("published"), {"train": 0.9, "valid": 0.0, "test": 0.1})
    train, test, solution = parts["train"], parts["test"], parts["solution"]
    assert "cell_type" not in test.obs.columns  # methods never see test labels
    assert list(solution.obs.columns) == ["cell_type", "batch"] and solution.n_vars == 0
    assert solution.obs_names.equals(test.obs_names)
    assert set(train.obs_names).isdisjoint(test.obs_names) and train.n_obs + test.n_obs == 60
    assert train.obs["is_validation"].sum() == round(0.1 * train.n_obs)  # carved from train, seeded
    again = make_split(canonical(), SplitSpec("published"), {"train": 0.9, "valid": 0.0, "test": 0.1})
    assert again["train"].obs["is_validation"].equals(train.obs["is_validation"])
    assert train.uns["published_protocol"] and train.uns["split_seed"] == 10
    assert "default_rng(10)" in test.uns["split_protocol"]


def test_stored_split_is_reused():
    a = canonical()
    a.obs["split"] = np.where(np.arange(60) < 48, "train", np.where(np.arange(60) < 54, "valid", "test"))
    parts = make_split(a, SplitSpec("published"), {"train": 0.8, "valid": 0.1, "test": 0.1})
    assert list(parts["test"].obs_names) == [f"cell{i}" for i in range(54, 60)]
    assert parts["train"].obs["is_validation"].sum() == 6  # the stored valid cells
    assert "stored obs['split']" in parts["train"].uns["split_protocol"]


def test_batch_holdout_is_labelled_and_holds_out_whole_batches():
    parts = make_split(
        canonical(batches=4),
        SplitSpec("donor", strategy="batch_holdout", seed=0, test_fraction=0.3),
        {"train": 0.9, "valid": 0.0, "test": 0.1},
    )
    test_batches = set(parts["test"].obs["batch"])
    assert test_batches.isdisjoint(parts["train"].obs["batch"])
    assert not parts["train"].uns["published_protocol"]
    assert "NOT the published protocol" in parts["train"].uns["split_protocol"]


def test_batch_holdout_needs_two_batches():
    with pytest.raises(ValueError, match="at least two batches"):
        batch_holdout_split(["a"] * 10, 0.2, 0)


def test_class_only_in_test():
    a = canonical(n=30)
    fractions = {"train": 0.9, "valid": 0.0, "test": 0.1}
    test_cells = np.flatnonzero(published_random_split(30, fractions, seed=10) == "test")
    a.obs["cell_type"] = a.obs["cell_type"].astype(str)
    a.obs.iloc[test_cells[0], a.obs.columns.get_loc("cell_type")] = "unseen"
    spec = SplitSpec("published")
    with pytest.raises(InputError, match="cell type 'unseen' \\(1 cells\\) occurs only in the test set") as e:
        make_split(a, spec, fractions, path="toy.h5ad")
    assert str(e.value).startswith("toy.h5ad: split 'published'")
    spec.unseen_test_classes = "drop"
    parts = make_split(a, spec, fractions, path="toy.h5ad")
    assert parts["test"].n_obs == len(test_cells) - 1 and "unseen" not in set(parts["solution"].obs["cell_type"])
    assert parts["test"].uns["dropped_unseen_test_cells"] == "unseen (1)"


def test_split_files_name_the_batch_column_and_the_sentences_say_it():
    """Preprocessing records which dataset column obs['batch'] is (uns['batch_key']); the split files carry it, and
    a CellPLM row's sentence note names it."""
    from cellplm.bench.data.split import describe_sentences

    a = make_counts_adata(n_cells=60)
    a.uns.update(dataset_id="toy", batch_key="tech")
    parts = make_split(a, SplitSpec("published"), {"train": 0.8, "valid": 0.1, "test": 0.1})
    assert {part.uns["batch_key"] for part in parts.values()} == {"tech"}
    assert describe_sentences(parts["train"].uns, 4) == (
        "one per obs['batch'] value (= dataset column 'tech'; 4 sentences)"
    )
    assert describe_sentences({"batch_key": ""}, 1) == (
        "one per obs['batch'] value (the dataset has no batch column: one value for all cells; 1 sentence)"
    )
    assert describe_sentences({}, 2) == (
        "one per obs['batch'] value (dataset column not recorded in the split files; 2 sentences)"
    )
    assert describe_sentences({}, 1, None) == "all cells in one (1 sentence)"
    del a.uns["batch_key"]  # a canonical file written before the key existed: the split files say nothing
    parts = make_split(a, SplitSpec("published"), {"train": 0.8, "valid": 0.1, "test": 0.1})
    assert "batch_key" not in parts["train"].uns
