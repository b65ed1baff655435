#!/usr/bin/env python
"""Speed of our CellPLM re-implementation against upstream ``CellPLM`` 0.1.0.post2, side by side in one process.

Run it in the upstream environment (built by ``bash tools/upstream_env.sh``), with this repository importable:

    PYTHONPATH=$PWD .venv-upstream/bin/python benchmarks/speed.py

What is measured (random weights: speed does not depend on weight values):

1. A random-weight 85M model from the released config is saved once in the upstream checkpoint format
   (``<prefix>.config.json`` + ``<prefix>.best.ckpt``) in a temporary folder; both implementations load that file.
2. Zero-shot embedding, end to end (AnnData of raw counts in, N x 512 embedding out as numpy): upstream
   ``CellEmbeddingPipeline.predict`` against our ``cellplm.embed.embed`` (model loaded once beforehand for both),
   ours in fp32 and in ``precision='auto'``. One warm-up call each (it also gives peak memory and the embeddings
   compared for agreement), then the median of ``--repeats`` timed calls.
3. Fine-tuning: upstream ``CellTypeAnnotationPipeline.fit`` and our ``CellTypeAnnotator.fit`` for the same number of
   epochs on the same train/valid/test split (no early stopping), seconds per epoch and test scores of both.

Results are printed as a table and written (atomically) to a long-format TSV.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # so that `python benchmarks/speed.py` finds our package without PYTHONPATH
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import RESULTS, provenance, write_result  # noqa: E402
from cellplm.bench.timing import PeakMemory, sync, timed, timed_cpu  # noqa: E402


TARGET_EMBED_SPEEDUP = {"cpu": 2.0, "cuda": 3.0}  # ours cells/s >= 2x upstream's on the CPU, 3x on a GPU
TARGET_FINETUNE_RATIO = 0.5  # ours s/epoch <= 0.5x upstream's


# ---- device, timing, memory --------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch sees no CUDA GPU")
    return dev


@contextlib.contextmanager
def quiet(sink: io.StringIO | None = None):
    """Silence upstream's prints, progress bars and warnings (kept in ``sink`` for error reports)."""
    sink = sink if sink is not None else io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield sink


class EpochClock(io.StringIO):
    """A stdout replacement that timestamps upstream's per-epoch ``Epoch k | ...`` lines."""

    def __init__(self):
        super().__init__()
        self.stamps: list[float] = []

    def write(self, s):
        if s.startswith("Epoch "):
            self.stamps.append(time.perf_counter())
        return super().write(s)


def gib(n_bytes: float) -> float:
    return n_bytes / 2**30


# ---- data --------------------------------------------------------------------------------------------------
def synthetic_counts(n_cells: int, genes: list[str], counts_per_cell: float, seed: int):
    """Raw counts from the shared generator (``cellplm.bench.data.sources.SyntheticCounts``, one batch, 6 types),
    Ensembl ids as var_names, no obs columns (one sentence for both implementations)."""
    from cellplm.bench.data.sources import SyntheticCounts

    adata = SyntheticCounts(
        n_cells=n_cells, n_genes=len(genes), n_batches=1, mean_counts=counts_per_cell, seed=seed, gene_symbols=genes
    ).adata()
    adata.obs = adata.obs.iloc[:, :0].copy()
    return adata


def pbmc68k_counts():
    """scanpy's pbmc68k_reduced (700 cells, 10 bulk labels) with counts recovered and Ensembl ids (needs celltypist)."""
    import anndata as ad
    import scanpy as sc

    from cellplm.bench.data.counts import recover_from_lognorm
    from cellplm.genes import symbols_to_ensembl

    with quiet():
        src = sc.datasets.pbmc68k_reduced()
    raw = sp.csr_matrix(src.raw.X, dtype=np.float64)
    counts = recover_from_lognorm(raw, src.obs["n_counts"].to_numpy(), "pbmc68k_reduced", ".raw.X")
    ids = symbols_to_ensembl(src.raw.var_names)
    keep = np.array([bool(i) for i in ids])
    ids, keep_idx = ids[keep], np.flatnonzero(keep)
    _, first = np.unique(ids, return_index=True)
    keep_idx = keep_idx[np.sort(first)]
    adata = ad.AnnData(
        counts[:, keep_idx].tocsr().astype(np.float32),
        obs=pd.DataFrame(index=src.obs_names.astype(str)),
        var=pd.DataFrame(index=pd.Index(symbols_to_ensembl(src.raw.var_names[keep_idx]), dtype=str)),
    )
    adata.obs["celltype"] = src.obs["bulk_labels"].astype(str).to_numpy()
    return adata, "scanpy pbmc68k_reduced (counts recovered from .raw, symbols mapped to Ensembl)"


