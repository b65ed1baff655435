"""ACTINN and SingleCellNet: their transforms on hand-made examples, accuracy, chance level, seeds, the rand class."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import yaml

from cellplm.bench.errors import NotApplicable
from cellplm.bench.methods import metadata, registry
from cellplm.bench.methods.actinn.method import ACTINN, ACTINNNetwork, actinn_gene_filter, actinn_normalise
from cellplm.bench.normalise import log1p_cp10k
from cellplm.bench.methods.singlecellnet.method import (
    SingleCellNet,
    best_pairs,
    gene_stats_filter,
    pair_transform,
    random_profiles,
    template_correlation,
)
from conftest import ROOT, make_counts_adata

FAST_SCN = {"n_trees": 100}


@pytest.fixture(scope="module")
def separable():
    """1,200 cells of 4 clearly different types over 100 genes: 1,000 to train, 200 to test."""
    a = make_counts_adata(n_cells=1200, n_types=4, genes=[f"G{i}" for i in range(100)], seed=3)
    perm = np.random.default_rng(0).permutation(a.n_obs)
    train, test = a[perm[:1000]].copy(), a[perm[1000:]].copy()
    truth = test.obs["cell_type"].astype(str).to_numpy()
    test.obs = test.obs[["batch"]]
    return train, test, truth


def _shuffled(train):
    out = train.copy()
    out.obs["cell_type"] = np.random.default_rng(1).permutation(out.obs["cell_type"].to_numpy())
    return out


# ---- ACTINN ---------------------------------------------------------------------------------------------


def test_actinn_normalise_hand_made():
    X = np.array([[1, 3, 0], [0, 0, 0], [5, 0, 5]], dtype=np.float32)
    expected = np.array([[np.log2(2501), np.log2(7501), 0], [0, 0, 0], [np.log2(5001), 0, np.log2(5001)]])
    np.testing.assert_allclose(actinn_normalise(sp.csr_matrix(X)).toarray(), expected, rtol=1e-6)


def test_actinn_gene_filter_matches_the_papers_dense_recipe():
    rng = np.random.default_rng(0)
    X = rng.poisson(rng.gamma(1.0, 1.0, size=300), size=(80, 300)).astype(np.float32)
    X[:, 7] = 0  # never detected
    X[:, 11] *= 50  # by far the largest total
    norm = actinn_normalise(X).toarray().T.astype(np.float64)  # genes x cells, as actinn_predict.py holds it
    genes = np.arange(300)[norm.sum(axis=1) > 0]
    expr = norm[genes].sum(axis=1)
    genes = genes[(expr >= np.percentile(expr, 1)) & (expr <= np.percentile(expr, 99))]
    cv = norm[genes].std(axis=1) / norm[genes].mean(axis=1)
    genes = genes[(cv >= np.percentile(cv, 1)) & (cv <= np.percentile(cv, 99))]
    mask = actinn_gene_filter(actinn_normalise(X))
    assert np.array_equal(np.flatnonzero(mask), genes)
    assert not mask[7] and not mask[11] and 280 < mask.sum() < 300


def test_actinn_network_layers_init_and_l2():
    torch.manual_seed(0)
    net = ACTINNNetwork(5, 3)
    shapes = [tuple(m.weight.shape) for m in net.linear_layers()]
    assert shapes == [(100, 5), (50, 100), (25, 50), (3, 25)]
    assert all(torch.all(m.bias == 0) for m in net.linear_layers())
    assert sum(isinstance(m, torch.nn.ReLU) for m in net) == 3
    expected = sum(float((m.weight.double() ** 2).sum()) for m in net.linear_layers()) / 2
    assert float(net.l2_penalty()) == pytest.approx(expected, rel=1e-5)
    bound = np.sqrt(6 / (5 + 100))  # Xavier uniform
    assert float(net.linear_layers()[0].weight.abs().max()) <= bound


def test_actinn_learns_separable_types_and_not_shuffled_labels(separable):
    train, test, truth = separable
    model = ACTINN(seed=0).fit(train)
    assert np.mean(model.predict(test) == truth) > 0.95
    assert model.extra["steps"] == 50 * 8 and model.extra["network"] == [model.n_genes_used, 100, 50, 25, 4]
    assert model.extra["loss_last_epoch"] < model.extra["loss_first_epoch"]
    assert "random initialisation" in model.extra["initialisation"]
    chance = ACTINN(seed=0).fit(_shuffled(train))
    assert np.mean(chance.predict(test) == truth) < 0.45  # 4 balanced types: chance is 0.25


def test_actinn_seeded_deterministic_and_sparse_path_equal(separable):
    train, test, _ = separable
    params = {"num_epochs": 3}
    a = ACTINN(seed=5, **params).fit(train).predict_logits(test)
    b = ACTINN(seed=5, **params).fit(train).predict_logits(test)
    c = ACTINN(seed=6, **params).fit(train).predict_logits(test)
    sparse = ACTINN(seed=5, max_dense_gb=0, **params).fit(train)
    assert not sparse.extra["dense_training_matrix"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_allclose(sparse.predict_logits(test), a, rtol=1e-5, atol=1e-5)


def test_actinn_learning_rate_decays_in_steps(separable):
    train, _, _ = separable
    model = ACTINN(seed=0, num_epochs=2, lr_decay_steps=5, learning_rate=1e-3).fit(train)
    assert model.extra["steps"] == 16
    assert model.extra["final_learning_rate"] == pytest.approx(1e-3 * 0.95**3)  # 16 steps // 5


def test_actinn_aligns_test_genes_by_name(separable):
    train, test, _ = separable
    model = ACTINN(seed=0, num_epochs=2).fit(train)
    shuffled = test[:, np.random.default_rng(0).permutation(test.n_vars)].copy()
    np.testing.assert_allclose(model.predict_logits(shuffled), model.predict_logits(test), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no gene of the training data"):
        renamed = test.copy()
        renamed.var_names = [f"X{i}" for i in range(test.n_vars)]
        model.predict(renamed)


def test_actinn_rejects_unknown_parameters(separable):
    with pytest.raises(ValueError, match="unknown ACTINN parameter.*lr "):
        ACTINN(seed=0, lr=0.1).fit(separable[0])


# ---- SingleCellNet --------------------------------------------------------------------------------------


def test_pair_transform_hand_made():
    X = sp.csr_matrix(np.array([[5, 1, 0], [0, 2, 2], [3, 3, 7]], dtype=np.float32))
    index = {"A": 0, "B": 1, "C": 2}
    pairs = [("A", "B"), ("B", "C"), ("C", "A")]
    expected = np.array([[1, 1, 0], [0, 0, 1], [0, 0, 1]])  # ties are not 'greater'
    np.testing.assert_array_equal(pair_transform(X, index, pairs), expected)
    # within-cell comparisons do not change with per-cell normalisation
    np.testing.assert_array_equal(pair_transform(log1p_cp10k(X), index, pairs), expected)


def test_template_correlation_is_pearson():
    rng = np.random.default_rng(0)
    X = rng.poisson(2.0, size=(50, 6)).astype(float)
    X[:, 4] = 3.0  # constant: undefined
    onehot = np.eye(3)[rng.integers(0, 3, size=50)]
    r = template_correlation(sp.csr_matrix(X), onehot)
    for t in range(3):
        for g in (0, 1, 2, 3, 5):
            assert r[t, g] == pytest.approx(np.corrcoef(X[:, g], onehot[:, t])[0, 1], abs=1e-10)
    assert np.isnan(r[:, 4]).all()


def test_best_pairs_respects_scores_and_gene_cap():
    pairs = [("a", "b"), ("a", "c"), ("a", "d"), ("a", "e"), ("b", "c"), ("d", "e")]
    scores = np.array([0.9, 0.8, 0.7, 0.95, np.nan, 0.1])
    assert best_pairs(scores, pairs, n_pairs=3, max_per_gene=2) == [("a", "e"), ("a", "b"), ("d", "e")]
    assert best_pairs(scores, pairs, n_pairs=10, max_per_gene=3) == [("a", "e"), ("a", "b"), ("a", "c"), ("d", "e")]


def test_random_profiles_shuffle_cells_and_pairs():
    rng = np.random.default_rng(0)
    F = (rng.random((40, 9)) < 0.3).astype(np.float32)
    R = random_profiles(F, 40, np.random.default_rng(1))
    assert R.shape == F.shape and R.sum() == F.sum() and not np.array_equal(R, F)
    np.testing.assert_array_equal(R, random_profiles(F, 40, np.random.default_rng(1)))
    assert random_profiles(F, 70, rng).shape == (70, 9)


def test_gene_stats_filter_hand_made():
    L = np.zeros((100, 4))
    L[:10, 0] = 1.0  # detected in 10%: kept (alpha > alpha1)
    L[:1, 1] = 5.0  # 1%, high where detected: kept (alpha > alpha2 and mu > 2)
    L[:1, 2] = 1.0  # 1%, low: dropped
    assert gene_stats_filter(sp.csr_matrix(L), 0.05, 0.001, 2.0).tolist() == [True, True, False, False]


def test_singlecellnet_learns_separable_types_and_not_shuffled_labels(separable):
    train, test, truth = separable
    model = SingleCellNet(seed=0, **FAST_SCN).fit(train)
    assert np.mean(model.predict(test) == truth) > 0.95
    assert "rand" in model.forest_.classes_ and model.extra["n_rand_profiles"] == 70
    assert 0 < model.extra["n_pairs"] <= 4 * 25 and model.n_genes_used <= 4 * 20
    assert all(a != b for a, b in model.pairs_)
    chance = SingleCellNet(seed=0, **FAST_SCN).fit(_shuffled(train))
    assert np.mean(chance.predict(test) == truth) < 0.45


def test_singlecellnet_calls_random_cells_rand(separable):
    train, test, _ = separable
    model = SingleCellNet(seed=0, n_rand=300, **FAST_SCN).fit(train)
    noise = test.copy()
    rng = np.random.default_rng(2)
    noise.X = sp.csr_matrix(rng.permuted(noise.X.toarray(), axis=1))  # each cell's counts scattered over genes
    pred = model.predict(noise)
    assert (pred == "rand").mean() > 0.5 and model.extra["n_predicted_rand"] == (pred == "rand").sum()
    assert (model.predict(test) == "rand").sum() == 0
    best = SingleCellNet(seed=0, n_rand=300, unassigned="best_type", **FAST_SCN).fit(train)
    pred_best = best.predict(noise)
    assert "rand" not in set(pred_best) and best.extra["n_predicted_rand"] == 0
    assert set(pred_best) <= set(train.obs["cell_type"])


def test_singlecellnet_seeded_and_reserved_name(separable):
    train, test, _ = separable
    p1 = SingleCellNet(seed=3, **FAST_SCN).fit(train).predict_proba(test)[0]
    p2 = SingleCellNet(seed=3, **FAST_SCN).fit(train).predict_proba(test)[0]
    p3 = SingleCellNet(seed=4, **FAST_SCN).fit(train).predict_proba(test)[0]
    np.testing.assert_array_equal(p1, p2)
    assert not np.array_equal(p1, p3)
    bad = train.copy()
    bad.obs["cell_type"] = bad.obs["cell_type"].astype(str).replace("type0", "rand")
    with pytest.raises(NotApplicable, match="reserved"):
        SingleCellNet(seed=0, **FAST_SCN).fit(bad)
    with pytest.raises(ValueError, match="unassigned must be"):
        SingleCellNet(seed=0, unassigned="drop").fit(train)


def test_singlecellnet_dance_settings_change_what_is_built(separable):
    """DANCE's settings (method.yaml alternative_params.dance) are known params and change the forest: 100 rand
    profiles instead of 70, balanced class weights, no HVG step; 1,000 trees as DANCE's example passes."""
    dance = metadata("singlecellnet")["alternative_params"]["dance"]
    assert dance == {"n_trees": 1000, "n_rand": 100, "stratify": True, "limit_to_hvg": False}
    train, test, truth = separable
    ours = SingleCellNet(seed=0, **FAST_SCN).fit(train)
    theirs = SingleCellNet(seed=0, **dance).fit(train)
    assert (ours.extra["n_rand_profiles"], theirs.extra["n_rand_profiles"]) == (70, 100)
    assert (ours.forest_.class_weight, theirs.forest_.class_weight) == (None, "balanced")
    assert isinstance(ours.extra["n_hvg"], int) and theirs.extra["n_hvg"] is None
    assert len(theirs.forest_.estimators_) == 1000 and len(ours.forest_.estimators_) == 100
    assert np.mean(theirs.predict(test) == truth) > 0.95


# ---- wiring ---------------------------------------------------------------------------------------------


def test_method_folders_match_the_classes():
    published = set(pd.read_csv(ROOT / "config/published_scores.tsv", sep="\t", comment="#")["method"])
    for mid, cls in (("actinn", ACTINN), ("singlecellnet", SingleCellNet)):
        cfg = metadata(mid)
        assert registry()[mid] is cls and cls.metadata() == cfg and cfg["published_as"] in published
        assert set(cfg.get("test_params", {})) <= set(cfg["params"]), mid  # every option has its default there
        assert (ROOT / cfg["env"]).is_file()
        for config in ("config/config.yaml", "config/demo.yaml"):
            assert mid in yaml.safe_load((ROOT / config).read_text())["run"]["methods"], config


@pytest.mark.parametrize("method, name", [("actinn", "ACTINN"), ("singlecellnet", "SingleCellNet")])
def test_method_help(method, name):
    env = {"PYTHONPATH": str(ROOT), "PYTHONSAFEPATH": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "cellplm.bench.methods", method, "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    text = " ".join(out.stdout.split()).replace("re- implementation", "re-implementation")  # argparse wraps
    assert "--prediction" in text and f"re-implementation of {name}" in text and "this project's" in text
