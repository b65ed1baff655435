"""The reproduction path a networked user takes, end to end through snakemake.

1. The comparison with a published table: a small dataset carries ``published_as`` and the test's own published
   tables, so that comparison.tsv, the plot and benchmark.md have rows, each with its reading and a difference
   checked against values worked out by hand from the split files.
2. The full config's sources and checkpoints, fetched by the workflow through the emulated internet
   (tests/internet.py): the scDiff archive from Google Drive (confirmation form), a CELLxGENE dataset at the
   version current on 2023-09-27, the figshare file behind its bot challenge, the CellPLM release from Dropbox, scGPT's
   whole-human folder from Google Drive and Geneformer from Hugging Face at the pinned commit. The URLs are the real
   config's; nothing is downloaded by hand.
"""

import hashlib
import io
import json
import tarfile

import anndata as ad
import hdf5plugin
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from cellplm.bench.io import read_h5ad
from conftest import make_counts_adata, released_shaped_state
from internet import FakeInternet, cellxgene, dropbox_shared_folder, figshare, google_drive, hugging_face
from test_workflow import copy_workflow, snakemake

TOY_CONFIG = """
run: {datasets: [toy, toy_other], methods: [majority_class, true_labels], embeddings: [], seeds: [0, 1], min_free_gb: 0}
speed: {enabled: false}
published: toy_scores.tsv
published_datasets: toy_datasets.tsv
methods:
  majority_class: {published_as: Majority}
  true_labels: {published_as: Truth}
datasets:
  toy:
    source: {kind: local, path: toy.h5ad}
    published_as: TOY
    variant: published_file
    splits: [published, batch_holdout]
    min_cells_per_type: 0
  toy_other:
    source: {kind: local, path: toy_other.h5ad}
    published_as: TOY
    min_cells_per_type: 0
"""
TOY_SCORES = """# the test's published table
method\tdataset\tvalue\tstd\tmetric_as_published\treading\tplausible_readings\treading_basis\tsource
Majority\tTOY\t0.30\tNA\taccuracy\ttm_macro_accuracy\ttm_macro_accuracy;accuracy\tby construction\ttest table
Truth\tTOY\t0.90\t0.01\taccuracy\ttm_macro_accuracy_swapped\ttm_macro_accuracy_swapped\tby construction\ttest table
Nobody\tTOY\t0.50\tNA\taccuracy\ttm_macro_accuracy\ttm_macro_accuracy\tby construction\ttest table
"""


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("toy"))
    make_counts_adata(n_cells=200, n_types=4, seed=3, batches=3).write_h5ad(workdir / "toy.h5ad")
    make_counts_adata(n_cells=120, n_types=4, seed=4).write_h5ad(workdir / "toy_other.h5ad")
    (workdir / "toy_scores.tsv").write_text(TOY_SCORES)
    n_genes = make_counts_adata().n_vars
    (workdir / "toy_datasets.tsv").write_text(f"dataset\tcells\tgenes\tclasses\tsource\nTOY\t200\t{n_genes}\t4\ttest\n")
    (workdir / "config" / "toy.yaml").write_text(TOY_CONFIG)
    out = snakemake(workdir, "--cores", "2", "--configfile", "config/toy.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


def test_comparison_pairs_each_published_value_with_our_number_of_its_reading(toy):
    comp = pd.read_csv(toy / "results/tables/comparison.tsv", sep="\t", keep_default_na=False, na_values=["NA"])
    assert len(comp) == 3 * 3  # 3 published rows x (toy published, toy batch_holdout, toy_other published)
    # worked out by hand from the split files: majority_class predicts the commonest training label
    base = toy / "results/data/toy/published"
    majority = read_h5ad(base / "train.h5ad").obs["cell_type"].astype(str).value_counts().idxmax()
    truth = read_h5ad(base / "solution.h5ad").obs["cell_type"].astype(str)
    classes = set(truth) | {majority}  # torchmetrics averages over classes with tp + fp + fn > 0
    by_hand = 1 / len(classes)  # recall 1 for the predicted class, 0 for the others
    row = comp[(comp["dataset"] == "toy") & (comp["split"] == "published")].set_index("published_method")
    assert row.loc["Majority", "method"] == "majority_class" and row.loc["Majority", "reading"] == "tm_macro_accuracy"
    assert row.loc["Majority", "ours_mean"] == pytest.approx(by_hand)
    assert row.loc["Majority", "difference"] == pytest.approx(by_hand - 0.30) and row.loc["Majority", "comparable"]
    # its other readings: micro accuracy is the test share of that class, macro precision that share over the classes
    share = float((truth == majority).mean())
    swapped = share / len(classes)
    assert row.loc["Majority", "ours_accuracy"] == pytest.approx(share)
    assert row.loc["Majority", "ours_tm_macro_accuracy_swapped"] == pytest.approx(swapped)
    spread = max(by_hand, share, swapped) - min(by_hand, share, swapped)
    assert row.loc["Majority", "readings_spread"] == pytest.approx(spread) and spread > 0.005
    assert row.loc["Majority", "reading_uncertain"] and row.loc["Majority", "notes"].startswith("reading uncertain: ")
    assert not row.loc["Truth", "reading_uncertain"] and row.loc["Truth", "readings_spread"] == 0
    assert row.loc["Truth", "reading"] == "tm_macro_accuracy_swapped" and row.loc["Truth", "ours_mean"] == 1.0
    assert row.loc["Truth", "difference"] == pytest.approx(0.10)
    assert row.loc["Nobody", "method"] == "(not run here)" and pd.isna(row.loc["Nobody", "difference"])
    ran = comp[comp["method"] != "(not run here)"]
    assert (ran["device"] == "cpu").all() and (comp.loc[comp["method"] == "(not run here)", "device"] == "").all()
    held = comp[(comp["dataset"] == "toy") & (comp["split"] == "batch_holdout")]
    assert held["difference"].isna().all()
    assert (
        held.loc[held["method"] != "(not run here)", "not_comparable_reason"]
        == "split 'batch_holdout' is not the published protocol"
    ).all()
    other = comp[(comp["dataset"] == "toy_other") & (comp["method"] != "(not run here)")]
    assert len(other) == 2 and other["difference"].isna().all()
    assert (
        other["not_comparable_reason"]
        .str.startswith("not the published dataset (differs: cells 120 vs published 200)")
        .all()
    )
    # every table says which data produced its rows
    datasets = pd.read_csv(toy / "results/tables/datasets.tsv", sep="\t", keep_default_na=False).set_index("dataset")
    assert datasets.loc["toy", "fingerprint"].startswith("matches (cells 200, genes ")
    assert datasets.loc["toy", "data"] == "published file: toy.h5ad"
    assert datasets.loc["toy_other", "data"] == "not the published data: toy_other.h5ad"
    assert datasets.loc["toy", "source_sha256"] == hashlib.sha256((toy / "toy.h5ad").read_bytes()).hexdigest()
    scores = pd.read_csv(toy / "results/tables/scores.tsv", sep="\t")
    assert set(scores["data"]) == {"published file: toy.h5ad", "not the published data: toy_other.h5ad"}
    assert {"tm_macro_accuracy", "tm_macro_accuracy_swapped"} <= set(scores["metric"])
    md = (toy / "results/tables/benchmark.md").read_text()
    assert "## Ours beside the published table, reading for reading" in md
    # every reading side by side: bold the favoured one, in parentheses one the row's plausible_readings leave out
    ours = row.loc["Majority"]  # the values checked by hand above, as computed (torchmetrics is float32)
    assert (
        f"| toy | majority_class | published: 0.300 (Majority) | **{by_hand:.3f} ± 0.000** | "
        f"({ours['ours_tm_macro_accuracy_swapped']:.3f} ± 0.000) | {share:.3f} ± 0.000 | `tm_macro_accuracy` | "
        f"{by_hand - 0.30:+.3f} | **yes**: {ours['readings_spread']:.3f} apart | – | test table |"
    ) in md, md
    assert (
        "| toy | true_labels | published: 0.900 ± 0.010 (Truth) | (1.000 ± 0.000) | **1.000 ± 0.000** | "
        "(1.000 ± 0.000) | `tm_macro_accuracy_swapped` | +0.100 | no: 0.000 apart | – | test table |" in md
    )
    assert (toy / "results/plots/published_comparison.png").stat().st_size > 10_000


# ---- the full config's sources, through the emulated services ----------------------------------------------------

SCDIFF = "1dI3FS9My-8_TR0C6YSUklHzBHiVVXN4F"
SCGPT_FOLDER = "1oWh_-ZRdhtoGQ2Fw24HP41FgLoomVo-y"
REVISION = "04c2b2e84da7c0f385c3f9ad8f3ec24bab6650e5"
BRAIN = "c05e6940-729c-47bd-a2a6-6ce3730c4919"
V_2023, V_2024 = "7a1c2f3e-0000-4000-8000-000000002023", "7a1c2f3e-0000-4000-8000-000000002024"
NET_CONFIG = """
run:
  datasets: [pbmc12k, hlca, brain_origin, pancreas_origin]
  methods: [majority_class, true_labels]
  embeddings: []  # the sources and checkpoints are the subject here, not the zero-shot track
  seeds: [0]
  min_free_gb: 0
speed: {enabled: false}
"""
TARGETS = [
    "results/cellplm/checkpoints/released__20230926_85M/provenance.json",
    "resources/models/scgpt_whole_human",
    "resources/models/geneformer_v1_10m",
]


def h5ad_bytes(adata, tmp_path, name, **kw) -> bytes:
    adata.write_h5ad(tmp_path / name, **kw)
    return (tmp_path / name).read_bytes()


def scdiff_like(n, seed, label_key, batch_key, split=False, ensg=False):
    """As scDiff's processed files: log-normalised X, counts in layers['counts'], symbols as var_names (with
    ``ensg``, Ensembl ids in var['ensg'], as in PBMC12K)."""
    from cellplm.genes import symbols_to_ensembl

    a = make_counts_adata(n_cells=n, n_types=3, seed=seed)
    if ensg:
        a.var["ensg"] = symbols_to_ensembl(a.var_names).astype(str)
    a.layers["counts"] = a.X.copy()
    norm = a.X.multiply(1e4 / np.asarray(a.X.sum(1))).tocsr()
    norm.data = np.log1p(norm.data)
    a.X = norm.astype(np.float32)
    a.obs = a.obs.rename(columns={"cell_type": label_key, "batch": batch_key})
    if split:
        a.obs["split"] = np.random.default_rng(seed).choice(["train", "valid", "test"], n, p=[0.8, 0.1, 0.1])
    return a


def cellxgene_like(n, seed):
    """As CELLxGENE files: Ensembl ids as var_names, symbols in feature_name, counts in raw."""
    from cellplm.genes import symbols_to_ensembl

    a = make_counts_adata(n_cells=n, n_types=3, seed=seed)
    ids = symbols_to_ensembl(a.var_names)
    out = ad.AnnData(
        sp.csr_matrix(a.X.toarray() / 2, dtype=np.float32),
        obs=a.obs.rename(columns={"batch": "donor_id"}),
        var=pd.DataFrame({"feature_name": list(a.var_names)}, index=list(ids)),
    )
    out.raw = ad.AnnData(a.X, var=out.var.copy())
    return out


def released_shaped_checkpoint() -> bytes:
    buf = io.BytesIO()
    torch.save({"model_state_dict": released_shaped_state()}, buf)
    return buf.getvalue()


@pytest.mark.slow
def test_full_config_fetches_every_source_and_checkpoint_through_the_services(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    (workdir / "config" / "net.yaml").write_text(NET_CONFIG)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        pbmc = scdiff_like(150, 1, "str_labels", "batch", ensg=True)
        members = {
            "reproduce/PBMC12K_processed.h5ad": h5ad_bytes(pbmc, tmp_path, "pbmc.h5ad"),
            "reproduce/HLCA_zstd_sub.h5ad": h5ad_bytes(
                scdiff_like(130, 2, "cell_type", "batch", split=True),
                tmp_path,
                "hlca.h5ad",
                compression=hdf5plugin.Zstd(),
            ),
            "reproduce/biolinkbert_HLCA_sub_threshold1000.ckpt": b"not needed",
        }
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    pancreas = scdiff_like(140, 5, "celltype", "tech")
    ckpt = released_shaped_checkpoint()
    scgpt_files = {
        "1ScgptArgsJsonAAAAAAAAAAAAAAAAAA": ("args.json", b'{"embsize": 512, "nheads": 8}'),
        "1ScgptVocabJsonBBBBBBBBBBBBBBBBBB": ("vocab.json", b'{"<pad>": 0, "A1BG": 1}'),
        "1ScgptBestModelCCCCCCCCCCCCCCCCCC": ("best_model.pt", b"\x00" * 5000),
    }
    geneformer_files = {
        "Geneformer-V1-10M/config.json": b'{"model_type": "bert"}',
        "Geneformer-V1-10M/model.safetensors": b"\x01" * 6000,
        "geneformer/gene_dictionaries_30m/token_dictionary_gc30M.pkl": b"\x80\x04}\x94.",
        "geneformer/gene_dictionaries_30m/gene_median_dictionary_gc30M.pkl": b"\x80\x04}\x94.",
        "Geneformer-V2-316M/model.safetensors": b"not wanted",
    }
    with FakeInternet(tmp_path) as net:
        google_drive(
            net,
            {SCDIFF: ("reproducibility.tar.gz", archive.getvalue()), **scgpt_files},
            folders={SCGPT_FOLDER: ("scGPT_human", list(scgpt_files))},
            large={SCDIFF, "1ScgptBestModelCCCCCCCCCCCCCCCCCC"},
        )
        cellxgene(
            net,
            {
                BRAIN: [
                    {"dataset_version_id": V_2024, "published_at": "2024-05-02T10:00:00+00:00", "cell_count": 90},
                    {"dataset_version_id": V_2023, "published_at": "2023-07-25T08:00:00+00:00", "cell_count": 100},
                ]
            },
            {
                V_2024: h5ad_bytes(cellxgene_like(90, 7), tmp_path, "b24.h5ad"),
                V_2023: h5ad_bytes(cellxgene_like(100, 6), tmp_path, "b23.h5ad"),
            },
        )
        figshare(
            net,
            {36086813: ("human_pancreas_norm_complexBatch.h5ad", h5ad_bytes(pancreas, tmp_path, "p.h5ad"))},
            ndownloader="challenge",
        )
        dropbox_shared_folder(
            net, "i5rmxgtqzg7iykt2e9uqm", "o8hi0xads9ol07o48jdityzv1", {"ckpt/20230926_85M.best.ckpt": ckpt}
        )
        hugging_face(
            net, "ctheodoris/Geneformer", REVISION, geneformer_files, lfs={"Geneformer-V1-10M/model.safetensors"}
        )
        env = {**net.env, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}
        out = snakemake(workdir, "all", *TARGETS, "--cores", "2", "--configfile", "config/net.yaml", extra_env=env)
        assert out.returncode == 0, out.stderr[-4000:]
        # the real config's URLs were used, each service's routes as its contract says
        assert (
            "GET /scl/fo/i5rmxgtqzg7iykt2e9uqm/h/ckpt/20230926_85M.best.ckpt?rlkey=o8hi0xads9ol07o48jdityzv1&dl=1"
            in net.hits("www.dropbox.com")
        )
        assert net.hits("ndownloader.figshare.com") == ["GET /files/36086813"]  # the empty 202; then the API mirror
        assert net.hits("api.figshare.com") == ["GET /v2/file/download/36086813"]
        assert net.hits("api.cellxgene.cziscience.com") == [f"GET /curation/v1/datasets/{BRAIN}/versions"]
        assert net.hits("datasets.cellxgene.cziscience.com") == [f"GET /{V_2023}.h5ad"]
        assert any("confirm=t&uuid=" in h for h in net.hits("drive.usercontent.google.com"))
        assert f"GET /uc?id={SCDIFF}" in net.hits("drive.google.com")
        assert f"GET /embeddedfolderview?id={SCGPT_FOLDER}" in net.hits("drive.google.com")
        assert any(
            h.startswith(f"GET /api/models/ctheodoris/Geneformer/tree/{REVISION}") for h in net.hits("huggingface.co")
        )
        n_requests = len(net.requests)
        again = snakemake(workdir, "all", *TARGETS, "--cores", "2", "--configfile", "config/net.yaml", extra_env=env)
        assert "Nothing to be done" in again.stdout + again.stderr and len(net.requests) == n_requests
    # one archive download, one extraction for both members; each dataset says what it is
    datasets = pd.read_csv(workdir / "results/tables/datasets.tsv", sep="\t", keep_default_na=False).set_index(
        "dataset"
    )
    assert datasets.loc["pbmc12k", "data"] == "published file: PBMC12K_processed.h5ad in scdiff_reproducibility.tar.gz"
    assert datasets.loc["hlca", "cells"] == 130  # the Zstd-compressed member was read
    assert datasets.loc["brain_origin", "version"] == V_2023 and datasets.loc["brain_origin", "cells"] == 100
    assert datasets.loc["brain_origin", "data"] == f"rebuilt from origin: CELLxGENE {BRAIN}, version {V_2023}"
    assert datasets.loc["pancreas_origin", "cells"] == 140
    assert (
        datasets.loc["pbmc12k", "fingerprint"] == "differs: cells 150 vs published 11,990; genes 12 vs published "
        "3,346; classes 3 vs published 9"
    )
    manifest = pd.read_csv(workdir / "resources/checksums.tsv", sep="\t", keep_default_na=False).set_index("filename")
    assert manifest.loc[f"cellxgene_{BRAIN}.h5ad", "version"] == V_2023  # locked for later runs
    assert manifest.loc["scdiff_reproducibility.tar.gz", "sha256"] == hashlib.sha256(archive.getvalue()).hexdigest()
    assert manifest.loc["20230926_85M.best.ckpt", "sha256"] == hashlib.sha256(ckpt).hexdigest()
    assert manifest.loc["geneformer_v1_10m/Geneformer-V1-10M/model.safetensors", "version"] == REVISION
    assert sorted(
        p.name for p in (workdir / "resources/models/scgpt_whole_human").iterdir() if not p.name.startswith(".")
    ) == ["args.json", "best_model.pt", "vocab.json"]
    assert not (workdir / "resources/models/geneformer_v1_10m/Geneformer-V2-316M").exists()
    provenance = json.loads((workdir / TARGETS[0]).read_text())
    assert provenance["architecture"]["released_architecture"] and provenance["loaded_with"] == "weights_only"
    assert provenance["kind"] == "released" and provenance["config"].endswith(
        "cellplm/resources/20230926_85M.config.json"
    )
    comp = pd.read_csv(workdir / "results/tables/comparison.tsv", sep="\t", keep_default_na=False)
    assert set(comp["published_dataset"]) == {"PBMC12K", "HLCA", "Brain", "Pancreas"}