def synthetic_labelled(
    n_cells: int, n_genes: int, vocabulary: list[str], seed: int, n_batches: int = 1, marker_fold: float = 4.0
):
    """Seeded synthetic counts with 6 cell types (marker programs), Ensembl ids from the vocabulary; one sentence, or
    ``n_batches`` samples (``obs['batch']``, the sentences)."""
    from cellplm.bench.data.sources import synthetic

    rng = np.random.default_rng(seed + 1)
    genes = sorted(rng.choice(vocabulary, size=n_genes, replace=False).tolist())
    adata = synthetic(
        n_cells=n_cells,
        n_genes=n_genes,
        n_cell_types=6,
        n_batches=n_batches,
        markers_per_type=30,
        marker_fold=marker_fold,
        seed=seed,
        gene_symbols=genes,
    )
    adata.obs["celltype"] = adata.obs["cell_type"].astype(str).to_numpy()
    adata.obs = adata.obs[["celltype", "batch"]] if n_batches > 1 else adata.obs[["celltype"]]
    sentences = f"{n_batches} samples (obs['batch'])" if n_batches > 1 else "one sentence"
    return adata, (
        f"synthetic (cellplm.bench.data.sources.synthetic, {n_cells} cells, {n_genes} vocabulary genes, 6 "
        f"types, marker fold {marker_fold:g}, {sentences}, seed {seed})"
    )


def finetune_dataset(kind: str, n_cells: int, n_genes: int, vocabulary: list[str], seed: int):
    if kind in ("auto", "pbmc68k"):
        try:
            adata, desc = pbmc68k_counts()
            if n_cells and n_cells < adata.n_obs:
                adata = adata[np.sort(np.random.default_rng(seed).choice(adata.n_obs, n_cells, replace=False))].copy()
            return adata, desc
        except (ModuleNotFoundError, ImportError) as err:
            if kind == "pbmc68k":
                raise SystemExit(f"--finetune-data pbmc68k: {err}")
            print(f"[finetune] pbmc68k_reduced unavailable ({err}); using synthetic labelled data", file=sys.stderr)
    return synthetic_labelled(n_cells or 700, n_genes, vocabulary, seed)


