"""Our fine-tuning loop against upstream's ``CellTypeAnnotationPipeline.fit``.

The trajectory test runs ``benchmarks/finetune_accuracy.py trajectory`` in ``.venv-upstream`` (built by
``tools/upstream_env.sh``): both implementations fine-tune a tiny model from the same checkpoint file with
augmentation off (no dropout, no cell dropping, no masking), fp32, one thread, and record per epoch the loss,
both learning rates (warm-up, plateau scheduler), the clipped gradient norm and the validation macro-F1. A
difference in the loop (parameter groups, weight decay, warm-up, scheduler stepping, clipping, loss, frozen
pre-latent norm, model selection metric) shows up within a few epochs.

With augmentation on, the two loops are compared through their random draws (``benchmarks/finetune_draws.py``):
the ``augmentation`` experiment records every draw of genuine runs of both (cells kept and their order, cells and
entries masked, every dropout mask) on data of three sentences and checks that counts are equal and rates agree
within sampling error; the ``replay`` experiment gives each implementation the other's recorded draws, which must
reproduce the other's losses step for step (up to floating-point summation order) and its validation scores.
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellplm.finetune import validation_macro_f1

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_PY = ROOT / ".venv-upstream" / "bin" / "python"
EPOCHS = 12


def test_validation_f1_leaves_out_classes_absent_from_labels_and_predictions():
    # upstream's torchmetrics multiclass_f1_score(num_classes=4) gives 0.7778 here (class 3: no true, no predicted
    # cell, left out); counting it as F1 0 would give 0.5833 and could pick another best epoch
    assert validation_macro_f1(np.array([0, 0, 1, 2, 2]), np.array([0, 0, 1, 1, 2])) == pytest.approx(7 / 9)
    # a predicted class without true cells counts (F1 0), as in torchmetrics: 0.4167
    assert validation_macro_f1(np.array([0, 0, 1, 2, 2]), np.array([0, 0, 1, 1, 3])) == pytest.approx(5 / 12)


def experiment(tmp_path_factory, name: str, *options: str) -> dict:
    """Run ``benchmarks/finetune_accuracy.py <name>`` in the upstream environment; its result file."""
    if not UPSTREAM_PY.exists():
        pytest.fail("the upstream environment is missing: run `bash tools/upstream_env.sh` (make test does)")
    out = tmp_path_factory.mktemp(name) / f"{name}.json"
    run = subprocess.run(
        [
            str(UPSTREAM_PY),
            str(ROOT / "benchmarks/finetune_accuracy.py"),
            name,
            "--shape",
            "tiny",
            *options,
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory):
    return pd.DataFrame(
        experiment(tmp_path_factory, "trajectory", "--epochs", str(EPOCHS), "--cells", "300", "--genes", "300")["rows"]
    )


def test_deterministic_trajectory_equals_upstream(trajectory):
    df = trajectory
    assert len(df) == EPOCHS
    for col in ("loss", "grad_norm"):
        worst = df[f"rel_diff_{col}"].max()
        assert worst < 1e-4, f"{col}: relative difference {worst:.2e} (epoch {int(df[f'rel_diff_{col}'].idxmax())})"
    for col in ("lr_main", "lr_embedder"):  # warm-up of the main group, embedder at lr/10, plateau scheduler
        np.testing.assert_allclose(df[f"ours_{col}"], df[f"upstream_{col}"], rtol=1e-12, err_msg=col)
    np.testing.assert_allclose(df["ours_valid_f1"], df["upstream_valid_f1"], atol=1e-6, err_msg="validation macro-F1")
    assert df["ours_lr_main"].iloc[0] == pytest.approx(5e-3 / 30)  # warm-up epoch 0: lr (0 + 1) / 30
    assert df["ours_loss"].iloc[-1] < df["ours_loss"].iloc[0]  # it trains


def test_trajectory_test_scores_equal(trajectory):
    assert trajectory["ours_test_macro_f1"].iloc[0] == pytest.approx(
        trajectory["upstream_test_macro_f1"].iloc[0], abs=1e-9
    )


@pytest.fixture(scope="module")
def augmentation(tmp_path_factory):
    result = experiment(
        tmp_path_factory,
        "augmentation",
        "--epochs",
        "6",
        "--cells",
        "600",
        "--genes",
        "300",
        "--batches",
        "3",
        "--seeds",
        "0",
    )
    return pd.DataFrame(result["rows"]).set_index("check")


def test_augmentation_draws_have_the_same_distribution(augmentation):
    checks = augmentation
    failed = checks[~checks["ok"].astype(bool)]
    assert failed.empty, failed[["ours", "upstream"]].to_string()
    # the checks that matter are there, and were made on the data asked for: three sentences, 6 epochs
    assert checks.loc["steps", "ours"] == "18"
    assert checks.loc["sentences (cells, non-zero counts)", "ours"].count("(") == 3
    for check in (
        "cells kept per step, per sentence (cell dropping)",
        "cells masked per step, per sentence",
        "dropout calls of a step: (rate, shape) in forward order, per sentence",
        "each sentence equally likely at each position of an epoch",
    ):
        assert check in checks.index, check
    masked = checks.loc["non-zero entries of masked cells that are masked"]
    for side in ("ours_rate", "upstream_rate"):
        assert masked[side] == pytest.approx(0.25, abs=0.005)
    for p, kept in ((0.5, 0.5), (0.01, 0.99)):  # the model's dropout and the attention's hard-coded 0.01
        row = checks.loc[f"elements kept by dropout p={p}"]
        for side in ("ours_rate", "upstream_rate"):
            assert row[side] == pytest.approx(kept, abs=0.005), (p, side)
    # cell dropping keeps int(0.7 n) cells, masking picks int(0.75 of those): e.g. 200 cells -> 140 kept -> 105 masked
    kept = ast.literal_eval(checks.loc["cells kept per step, per sentence (cell dropping)", "ours"])
    masked_cells = ast.literal_eval(checks.loc["cells masked per step, per sentence", "ours"])
    for (n, nnz), (k,) in kept.items():
        assert k == int(n * (1 - 0.3)) and masked_cells[n, nnz] == [int(0.75 * k)]


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    result = experiment(
        tmp_path_factory, "replay", "--epochs", str(EPOCHS), "--cells", "300", "--genes", "300", "--seeds", "0"
    )
    return pd.DataFrame(result["rows"]).set_index("draws_of"), pd.DataFrame(result["epochs"])


def test_each_loop_replaying_the_others_draws_reproduces_its_run(replay):
    rows, epochs = replay
    control = rows[rows["replayed_by"].str.startswith("ours, weights")]
    rows = rows[~rows["replayed_by"].str.startswith("ours, weights")]
    assert set(rows.index) == {"ours", "upstream"} and list(control.index) == ["ours"]
    for draws_of, r in rows.iterrows():
        # same draws, same arithmetic up to summation order: the losses agree step for step while augmentation acts
        assert r["max_rel_loss_diff_first10"] < 1e-4, f"{draws_of}'s draws: {r['max_rel_loss_diff_first10']:.2e}"
        assert r["epochs_valid_f1_equal_from_start"] >= 6, draws_of
    # the four runs trained, with augmentation: a genuine run and the replay of its draws are not the same run as the
    # other implementation's genuine run (other draws), so their losses differ from the first step
    first = epochs[epochs.epoch == 0].set_index("run")["loss"]
    assert first["ours"] == pytest.approx(first["upstream replaying ours"], rel=1e-4)
    assert first["upstream"] == pytest.approx(first["ours replaying upstream"], rel=1e-4)
    assert abs(first["ours"] - first["upstream"]) > 1e-3


def test_upstream_recorder_draws_dropout_as_torch_does():
    """The recorder replaces upstream's nn.Dropout: it must draw exactly what nn.Dropout draws (else upstream's
    recorded runs would not be its genuine runs)."""
    import torch

    from benchmarks.finetune_draws import check_upstream_dropout

    torch.manual_seed(0)
    assert check_upstream_dropout(0.5) and check_upstream_dropout(0.01, (3, 7, 5))
