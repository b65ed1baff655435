"""scDiff (cellplm/bench/methods/scdiff): the diffusion process against its formulas computed by hand, the
classifier on a toy it must get right, the network's conditioning and masking, and the method's contract."""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from cellplm.bench.harness import seed_everything
from cellplm.bench.methods.base import RunIds, run
from cellplm.bench.methods.scdiff.classifier import classify, uniform_time_steps
from cellplm.bench.methods.scdiff.diffusion import GaussianDiffusion, linear_betas, x0_loss
from cellplm.bench.methods.scdiff.method import ScDiff
from cellplm.bench.methods.scdiff.model import ScDiffDenoiser, timestep_embedding
from cellplm.keys import BATCH, LABEL

TINY = {"embed_dim": 16, "depth": 2, "num_heads": 2, "dim_head": 8, "batch_size": 64, "max_epochs": 3}


def test_schedule_q_sample_and_posterior_by_hand():
    """T = 3, betas from sqrt-linspace(1e-4, 0.02) squared, as latent diffusion's "linear" schedule."""
    s, e = math.sqrt(1e-4), math.sqrt(0.02)
    betas = [s**2, ((s + e) / 2) ** 2, e**2]
    assert np.allclose(linear_betas(3, 1e-4, 0.02), betas, rtol=1e-12)
    a = [1 - b for b in betas]
    abar = [a[0], a[0] * a[1], a[0] * a[1] * a[2]]
    diff = GaussianDiffusion(3, 1e-4, 0.02)

    x0 = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    noise = torch.tensor([[0.3, -0.2], [1.0, 0.0]])
    t = torch.tensor([2, 0])
    xt = diff.q_sample(x0, t, noise)
    by_hand = [
        [math.sqrt(abar[2]) * v + math.sqrt(1 - abar[2]) * n for v, n in zip([1.0, 2.0], [0.3, -0.2])],
        [math.sqrt(abar[0]) * v + math.sqrt(1 - abar[0]) * n for v, n in zip([0.5, -1.0], [1.0, 0.0])],
    ]
    assert torch.allclose(xt, torch.tensor(by_hand), atol=1e-6)

    mean, var, logvar = diff.q_posterior(x0, xt, t)
    # t = 2: coef1 = beta_2 sqrt(abar_1) / (1 - abar_2), coef2 = (1 - abar_1) sqrt(a_2) / (1 - abar_2)
    c1 = betas[2] * math.sqrt(abar[1]) / (1 - abar[2])
    c2 = (1 - abar[1]) * math.sqrt(a[2]) / (1 - abar[2])
    assert torch.allclose(mean[0], c1 * x0[0] + c2 * xt[0], atol=1e-6)
    assert var[0].item() == pytest.approx(betas[2] * (1 - abar[1]) / (1 - abar[2]), rel=1e-5)
    # t = 0: alpha_bar_{-1} = 1, so the posterior is x0 itself with variance 0 (log clipped at 1e-20)
    assert torch.allclose(mean[1], x0[1], atol=1e-6) and var[1].item() == 0.0
    assert logvar[1].item() == pytest.approx(math.log(1e-20))


def test_x0_loss_is_the_gene_mean_then_cell_mean_of_squared_errors():
    pred = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    x0 = torch.tensor([[1.0, 0.0, 3.0], [1.0, 1.0, 4.0]])
    assert x0_loss(pred, x0).item() == pytest.approx(((4 / 3) + (18 / 3)) / 2)


def test_classifier_time_steps_are_upstreams_grid():
    assert uniform_time_steps(1000, 5) == [100, 300, 500, 700, 900]
    assert uniform_time_steps(10, 3) == [1, 4, 7]  # interval 3, start 1: the grid [1, 4, 7] has 3 steps
    assert len(uniform_time_steps(10, 4)) == 4


class _Prototypes(torch.nn.Module):
    """A 'denoiser' that ignores its input and returns its cell type's prototype: condition c reconstructs the cells
    of class c perfectly, every other condition badly."""

    def __init__(self, prototypes):
        super().__init__()
        self.prototypes = prototypes

    def forward(self, x_context, x_noised, t, cell_type, batch):
        assert (x_context == 0).all()  # the classifier gives no context
        return self.prototypes[cell_type - 1]


def test_classifier_picks_the_condition_that_reconstructs_the_cell():
    torch.manual_seed(0)
    prototypes = torch.tensor([[5.0, 0.0, 0.0, 1.0], [0.0, 5.0, 0.0, 1.0], [0.0, 0.0, 5.0, 1.0]])
    truth = torch.tensor([2, 0, 1, 1, 0, 2])
    x = prototypes[truth]
    candidates = torch.tensor([[1, 1], [2, 1], [3, 1], [3, 2]])  # (cell type code, batch code)
    picked = classify(_Prototypes(prototypes), GaussianDiffusion(1000), x, candidates, uniform_time_steps(1000, 5))
    assert torch.equal(candidates[picked, 0] - 1, truth)