def assign_split(n: int, seed: int, valid: float = 0.1, test: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    split = np.full(n, "train", dtype=object)
    n_test, n_valid = int(round(test * n)), int(round(valid * n))
    split[order[:n_test]] = "test"
    split[order[n_test : n_test + n_valid]] = "valid"
    return split


# ---- checkpoint --------------------------------------------------------------------------------------------
def make_checkpoint(folder: Path, seed: int) -> tuple[Path, int, float]:
    from cellplm.model import CellPLM, released_config, save_checkpoint

    torch.manual_seed(seed)
    model = CellPLM(released_config())
    n_params = sum(p.numel() for p in model.parameters())
    prefix = folder / "random85M"
    t, _ = timed(lambda: save_checkpoint(model, prefix), torch.device("cpu"))
    return prefix, n_params, t


def upstream_load_share(up_model: torch.nn.Module, prefix: Path) -> tuple[int, int]:
    """How many of upstream's parameters hold the file's values (its loader silently skips mismatches)."""
    saved = torch.load(str(prefix) + ".best.ckpt", map_location="cpu", weights_only=True)["model_state_dict"]
    own = up_model.state_dict()
    same = sum(1 for k, v in own.items() if k in saved and saved[k].shape == v.shape and torch.equal(saved[k], v.cpu()))
    return same, len(own)


# ---- zero-shot embedding -----------------------------------------------------------------------------------
def bench_embedding(args, device, prefix, vocabulary, rows: list, log):
    from CellPLM.pipeline.cell_embedding import CellEmbeddingPipeline

    from cellplm.embed import embed, load_embedder

    n_cells = args.cells or (48_082 if device.type == "cuda" else 4_000)
    rng = np.random.default_rng(args.seed)
    genes = sorted(rng.choice(vocabulary, size=args.genes, replace=False).tolist())
    adata = synthetic_counts(n_cells, genes, args.counts_per_cell, args.seed)
    log(
        f"[embed] {n_cells} cells x {args.genes} genes, {adata.X.nnz / (n_cells * args.genes):.1%} non-zero, one "
        "sentence"
    )

    # -- loading (reported, not part of the throughput)
    with quiet():
        t_up_load, up = timed(
            lambda: CellEmbeddingPipeline(pretrain_prefix=prefix.name, pretrain_directory=str(prefix.parent)), device
        )
    same, total = upstream_load_share(up.model, prefix)
    log(f"[embed] upstream loaded {same}/{total} parameters from the file")
    if same != total:
        log("[embed] WARNING: upstream did not load every parameter from the file; agreement will be off")
    t_our_load, (model, _) = timed(lambda: load_embedder(prefix), device)
    rows += [
        dict(
            section="load",
            metric="load_seconds",
            implementation="upstream",
            precision="fp32",
            value=t_up_load,
            unit="s",
            detail=f"CellEmbeddingPipeline(...); {same}/{total} params loaded from file",
        ),
        dict(
            section="load",
            metric="load_seconds",
            implementation="ours",
            precision="-",
            value=t_our_load,
            unit="s",
            detail="load_embedder(prefix)",
        ),
    ]

    # upstream's stochastic cluster choice, captured with a hook on its GMVAE inference net
    up_clusters: list[torch.Tensor] = []
    up_inference = up.model.latent.layers[1].inference

    def grab(_module, _inp, out):
        up_clusters.append(out["categorical"].argmax(-1).detach().cpu())

    def run_upstream():
        with quiet():
            return up.predict(adata, device=device).detach().cpu().numpy()

    def run_ours(precision):
        def call():
            embed(adata, model, precision=precision, device=str(device), group_key="batch", progress=False)
            return (
                adata.obsm["X_cellplm"].copy(),
                adata.obs["cellplm_cluster"].to_numpy().copy(),
                dict(adata.uns["cellplm"]),
            )

        return call

    variants = [
        ("upstream", "fp32", run_upstream),
        ("ours", "fp32", run_ours("fp32")),
        ("ours", "auto", run_ours("auto")),
    ]
    results = {}
    for impl, prec, fn in variants:
        hook = up_inference.register_forward_hook(grab) if impl == "upstream" else None
        with PeakMemory(device) as mem:
            _, warm = timed(fn, device)  # warm-up: also the embeddings compared below and the peak memory
        if hook is not None:
            hook.remove()
        used = warm[2].get("precision", prec) if impl == "ours" else prec
        results[(impl, prec)] = dict(times=[], cpu=[], warm=warm, mem=mem.peak_bytes, used=used, kind=mem.kind)
    # Timed calls interleaved (upstream, ours fp32, ours auto, upstream, ...) so that other load on the machine
    # hits all three alike.
    for _ in range(args.repeats):
        for impl, prec, fn in variants:
            wall, cpu, _ = timed_cpu(fn, device)
            results[(impl, prec)]["times"].append(wall)
            results[(impl, prec)]["cpu"].append(cpu)
    for (impl, prec), r in results.items():
        r["seconds"] = sec = float(np.median(r["times"]))
        r["best"] = float(np.min(r["times"]))
        r["cpu_seconds"] = float(np.median(r["cpu"]))
        log(
            f"[embed] {impl:8s} {prec:4s} ({r['used']}): median {sec:.3f} s over {args.repeats} "
            f"({', '.join(f'{t:.3f}' for t in r['times'])}) -> {n_cells / sec:,.0f} cells/s; CPU "
            f"{r['cpu_seconds']:.2f} s; "
            f"{r['kind']} {gib(r['mem']):.2f} GiB"
        )

    up_sec = results[("upstream", "fp32")]["seconds"]
    for (impl, prec), r in results.items():
        cps = n_cells / r["seconds"]
        ratio = up_sec / r["seconds"]
        label = "fp32" if impl == "upstream" else (f"{prec}->{r['used']}" if prec == "auto" else prec)
        rows.append(
            dict(
                section="embed",
                metric="cells_per_second",
                implementation=impl,
                precision=label,
                value=cps,
                unit="cells/s",
                ratio_vs_upstream=ratio,
                detail=f"median of {args.repeats} after warm-up; {n_cells} cells x {args.genes} genes; "
                f"times {' '.join(f'{t:.4f}' for t in r['times'])}",
            )
        )
        rows.append(
            dict(
                section="embed",
                metric="cells_per_second_best",
                implementation=impl,
                precision=label,
                value=n_cells / r["best"],
                unit="cells/s",
                ratio_vs_upstream=results[("upstream", "fp32")]["best"] / r["best"],
                detail=f"fastest of {args.repeats} (robust to other load on a shared machine)",
            )
        )
        rows.append(
            dict(
                section="embed",
                metric="seconds",
                implementation=impl,
                precision=label,
                value=r["seconds"],
                unit="s",
                ratio_vs_upstream=r["seconds"] / up_sec,
                detail="end to end, AnnData in, numpy embedding out",
            )
        )
        up_cpu = results[("upstream", "fp32")]["cpu_seconds"]
        rows.append(
            dict(
                section="embed",
                metric="cpu_seconds",
                implementation=impl,
                precision=label,
                value=r["cpu_seconds"],
                unit="s",
                ratio_vs_upstream=r["cpu_seconds"] / up_cpu if up_cpu > 0 else float("nan"),
                detail="process CPU time per call, all threads (median); less sensitive to other load than wall time",
            )
        )
        rows.append(
            dict(
                section="embed",
                metric="peak_memory",
                implementation=impl,
                precision=label,
                value=gib(r["mem"]),
                unit="GiB",
                ratio_vs_upstream=r["mem"] / results[("upstream", "fp32")]["mem"]
                if results[("upstream", "fp32")]["mem"] > 0
                else float("nan"),
                detail=PeakMemory(device).kind + " during the warm-up call",
            )
        )

    # -- agreement
    up_emb = results[("upstream", "fp32")]["warm"]
    our32, our32_cluster, _ = results[("ours", "fp32")]["warm"]
    ourauto, _, _ = results[("ours", "auto")]["warm"]
    up_cluster = torch.cat(up_clusters).numpy() if up_clusters else None
    agree = dict()
    if up_cluster is not None and up_cluster.shape[0] == n_cells:
        same_cluster = up_cluster == our32_cluster
        share = float(same_cluster.mean())
        diff = np.abs(our32[same_cluster] - up_emb[same_cluster]) if same_cluster.any() else np.zeros(1)
        scale = float(np.abs(up_emb[same_cluster]).max()) if same_cluster.any() else float("nan")
        agree.update(same_cluster_share=share, max_abs_diff=float(diff.max()), max_abs_value=scale)
    else:
        log("[embed] could not capture upstream's cluster choice; agreement over all cells")
        diff = np.abs(our32 - up_emb)
        agree.update(
            same_cluster_share=float("nan"), max_abs_diff=float(diff.max()), max_abs_value=float(np.abs(up_emb).max())
        )
    num = (ourauto.astype(np.float64) * our32).sum(1)
    den = np.linalg.norm(ourauto.astype(np.float64), axis=1) * np.linalg.norm(our32.astype(np.float64), axis=1)
    cos = num / np.maximum(den, 1e-30)
    agree.update(
        cos_min=float(cos.min()),
        cos_median=float(np.median(cos)),
        auto_max_abs_diff=float(np.abs(ourauto - our32).max()),
    )
    used_auto = results[("ours", "auto")]["used"]
    rows += [
        dict(
            section="agreement",
            metric="same_cluster_share",
            implementation="ours_fp32_vs_upstream",
            precision="fp32",
            value=agree["same_cluster_share"],
            unit="share",
            detail="cells where upstream's Gumbel sample equals our most probable cluster",
        ),
        dict(
            section="agreement",
            metric="max_abs_diff",
            implementation="ours_fp32_vs_upstream",
            precision="fp32",
            value=agree["max_abs_diff"],
            unit="abs",
            detail=f"on same-cluster cells; max |upstream| = {agree['max_abs_value']:.3g}",
        ),
        dict(
            section="agreement",
            metric="cosine_min",
            implementation=f"ours_{used_auto}_vs_ours_fp32",
            precision=used_auto,
            value=agree["cos_min"],
            unit="cosine",
            detail="per-cell cosine similarity",
        ),
        dict(
            section="agreement",
            metric="cosine_median",
            implementation=f"ours_{used_auto}_vs_ours_fp32",
            precision=used_auto,
            value=agree["cos_median"],
            unit="cosine",
            detail="per-cell cosine similarity",
        ),
        dict(
            section="agreement",
            metric="max_abs_diff",
            implementation=f"ours_{used_auto}_vs_ours_fp32",
            precision=used_auto,
            value=agree["auto_max_abs_diff"],
            unit="abs",
            detail="",
        ),
    ]
    return results, agree, n_cells


# ---- fine-tuning -------------------------------------------------------------------------------------------
def bench_finetune(args, device, prefix, vocabulary, rows: list, log):
    from CellPLM.pipeline.cell_type_annotation import CellTypeAnnotationDefaultModelConfig, CellTypeAnnotationPipeline

    from cellplm.bench.metrics import score
    from cellplm.finetune import CellTypeAnnotator

    adata, desc = finetune_dataset(args.finetune_data, args.finetune_cells, args.finetune_genes, vocabulary, args.seed)
    adata.obs["split"] = assign_split(adata.n_obs, args.seed)
    classes = sorted(adata.obs["celltype"].unique())
    test_mask = (adata.obs["split"] == "test").to_numpy()
    y_test = adata.obs["celltype"].to_numpy()[test_mask]
    E = args.epochs
    log(
        f"[finetune] {desc}: {adata.n_obs} cells x {adata.n_vars} genes, {len(classes)} classes; "
        f"split {dict(adata.obs['split'].value_counts())}; {E} epochs each, no early stopping"
    )
    out = {}

    # -- upstream
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    clock = EpochClock()
    overwrite = dict(CellTypeAnnotationDefaultModelConfig, out_dim=len(classes))
    with contextlib.redirect_stdout(clock), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mem = PeakMemory(device)
        with mem:
            start, cpu0 = time.perf_counter(), time.process_time()
            pipe = CellTypeAnnotationPipeline(
                pretrain_prefix=prefix.name, overwrite_config=overwrite, pretrain_directory=str(prefix.parent)
            )
            t_setup_done = time.perf_counter()
            pipe.fit(
                adata,
                train_config={"epochs": E, "es": 10 * E + 1000, "device": str(device)},
                split_field="split",
                train_split="train",
                valid_split="valid",
                label_fields=["celltype"],
                device=device,
            )
            sync(device)
            end, cpu1 = time.perf_counter(), time.process_time()
        logits = pipe.predict(adata, device=device)
    codes = logits.argmax(1) if logits.ndim == 2 else logits  # upstream's annotation head returns argmax already
    pred = pipe.label_encoders["celltype"].inverse_transform(codes.cpu().numpy())[test_mask]
    stamps = np.array(clock.stamps)
    per_epoch = np.diff(stamps) if stamps.size > 1 else np.array([end - start])
    out["upstream"] = dict(
        epoch_s=float(np.median(per_epoch)),
        wall=end - start,
        wall_per_epoch=(end - start) / E,
        mem=mem.peak_bytes,
        first=float(stamps[0] - t_setup_done) if stamps.size else float("nan"),
        scores=score(y_test, pred),
        precision="fp32",
        n_genes=len(pipe.gene_list),
        epochs_run=int(stamps.size),
        cpu_per_epoch=(cpu1 - cpu0) / E,
        n_pred=len(set(pred)),
    )
    log(
        f"[finetune] upstream: {out['upstream']['epoch_s']:.3f} s/epoch (median between epoch prints), "
        f"{out['upstream']['wall']:.1f} s in all with set-up; test {fmt_scores(out['upstream']['scores'])}"
    )
    del pipe

    # -- ours
    train = adata[adata.obs["split"] != "test"].copy()
    train.obs["is_validation"] = (train.obs["split"] == "valid").to_numpy()
    test = adata[test_mask].copy()
    for precision in args.finetune_precisions:
        with quiet(), PeakMemory(device) as mem:
            start, cpu0 = time.perf_counter(), time.process_time()
            annot = CellTypeAnnotator(
                checkpoint=prefix,
                max_epochs=E,
                patience=10 * E + 1000,
                precision=precision,
                device=str(device),
                seed=args.seed,
                progress=False,
            )
            annot.fit(train, label_key="celltype", unlabelled=test)
            sync(device)
            end, cpu1 = time.perf_counter(), time.process_time()
            pred = np.asarray(annot.predict(test), dtype=str)
        secs = np.array([h["seconds"] for h in annot.history_])
        used = annot.info_.get("precision", precision)
        out[f"ours_{precision}"] = dict(
            epoch_s=float(np.median(secs[1:] if secs.size > 1 else secs)),
            wall=end - start,
            wall_per_epoch=(end - start) / E,
            mem=mem.peak_bytes,
            first=float(secs[0]),
            scores=score(y_test, pred),
            precision=used,
            n_genes=int(annot.info_.get("n_genes_used", -1)),
            epochs_run=len(annot.history_),
            cpu_per_epoch=(cpu1 - cpu0) / E,
            n_pred=len(set(pred)),
        )
        r = out[f"ours_{precision}"]
        log(
            f"[finetune] ours {precision} ({used}): {r['epoch_s']:.3f} s/epoch (median of history_ after epoch 0), "
            f"{r['wall']:.1f} s in all with set-up; test {fmt_scores(r['scores'])}"
        )

    up = out["upstream"]
    for key, r in out.items():
        impl = "upstream" if key == "upstream" else "ours"
        prec = (
            r["precision"]
            if key == "upstream"
            else f"{key.split('_', 1)[1]}->{r['precision']}"
            if key.endswith("auto")
            else r["precision"]
        )
        base = dict(section="finetune", implementation=impl, precision=prec)
        how = (
            "median interval between upstream's per-epoch prints (train step + validation pass)"
            if impl == "upstream"
            else "median of history_[epoch>0]['seconds'] (train step + validation pass)"
        )
        rows += [
            dict(
                base,
                metric="seconds_per_epoch",
                value=r["epoch_s"],
                unit="s",
                ratio_vs_upstream=r["epoch_s"] / up["epoch_s"],
                detail=how,
            ),
            dict(
                base,
                metric="wall_per_epoch_incl_setup",
                value=r["wall_per_epoch"],
                unit="s",
                ratio_vs_upstream=r["wall_per_epoch"] / up["wall_per_epoch"],
                detail=f"fit wall time / {E} epochs, incl. model load and preprocessing",
            ),
            dict(
                base,
                metric="cpu_seconds_per_epoch_incl_setup",
                value=r["cpu_per_epoch"],
                unit="s",
                ratio_vs_upstream=r["cpu_per_epoch"] / up["cpu_per_epoch"],
                detail="process CPU time of fit (all threads) / epochs; less sensitive to other load than wall time",
            ),
            dict(
                base,
                metric="first_epoch_seconds",
                value=r["first"],
                unit="s",
                detail="epoch 0 (after model construction)",
            ),
            dict(
                base,
                metric="peak_memory",
                value=gib(r["mem"]),
                unit="GiB",
                detail=PeakMemory(device).kind + " during fit+predict",
            ),
            dict(base, metric="genes_used", value=r["n_genes"], unit="genes", detail=desc),
            dict(base, metric="epochs_run", value=r["epochs_run"], unit="epochs", detail=""),
            dict(
                base,
                metric="test_predicted_classes",
                value=r["n_pred"],
                unit="classes",
                detail=f"distinct labels predicted on the test cells (of {len(classes)}); 1 = a constant prediction",
            ),
        ]
        for m in ("macro_f1", "accuracy", "balanced_accuracy"):
            rows.append(
                dict(
                    base,
                    metric=f"test_{m}",
                    value=r["scores"][m],
                    unit="score",
                    ratio_vs_upstream=r["scores"][m] / up["scores"][m] if up["scores"][m] else float("nan"),
                    detail=f"{int(test_mask.sum())} test cells after {E} epochs (best-valid-F1 weights); "
                    "cellplm.bench.metrics.score",
                )
            )
    return out


def fmt_scores(s: dict) -> str:
    return f"macro-F1 {s['macro_f1']:.3f}, accuracy {s['accuracy']:.3f}, balanced accuracy {s['balanced_accuracy']:.3f}"


# ---- report ------------------------------------------------------------------------------------------------
def print_table(rows: list, meta: dict) -> None:
    print()
    print("CellPLM speed: ours vs upstream (CellPLM 0.1.0.post2)")
    for k, v in meta.items():
        print(f"  {k}: {v}")
    df = pd.DataFrame(rows)
    df = df[df["section"] != "run"]
    shown = df[
        df["metric"].isin(
            [
                "cells_per_second",
                "cells_per_second_best",
                "cpu_seconds",
                "peak_memory",
                "seconds_per_epoch",
                "cpu_seconds_per_epoch_incl_setup",
                "test_predicted_classes",
                "wall_per_epoch_incl_setup",
                "test_macro_f1",
                "test_accuracy",
                "load_seconds",
                "same_cluster_share",
                "max_abs_diff",
                "cosine_min",
                "cosine_median",
            ]
        )
    ]
    lines = [
        f"  {'section':10s} {'metric':32s} {'implementation':26s} {'precision':12s} {'value':>12s} {'unit':8s} "
        f"{'ours/upstream':>13s}"
    ]
    for _, r in shown.iterrows():
        ratio = r.get("ratio_vs_upstream")
        ratio_s = (
            ""
            if ratio is None or (isinstance(ratio, float) and math.isnan(ratio)) or r["implementation"] == "upstream"
            else f"{ratio:.2f}x"
        )
        val = r["value"]
        val_s = f"{val:,.1f}" if abs(val) >= 100 else f"{val:.4g}"
        lines.append(
            f"  {r['section']:10s} {r['metric']:32s} {r['implementation']:26s} {str(r['precision']):12s} "
            f"{val_s:>12s} {r['unit']:8s} {ratio_s:>13s}"
        )
    print("\n".join(lines))


def verdicts(emb, ft, n_cells, device_type: str = "cpu") -> list[str]:
    out = []
    target = TARGET_EMBED_SPEEDUP[device_type]
    if emb:
        up = emb[("upstream", "fp32")]
        for key in (("ours", "fp32"), ("ours", "auto")):
            r = emb[key]
            speedup = up["seconds"] / r["seconds"]
            best = up["best"] / r["best"]
            cpu = up["cpu_seconds"] / r["cpu_seconds"] if r["cpu_seconds"] > 0 else float("nan")
            ok = "MET" if speedup >= target else "MISSED"
            out.append(
                f"embedding ours {key[1]} ({r['used']}): {speedup:.2f}x upstream's cells/s by median wall time "
                f"(target >= {target:g}x): {ok}; {best:.2f}x by fastest call, {cpu:.2f}x by CPU time"
            )
    if ft:
        up = ft["upstream"]
        for key, r in ft.items():
            if key == "upstream":
                continue
            ratio = r["epoch_s"] / up["epoch_s"]
            cpu = r["cpu_per_epoch"] / up["cpu_per_epoch"] if up["cpu_per_epoch"] > 0 else float("nan")
            df1 = r["scores"]["macro_f1"] - up["scores"]["macro_f1"]
            ok = "MET" if ratio <= TARGET_FINETUNE_RATIO else "MISSED"
            note = (
                " (both predict a single class: the accuracy check says nothing at this many epochs)"
                if r["n_pred"] == 1 and up["n_pred"] == 1
                else ""
            )
            out.append(
                f"fine-tuning {key} ({r['precision']}): {ratio:.2f}x upstream's s/epoch (target <= "
                f"{TARGET_FINETUNE_RATIO:g}x): "
                f"{ok}; {cpu:.2f}x by CPU time incl. set-up; test macro-F1 {r['scores']['macro_f1']:.3f} vs "
                f"{up['scores']['macro_f1']:.3f} (Δ {df1:+.3f}){note}"
            )
    return out


def profile_ours(args, device, prefix, vocabulary, log):
    """Where our time goes: torch.profiler tables for our embedding (fp32, auto) and two fine-tuning epochs."""
    from torch.profiler import ProfilerActivity, profile

    from cellplm.embed import embed, load_embedder
    from cellplm.finetune import CellTypeAnnotator

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cpu_time_total"
    if device.type == "cuda":  # table(sort_by=...) accepts the old CUDA name and maps it to device time
        sort = "self_cuda_time_total"
    n_cells = args.cells or (48_082 if device.type == "cuda" else 4_000)
    rng = np.random.default_rng(args.seed)
    genes = sorted(rng.choice(vocabulary, size=args.genes, replace=False).tolist())
    adata = synthetic_counts(n_cells, genes, args.counts_per_cell, args.seed)
    model, _ = load_embedder(prefix)
    for precision in ("fp32", "auto"):
        embed(adata, model, precision=precision, device=str(device), progress=False)
        with profile(activities=acts) as prof:
            embed(adata, model, precision=precision, device=str(device), progress=False)
        log(f"\n[profile] ours embed, precision={precision}:\n" + prof.key_averages().table(sort_by=sort, row_limit=18))
    if not args.skip_finetune:
        ft, _ = finetune_dataset(args.finetune_data, args.finetune_cells, args.finetune_genes, vocabulary, args.seed)
        split = assign_split(ft.n_obs, args.seed)
        train = ft[split != "test"].copy()
        train.obs["is_validation"] = split[split != "test"] == "valid"
        test = ft[split == "test"].copy()
        for precision in args.finetune_precisions:
            with quiet(), profile(activities=acts) as prof:
                CellTypeAnnotator(
                    checkpoint=prefix,
                    max_epochs=2,
                    patience=1000,
                    precision=precision,
                    device=str(device),
                    seed=args.seed,
                    progress=False,
                ).fit(train, label_key="celltype", unlabelled=test)
            log(
                f"\n[profile] ours fine-tuning fit (2 epochs incl. set-up), precision={precision}:\n"
                + prof.key_averages().table(sort_by=sort, row_limit=22)
            )


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Speed of our CellPLM against upstream CellPLM 0.1.0.post2 (zero-shot embedding and fine-tuning), "
        "both in this process on the same cells, device and checkpoint file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--cells", type=int, default=None, help="cells to embed (default 4000 on CPU, 48082 on GPU)")
    p.add_argument(
        "--genes", type=int, default=3000, help="genes of the synthetic embedding input (from the vocabulary)"
    )
    p.add_argument(
        "--counts-per-cell",
        type=float,
        default=290.0,
        help="mean counts per cell of the embedding input (290: about 8%% of entries non-zero at 3000 genes)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed embedding calls per implementation (median reported)")
    p.add_argument("--finetune-cells", type=int, default=700, help="cells of the fine-tuning dataset (pbmc68k has 700)")
    p.add_argument("--finetune-genes", type=int, default=700, help="genes of the synthetic fine-tuning dataset")
    p.add_argument(
        "--finetune-data",
        choices=("auto", "pbmc68k", "synthetic"),
        default="auto",
        help="pbmc68k: scanpy's pbmc68k_reduced with counts recovered (needs celltypist for symbol mapping); "
        "synthetic: labelled synthetic counts; auto: pbmc68k when possible",
    )
    p.add_argument(
        "--finetune-precisions",
        nargs="+",
        default=["fp32", "auto"],
        choices=("fp32", "auto", "bf16"),
        help="precisions of our fine-tuning runs",
    )
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs for both (no early stopping)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument(
        "--out",
        default=None,
        help="result file (JSON, written atomically; default benchmarks/results/speed_<device>.json)",
    )
    p.add_argument("--skip-finetune", action="store_true", help="embedding only")
    p.add_argument("--skip-embed", action="store_true", help="fine-tuning only")
    p.add_argument(
        "--profile", action="store_true", help="also print torch.profiler tables of our embedding and fine-tuning"
    )
    args = p.parse_args(argv)
    if args.repeats < 1 or args.epochs < 1:
        p.error("--repeats and --epochs must be at least 1")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    prov = provenance("benchmarks/speed.py", argv, vars(args))  # at the start: the date, load and commit of the run
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    try:
        import CellPLM  # noqa: F401
    except ImportError:
        raise SystemExit(
            "upstream CellPLM is not importable: run `bash tools/upstream_env.sh` and use .venv-upstream/bin/python"
        )
    from cellplm.model import released_config
    from cellplm.runtime import Runtime, cpu_has_native_bf16

    def log(msg):
        print(msg, flush=True)

    vocabulary = released_config().gene_list
    if device.type == "cuda":
        dev_name = f"{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    else:
        cpu = platform.processor() or platform.machine()
        dev_name = f"CPU {cpu}, {torch.get_num_threads()} threads, native bf16 {cpu_has_native_bf16()}"
    meta = {
        "device": dev_name,
        "torch": torch.__version__,
        "auto precision": Runtime.resolve(str(device), "auto").precision,
        "python": platform.python_version(),
        "upstream": "CellPLM " + _version("cellplm"),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    log(f"[run] {meta}")
    rows: list[dict] = []
    emb = ft = None
    n_cells = None
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cellplm_speed_") as tmp:
        prefix, n_params, t_save = make_checkpoint(Path(tmp), args.seed)
        log(
            f"[run] random-weight 85M model ({n_params / 1e6:.1f}M parameters) saved in upstream format to {prefix}.* "
            f"({t_save:.1f} s)"
        )
        if not args.skip_embed:
            emb, agree, n_cells = bench_embedding(args, device, prefix, vocabulary, rows, log)
        if not args.skip_finetune:
            ft = bench_finetune(args, device, prefix, vocabulary, rows, log)
        if args.profile:
            profile_ours(args, device, prefix, vocabulary, log)
    meta["total seconds"] = f"{time.perf_counter() - t_all:.0f}"
    meta["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    for k, v in meta.items():
        rows.append(
            dict(section="run", metric=k, implementation="-", precision="-", value=float("nan"), unit="", detail=str(v))
        )
    print_table(rows, meta)
    print()
    for line in verdicts(emb, ft, n_cells, device.type):
        print("  " + line)
    out = Path(args.out) if args.out else RESULTS / f"speed_{device.type}.json"
    cols = ["section", "metric", "implementation", "precision", "value", "unit", "ratio_vs_upstream", "detail"]
    write_result(
        out,
        "speed",
        prov,
        [{c: r.get(c) for c in cols} for r in rows],
        verdicts=verdicts(emb, ft, n_cells, device.type),
        targets={"embed_speedup": TARGET_EMBED_SPEEDUP[device.type], "finetune_ratio": TARGET_FINETUNE_RATIO},
    )
    print(f"\nwrote {out}")
    return 0


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    sys.exit(main())
