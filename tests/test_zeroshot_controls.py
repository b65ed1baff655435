"""The zero-shot track's controls (random embedding, jittered cell types, PCA per batch): what each embeds, that only
a control that needs the labels gets them (through the harness and the runner, from the split's solution file),
that their zero-shot rows are controls, and that the report marks them and ranks none of them."""

import json

import numpy as np
import pandas as pd
import pytest

from cellplm.bench.embeddings import embedding_ids, metadata, registry
from cellplm.bench.embeddings.base import Embedder, EmbeddingIds, run
from cellplm.bench.embeddings.lognorm_pca import pca_embedding
from cellplm.bench.errors import InputError
from cellplm.bench.io import read_h5ad
from cellplm.bench.report import zeroshot as zs
from cellplm.bench.report import zeroshot_plots as zp
from conftest import make_counts_adata, workflow_config, write_split_files

CONTROLS = ["celltype_jittered", "pca_per_batch", "random_embedding"]


@pytest.fixture(scope="module")
def split_files(tmp_path_factory):
    """120 cells of 3 types in 2 batches, split 80/10/10 (train, test, solution files)."""
    return write_split_files(make_counts_adata(n_cells=120), tmp_path_factory.mktemp("split"))


def embedder(embedding: str, seed: int = 0, **params):
    return registry()[embedding](seed=seed, **params)


def cells(n_cells=90, batches=2, seed=0):
    """Raw counts, obs['batch'] and obs['cell_type'] (what a control that needs labels sees)."""
    return make_counts_adata(n_cells=n_cells, batches=batches, seed=seed)


def _run(embedding, split_files, tmp_path, **kw):
    return run(
        embedding,
        EmbeddingIds("toy", "published", embedding if isinstance(embedding, str) else "spy", 0),
        split_files["train"],
        split_files["test"],
        tmp_path / "embedding.h5ad",
        tmp_path / "run.json",
        log=lambda *a: None,
        **kw,
    )


def test_the_controls_are_embedding_folders_marked_control():
    assert set(CONTROLS) <= set(embedding_ids())
    assert [e for e in embedding_ids() if metadata(e).get("control")] == CONTROLS
    for e in CONTROLS:
        meta = metadata(e)
        assert meta["label"].endswith("(control)") and meta["threads"] == 1 and not meta["gpu"], e
        assert meta["env"] == "workflow/envs/classic.yaml" and meta["test_params"] == {}, e
    classes = registry()  # scGPT's Embedder cannot be imported here (its own env): no class, no labels
    assert [e for e, cls in classes.items() if getattr(cls, "needs_labels", False)] == ["celltype_jittered"]
    assert metadata("celltype_jittered")["params"] == {"jitter": 0.01}  # OpenProblems' default


def test_random_embedding_is_seeded_noise():
    a = cells()
    z = embedder("random_embedding", seed=3).embed(a)
    assert z.shape == (a.n_obs, 50) and z.dtype == np.float32
    assert np.array_equal(z, embedder("random_embedding", seed=3).embed(a))  # the run seed decides it
    assert not np.allclose(z, embedder("random_embedding", seed=4).embed(a))
    assert np.array_equal(z, embedder("random_embedding", seed=3).embed(cells(seed=1)))  # the data does not
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    assert embedder("random_embedding", n_dims=7).embed(a).shape == (a.n_obs, 7)


def test_celltype_jittered_is_the_one_hot_cell_types_plus_jitter():
    a = cells()
    a.obs["cell_type"] = np.where(np.arange(a.n_obs) % 4 == 0, "b cell", "a cell")  # codes by sorted name
    z = embedder("celltype_jittered", seed=1).embed(a)
    codes = (a.obs["cell_type"] == "b cell").to_numpy().astype(int)
    assert z.shape == (a.n_obs, 2) and z.dtype == np.float32
    assert np.array_equal(z.argmax(axis=1), codes)
    one_hot = np.eye(2)[codes]
    assert np.abs(z - one_hot).max() <= 0.01 and np.abs(z - one_hot).max() > 0.005  # jitter uniform in +-0.01
    assert np.array_equal(z, embedder("celltype_jittered", seed=1).embed(a))
    assert not np.array_equal(z, embedder("celltype_jittered", seed=2).embed(a))
    wide = embedder("celltype_jittered", jitter=0.3).embed(a)
    assert np.abs(wide - one_hot).max() > 0.2
    del a.obs["cell_type"]
    with pytest.raises(ValueError, match=r"celltype_jittered needs obs\['cell_type'\]"):
        embedder("celltype_jittered").embed(a)


