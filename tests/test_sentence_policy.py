"""Sentence policies (cellplm.sentence_policy): which cells CellPLM reads together, in embedding and prediction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cellplm.data import match_genes
from cellplm.embed import embed_cells, load_embedder
from cellplm.errors import NotApplicable
from cellplm.finetune import CellTypeAnnotator
from cellplm.model.sentence import Sentence
from cellplm.sentence_policy import SentencePolicy
from test_cellplm import vocab_data

BATCHES = np.array(["a"] * 10 + ["b"] * 7 + ["a"] * 3)  # 13 cells of batch a, 7 of b, interleaved


def _check_partition(groups, n):
    cells = np.concatenate(groups)
    assert sorted(cells.tolist()) == list(range(n)), "every cell in exactly one sentence"
    assert all((np.diff(g) > 0).all() for g in groups), "sentences are sorted positions"


def test_parse_names_and_errors():
    assert SentencePolicy.parse("batch") == SentencePolicy("batch")
    assert SentencePolicy.parse("random:1") == SentencePolicy("single", 1) == SentencePolicy.parse("single")
    p = SentencePolicy.parse("random:16", seed=3)
    assert (str(p), p.slug, p.k, p.seed) == ("random:16", "random16", 16, 3)
    assert p.describe() == {"policy": "random:16", "kind": "random", "k": 16, "seed": 3}
    assert SentencePolicy.parse("spatial:8").describe()["seed"] is None  # not a random policy
    for bad in ("random", "random:0", "mixed:x", "batch:4", "nearest:4", ""):
        with pytest.raises(ValueError, match="sentence policy"):
            SentencePolicy.parse(bad)


def test_batch_and_random_sentences_stay_within_a_batch():
    batch = SentencePolicy.parse("batch").groups(BATCHES)
    assert [g.tolist() for g in batch] == [[*range(10), 17, 18, 19], list(range(10, 17))]
    groups = SentencePolicy.parse("random:4", seed=0).groups(BATCHES)
    _check_partition(groups, 20)
    assert sorted(len(g) for g in groups) == [1, 3, 4, 4, 4, 4]  # a: 4+4+4+1, b: 4+3
    assert all(len(set(BATCHES[g])) == 1 for g in groups)
    again = SentencePolicy.parse("random:4", seed=0).groups(BATCHES)
    other = SentencePolicy.parse("random:4", seed=1).groups(BATCHES)
    assert [g.tolist() for g in again] == [g.tolist() for g in groups]
    assert [g.tolist() for g in other] != [g.tolist() for g in groups]


def test_single_and_mixed_sentences():
    single = SentencePolicy.parse("single").groups(BATCHES)
    assert [g.tolist() for g in single] == [[i] for i in range(20)]
    mixed = SentencePolicy.parse("mixed:10", seed=0).groups(BATCHES)
    _check_partition(mixed, 20)
    assert [len(g) for g in mixed] == [10, 10]
    assert any(len(set(BATCHES[g])) == 2 for g in mixed), "mixed sentences draw across batches"


def test_spatial_sentences_are_the_nearest_cells():
    # two tissues; in each, four tight clusters of four cells at the corners of a square, given in shuffled order
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [0, 100], [100, 0], [100, 100]], dtype=float)
    xy = np.concatenate([np.repeat(centres, 4, axis=0) + rng.normal(0, 1, (16, 2)) for _ in range(2)])
    cluster = np.tile(np.repeat(np.arange(4), 4), 2) + np.repeat([0, 4], 16)
    order = rng.permutation(32)
    xy, cluster, batches = xy[order], cluster[order], np.repeat(["t0", "t1"], 16)[order]
    groups = SentencePolicy.parse("spatial:4").groups(batches, xy)
    _check_partition(groups, 32)
    assert sorted(tuple(sorted(cluster[g])) for g in groups) == [(c,) * 4 for c in range(8)]
    # on a uniform tissue, spatial sentences are compact: closer cells than random sentences of the same size
    xy = rng.uniform(0, 1000, (500, 2))
    one = np.zeros(500)

    def spread(groups):
        return np.mean([np.linalg.norm(xy[g] - xy[g].mean(0), axis=1).mean() for g in groups if len(g) > 1])

    spatial = SentencePolicy.parse("spatial:16").groups(one, xy)
    _check_partition(spatial, 500)
    assert sorted(len(g) for g in spatial)[1:] == [16] * 31  # one remainder sentence (4 cells)
    assert spread(spatial) < 0.3 * spread(SentencePolicy.parse("random:16").groups(one))
    with pytest.raises(ValueError, match="coordinates"):
        SentencePolicy.parse("spatial:16").groups(one)


@pytest.fixture(scope="module")
def embedder(tiny_checkpoint):
    return load_embedder(tiny_checkpoint)[0]


def _embed(adata, model, policy="batch"):
    return embed_cells(adata, model, policy=policy, progress=False, precision="fp32")


def test_single_makes_each_cell_independent_of_the_others(embedder):
    a = vocab_data(n_cells=60, seed=1)
    first = _embed(a, embedder, "single").embedding
    changed = a.copy()
    changed.X = changed.X.copy()
    changed.X[1:] = changed.X[1:] * 3  # every other cell's counts change
    changed = changed[np.r_[0, 5:60]].copy()  # and some cells leave
    for policy, independent in (("single", True), ("batch", False)):
        before = first if policy == "single" else _embed(a, embedder, "batch").embedding
        after = _embed(changed, embedder, policy).embedding
        assert np.array_equal(after[0], before[0]) == independent, policy  # cell 0 alone sees no other cell
    # and one cell's embedding under single is the one a one-cell sentence gives
    record = _embed(a, embedder, "single")
    assert record.info["n_sentences"] == 60
    assert record.info["sentence_policy"] == {
        "policy": "single",
        "kind": "single",
        "k": 1,
        "seed": None,
        "mean_cells": 1.0,
    }
    np.testing.assert_array_equal(_embed(a[[7]].copy(), embedder).embedding[0], first[7])


def test_batch_is_todays_embedding(embedder):
    """The batch policy gives exactly what one sentence per batch, built by hand, gives (today's embeddings)."""
    a = vocab_data(n_cells=90, seed=2, batches=3)
    got = _embed(a, embedder, "batch")
    assert got.info["n_sentences"] == 3
    match = match_genes(a.var, a.var_names, embedder.config.gene_list)
    want = np.zeros_like(got.embedding)
    with torch.inference_mode():
        for b in a.obs["batch"].unique():
            idx = np.flatnonzero((a.obs["batch"] == b).to_numpy())
            sentence = Sentence.from_csr(a.X[idx], match.vocab_index, embedder.config.n_genes)
            want[idx] = embedder.embed(sentence).z.numpy()
    np.testing.assert_array_equal(got.embedding, want)
    assert not np.array_equal(_embed(a, embedder, "random:8").embedding, want), "another context, other numbers"


def test_spatial_policy_needs_coordinates(embedder):
    a = vocab_data(n_cells=40, seed=3)
    with pytest.raises(NotApplicable, match="obsm\\['spatial'\\]"):
        _embed(a, embedder, "spatial:8")
    a.obsm["spatial"] = np.random.default_rng(0).uniform(0, 100, (40, 2))
    out = _embed(a, embedder, "spatial:8")
    assert out.info["n_sentences"] == 6  # two batches of about 20 cells: 8 + 8 + remainder each
    assert out.info["sentence_policy"]["k"] == 8


def test_finetuned_predictions_under_other_sentences():
    a = vocab_data(n_cells=240, seed=4)
    order = np.random.default_rng(0).permutation(a.n_obs)
    train, test = a[order[:180]].copy(), a[order[180:]].copy()
    train.obs["is_validation"] = np.arange(train.n_obs) < 20
    test.obs = test.obs[["batch"]]
    model = CellTypeAnnotator(shape="tiny", max_epochs=8, warmup_epochs=2, progress=False, precision="fp32")
    model.fit(train, unlabelled=test)
    trained = model.predict(test)
    # batch sentences with the training cells as context are the transductive prediction again
    assert (model.predict(test, sentences="batch", context=train) == trained).all()
    # single: each cell's label does not depend on the other test cells
    single = model.predict(test, sentences="single")
    assert (model.predict(test[:5].copy(), sentences="single") == single[:5]).all()
    # without context: the inductive prediction (batch sentences of the test cells alone)
    alone = model.predict(test, sentences="batch")
    assert alone.shape == (60,) and set(alone) <= set(model.classes_)
    shuffled = model.predict(test, sentences=SentencePolicy.parse("random:16", seed=1), context=train)
    assert shuffled.shape == (60,)
    assert isinstance(model.predict(test, sentences="single"), np.ndarray)
    with pytest.raises(NotApplicable):
        model.predict(test, sentences="spatial:4")
    assert pd.Series(single).isin(model.classes_).all()