def test_denoiser_conditions_on_cell_type_and_batch_and_masks_only_while_training():
    torch.manual_seed(0)
    model = ScDiffDenoiser(12, 3, 2, embed_dim=16, depth=2, num_heads=2, dim_head=8).eval()
    x, t = torch.rand(4, 12), torch.tensor([7])
    ct, b = torch.tensor([1, 2, 3, 1]), torch.tensor([1, 1, 2, 2])
    out = model(x, x, t, ct, b)
    assert out.shape == (4, 12) and torch.equal(out, model(x, x, t, ct, b))  # eval: no random condition masking
    assert not torch.allclose(out, model(x, x, t, ct % 3 + 1, b))  # the cell type changes the reconstruction
    assert not torch.allclose(out, model(x, x, t, ct, 3 - b))  # and the batch too
    assert not torch.allclose(out, model(x, x, torch.tensor([700]), ct, b))  # and the time step
    assert timestep_embedding(torch.tensor([0]), 6).tolist() == [[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]]


def test_v2_mask_hides_whole_cells_at_the_cell_mask_ratio():
    torch.manual_seed(0)
    x = torch.ones(4000, 50)
    full = ScDiffDenoiser(50, 2, 1, embed_dim=8, depth=1, num_heads=1, dim_head=8, cell_mask_ratio=1.0).random_mask(x)
    assert full.all()
    mask = ScDiffDenoiser(50, 2, 1, embed_dim=8, depth=1, num_heads=1, dim_head=8).random_mask(x)
    whole = mask.all(dim=1).float().mean().item()
    assert 0.22 < whole < 0.30  # 0.25 of the cells, plus the few whose uniform ratio hides every gene anyway
    partial = mask[~mask.all(dim=1)].float().mean().item()
    assert 0.45 < partial < 0.55  # the other cells hide a uniform random fraction: half on average


def _cells(n_per_type=40, n_genes=30, types=("B", "T", "NK"), batches=("b1", "b2"), seed=0):
    """Counts where each cell type has its own marker genes, in two batches."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(types, n_per_type)
    rate = np.ones((len(labels), n_genes))
    for i, name in enumerate(types):
        rate[labels == name, i * 5 : i * 5 + 5] = 30.0
    X = sp.csr_matrix(rng.poisson(rate).astype(np.float32))
    obs = pd.DataFrame(
        {LABEL: labels, BATCH: rng.choice(batches, len(labels))}, index=[f"c{i}" for i in range(len(labels))]
    )
    return ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))


def _fit_predict(train, test, seed=0, **params):
    seed_everything(seed)
    return ScDiff(seed=seed, **{**TINY, **params}).fit(train).predict(test)


def test_method_never_sees_test_labels_and_is_deterministic_on_cpu():
    cells = _cells()
    train, test = cells[::2].copy(), cells[1::2].copy()
    test.obs = test.obs.drop(columns=[LABEL])  # what the contract gives predict: no labels
    a = _fit_predict(train, test, max_epochs=40, base_learning_rate=6e-5)
    assert len(a) == test.n_obs and set(a) <= {"B", "T", "NK"}
    assert np.array_equal(a, _fit_predict(train, test, max_epochs=40, base_learning_rate=6e-5))
    truth = cells[1::2].obs[LABEL].to_numpy()
    assert (a == truth).mean() > 0.9  # markers this strong: the classifier learns them in 40 epochs (0.98 here)


def test_one_cell_type_is_a_not_applicable_row_and_one_or_no_test_cell_is_predicted(tmp_path):
    cells = _cells()
    one_type = cells[cells.obs[LABEL] == "B"].copy()
    one_type.write_h5ad(tmp_path / "train.h5ad")
    cells[:1].copy().write_h5ad(tmp_path / "test.h5ad")
    record = run(
        "scdiff", RunIds("toy", "s", "scdiff", 0), tmp_path / "train.h5ad", tmp_path / "test.h5ad",
        tmp_path / "pred.h5ad", tmp_path / "run.json", params=TINY,
    )  # fmt: skip
    assert record.status == "not_applicable" and "at least two cell types" in record.reason
    assert (tmp_path / "pred.h5ad").exists()
    model = ScDiff(seed=0, **TINY).fit(cells)
    assert model.predict(cells[:1].copy()).shape == (1,) and model.predict(cells[:0].copy()).shape == (0,)


def test_genes_that_differ_between_train_and_test_are_refused():
    cells = _cells()
    test = cells[:5].copy()
    test.var_names = [f"x{j}" for j in range(test.n_vars)]
    with pytest.raises(ValueError, match="genes differ"):
        _fit_predict(cells, test)