def test_pca_per_batch_is_a_pca_of_each_batch_alone():
    a = cells(n_cells=120, batches=3)
    batch = a.obs["batch"].to_numpy()
    pcs = embedder("pca_per_batch", n_comps=10).embed(a)
    assert pcs.shape == (a.n_obs, 10) and pcs.dtype == np.float32
    for b in ("b0", "b1", "b2"):
        alone = pca_embedding(a[batch == b].copy(), n_comps=10, seed=0)
        np.testing.assert_allclose(pcs[batch == b], alone, atol=1e-5)  # pca's settings, on the batch alone
    whole = pca_embedding(a, n_comps=10, seed=0)
    assert not np.allclose(np.abs(pcs), np.abs(whole), atol=1e-2)  # not the PCA of all cells
    # other cells in batch b0 (counts doubled, half of them dropped): b1 and b2 embed exactly as before
    other = cells(n_cells=120, batches=3)
    other.X = other.X.multiply(np.where(batch == "b0", 2, 1)[:, None]).tocsr()
    keep = (batch != "b0") | (np.arange(a.n_obs) % 2 == 0)
    changed = embedder("pca_per_batch", n_comps=10).embed(other[keep].copy())
    b0 = batch[keep] == "b0"
    np.testing.assert_array_equal(changed[~b0], pcs[batch != "b0"])
    assert not np.allclose(changed[b0], pcs[(batch == "b0") & keep])
    # a batch with fewer cells than components: its columns beyond are zero, as OpenProblems pads them
    few = cells(n_cells=120, batches=2)
    few.obs["batch"] = np.where(np.arange(few.n_obs) < 6, "small", "large")
    model = embedder("pca_per_batch", n_comps=10)
    padded = model.embed(few)
    assert (padded[:6, 5:] == 0).all() and (padded[:6, :5] != 0).any() and (padded[6:, 5:] != 0).any()
    assert model.extra["n_comps_per_batch"] == {"small": 5, "large": 10} and model.extra["n_batches"] == 2
    few.obs["batch"] = np.where(np.arange(few.n_obs) < 1, "single", "large")
    with pytest.raises(ValueError, match="batch 'single' has 1"):
        embedder("pca_per_batch").embed(few)


class Spy(Embedder):
    seen: dict = {}

    def embed(self, cells):
        type(self).seen = {"obs": cells.obs.copy()}
        return np.ones((cells.n_obs, 2))


class LabelSpy(Spy):
    needs_labels = True


def test_only_an_embedder_that_needs_labels_sees_them(split_files, tmp_path):
    train, test = read_h5ad(split_files["train"]), read_h5ad(split_files["test"])
    truth = read_h5ad(split_files["solution"]).obs["cell_type"].astype(str)
    assert "cell_type" not in test.obs  # the test labels are only in the solution file
    record = _run(Spy, split_files, tmp_path, solution_path=split_files["solution"])  # given, and never read
    assert record.status == "ok" and list(Spy.seen["obs"].columns) == ["batch"]
    record = _run(LabelSpy, split_files, tmp_path, solution_path=split_files["solution"])
    labels = LabelSpy.seen["obs"]["cell_type"].tolist()
    assert record.status == "ok" and list(LabelSpy.seen["obs"].columns) == ["batch", "cell_type"]
    assert labels == list(train.obs["cell_type"].astype(str)) + list(truth.reindex(test.obs_names))
    out = read_h5ad(tmp_path / "embedding.h5ad")
    assert list(out.obs.columns) == ["batch", "set"]  # the labels do not travel into the embedding file
    record = _run(LabelSpy, split_files, tmp_path)  # no solution: no labels
    assert record.status == "ok" and list(LabelSpy.seen["obs"].columns) == ["batch"]


def test_a_solution_of_other_cells_is_one_line(split_files, tmp_path):
    other = write_split_files(make_counts_adata(n_cells=120, seed=5).copy(), tmp_path / "other")
    solution = read_h5ad(other["solution"])
    solution.obs_names = [f"x{i}" for i in range(solution.n_obs)]
    solution.write_h5ad(tmp_path / "solution.h5ad")
    with pytest.raises(InputError, match="no label for .* test cells"):
        _run("celltype_jittered", split_files, tmp_path, solution_path=tmp_path / "solution.h5ad")


def test_the_runner_gives_the_labels_to_celltype_jittered_only(split_files, tmp_path):
    from cellplm.bench.embeddings.cli import main

    def runner(embedding, *extra):
        out = tmp_path / embedding
        args = ["--train", split_files["train"], "--test", split_files["test"], *extra]
        args += ["--embedding", out / "e.h5ad", "--record", out / "r.json"]
        assert main([embedding, *map(str, args)]) == 0
        return read_h5ad(out / "e.h5ad"), json.loads((out / "r.json").read_text())

    train = read_h5ad(split_files["train"])
    truth = read_h5ad(split_files["solution"]).obs["cell_type"].astype(str)
    out, rec = runner("celltype_jittered", "--solution", split_files["solution"])
    labels = list(train.obs["cell_type"].astype(str)) + list(truth.reindex(out.obs_names[train.n_obs :]))
    types = sorted(set(labels))
    assert rec["status"] == "ok" and rec["n_dims"] == len(types) == rec["extra"]["n_cell_types"]
    assert [types[i] for i in out.obsm["X_emb"].argmax(axis=1)] == labels
    _, rec = runner("celltype_jittered")  # without --solution: a failed row that says what is missing
    assert rec["status"] == "failed" and "needs obs['cell_type']" in rec["reason"]
    for control in ("random_embedding", "pca_per_batch"):  # controls that need no labels run with and without
        out, rec = runner(control, "--solution", split_files["solution"])
        assert rec["status"] == "ok" and out.obsm["X_emb"].shape == (rec["n_cells"], rec["n_dims"])


def test_a_control_embeddings_zero_shot_row_is_a_control():
    cfg = workflow_config("config/demo.yaml")
    assert set(CONTROLS) <= set(cfg["run"]["embeddings"])
    assert set(CONTROLS) <= set(workflow_config()["run"]["embeddings"])
    rows = {m: spec for m, spec in cfg["methods"].items() if spec.get("zeroshot_of")}
    assert {m for m, spec in rows.items() if spec["control"]} == {f"{e}_zeroshot" for e in CONTROLS}
    assert cfg["embeddings"]["pca"]["control"] is False and cfg["embeddings"]["pca"]["label"] == "PCA (unintegrated)"


# ---- the report ------------------------------------------------------------------------------------------------------

LABELS = {  # a control first in the run's order: the tables still list it after the embeddings
    "random_embedding": "Random embedding (control)",
    "cellplm": "CellPLM",
    "pca": "PCA (unintegrated)",
    "celltype_jittered": "Jittered cell types (control)",
}
AGGREGATES = [("bio_conservation", "Bio conservation"), ("batch_correction", "Batch correction"), ("total", "Total")]
VALUES = {  # (bio, batch, total): the random embedding has the best total and batch correction
    "random_embedding": (0.2, 1.0, 0.52),
    "cellplm": (0.7, 0.3, 0.54),
    "pca": (0.6, 0.2, 0.44),
    "celltype_jittered": (1.0, 0.4, 0.76),
}


@pytest.fixture
def table():
    rows = [
        {
            "dataset": "toy",
            "embedding": e,
            "metric": m,
            "metric_label": label,
            "metric_type": "aggregate",
            "value": v,
            "status": "ok",
            "reason": "",
            "n_cells": 100,
            "n_cells_total": 100,
            "cells": "all 100 cells",
            "metric_set": "scib-metrics 0.5.10",
        }
        for e, values in VALUES.items()
        for (m, label), v in zip(AGGREGATES, values)
    ]
    records = [
        {"dataset": "toy", "embedding": e, "status": "ok", "reason": "", "n_cells": 100, "embed_s": 1.0} for e in VALUES
    ]
    return zs.zeroshot_table(pd.DataFrame(rows), records, LABELS, ["random_embedding", "celltype_jittered"])


def test_the_report_lists_the_controls_last_marked_and_unranked(table, tmp_path):
    order = list(dict.fromkeys(table["embedding"]))
    assert order == ["cellplm", "pca", "random_embedding", "celltype_jittered"]
    control = table.drop_duplicates("embedding").set_index("embedding")["control"]
    assert control.to_dict() == {"cellplm": False, "pca": False, "random_embedding": True, "celltype_jittered": True}
    assert (table.loc[table["control"], "checkpoint"] == zs.CONTROL_CHECKPOINT).all()
    path = tmp_path / "zeroshot.tsv"
    table.to_csv(path, sep="\t", index=False, na_rep="NA")  # as the workflow writes and reads it back
    back = pd.read_csv(path, sep="\t")
    text = "\n".join(zs.markdown_lines(back, pd.DataFrame(), {}))
    overview = text.split("### Overview")[1].split("### Dataset")[0]
    rows = [line for line in overview.splitlines() if line.startswith("| ") and not line.startswith("| embedding |")]
    assert [r.split(" | ")[0] for r in rows] == [
        "| CellPLM",
        "| PCA (unintegrated)",
        "| *Random embedding (control)*",
        "| *Jittered cell types (control)*",
    ]
    assert "not ranked" in overview
    assert "| *Random embedding (control)* | none (a control) | 0.200 | 1.000 | 0.520 |" in text
    roles = text.split("bounds of each score, not methods")[1].split("###")[0]
    assert "- *Random embedding (control)*: the floor of bio conservation;" in roles
    assert "can top the total" in roles and "- *Jittered cell types (control)*: the ceiling of bio" in roles
    # the scib plot: the embeddings best first by total, then the controls, whatever their totals
    assert zp._ranked(back) == ["cellplm", "pca", "random_embedding", "celltype_jittered"]
    zp.scib_plot(back, tmp_path / "scib.png")
    assert (tmp_path / "scib.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_without_controls_says_nothing_about_them(table):
    real = table[~table["control"]]
    text = "\n".join(zs.markdown_lines(real, pd.DataFrame(), {}))
    assert "not methods" not in text and "*" + "Random" not in text
    assert zp._ranked(real) == ["cellplm", "pca"]
