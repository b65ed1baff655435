"""Zero-shot embedding speed of the foundation models, measured side by side in one job.

The "100x faster" claim of CellPLM is about zero-shot cell embedding: CellPLM sees a cell as one token, scGPT and
Geneformer see every expressed gene of a cell as a token. :func:`run_models` measures each model on the same
cells and the same device, one after the other inside one job. Every model runs in its own interpreter (its own
environment: scGPT needs torch <= 2.3, this project's CellPLM a current torch), through
``python -m cellplm.bench.speed measure``, which times :data:`EMBEDDERS` [model] and writes one JSON row.

Speed does not depend on weight values, so by default every model is built with random weights in its published
shape (CellPLM 85M, scGPT whole-human), which needs no download; ``weights: checkpoint`` uses the checkpoint the
workflow is configured with instead. Each row says which.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

from ..memory import peak_gpu_mb, peak_rss_mb, reset_peak_gpu_memory
from .errors import BenchError, NotApplicable

REFERENCE = "scgpt"  # speed-ups are relative to scGPT, as in the CellPLM paper
COLUMNS = [
    "measure",
    "dataset",
    "split",
    "method",
    "n_cells",
    "n_genes",
    "value",
    "unit",
    "speedup_vs_scgpt",
    "status",
    "reason",
    "device",
    "precision",
    "weights",
    "peak_rss_mb",
    "peak_gpu_mb",
    "job_wall_s",
    "n_seeds",
]


# ---- one model, inside its own environment ----------------------------------------------------------------


def _cellplm(options: dict, device: str):
    """CellPLM, this project's implementation: all cells of the input as sentences of ``max_cells``."""
    from cellplm.embed import embed_cells, load_embedder
    from cellplm.model import CellPLM, config_for_shape
    from cellplm.runtime import device_name, resolve_device

    checkpoint = options.get("checkpoint")
    if options.get("weights", "random") == "checkpoint":
        if not checkpoint:
            raise NotApplicable("weights: checkpoint, but the workflow has no CellPLM checkpoint (cellplm.checkpoint)")
        model, _ = load_embedder(checkpoint)
        weights = f"checkpoint {checkpoint}"
    else:
        shape = options.get("shape", "85M")
        model = CellPLM(config_for_shape(shape).for_embedding())
        weights = f"random weights, {shape} shape"
    meta = {"weights": weights}

    def run(adata):
        result = embed_cells(
            adata,
            model,
            group_key=None,
            max_cells=options.get("max_cells"),
            device=device,
            precision=options.get("precision", "auto"),
            progress=False,
            source="speed input",
        )
        meta.update(precision=result.info["precision"], device=device_name(resolve_device(device)))
        return result.embedding

    return run, meta


def _scgpt(options: dict, device: str):
    """scGPT 0.2.4 (the authors' package): CLS embedding of the expressed genes (include_zero_gene=False)."""
    from cellplm.bench.models.scgpt import embedder as scgpt_embedder
    from cellplm.runtime import device_name, resolve_device

    model_dir = options.get("model_dir") if options.get("weights", "random") == "checkpoint" else None
    if options.get("weights") == "checkpoint" and not model_dir:
        raise NotApplicable("weights: checkpoint, but methods.scgpt.params.model_dir is not set")
    shape = options.get("shape", "whole_human")
    kwargs = {k: options[k] for k in ("batch_size", "max_seq_len", "amp") if k in options}

    def run(adata):
        return scgpt_embedder.embed_cells(adata, model_dir=model_dir, shape=shape, device=device, **kwargs)

    dev = resolve_device(device)
    amp = options.get("amp", True) and dev.type == "cuda"
    return run, {
        "weights": f"checkpoint {model_dir}" if model_dir else f"random weights, {shape} shape",
        "precision": "fp16 autocast" if amp else "fp32",
        "device": device_name(dev),
    }


def _geneformer(options: dict, device: str):
    """Geneformer (transformers BERT over rank-value tokens): needs a model directory with its dictionaries."""
    model_dir = options.get("model_dir")
    if not model_dir:
        raise NotApplicable(
            "no Geneformer model directory configured (methods.geneformer.params.model_dir); "
            "its token and gene-median dictionaries cannot be made up"
        )
    from cellplm.bench.models.geneformer import embedder as geneformer_embedder
    from cellplm.runtime import device_name, resolve_device

    kwargs = {
        k: options[k]
        for k in ("batch_size", "max_input_size", "token_dictionary", "gene_median_dictionary")
        if options.get(k) is not None
    }

    def run(adata):
        return geneformer_embedder.embed_cells(adata, model_dir=model_dir, device=device, **kwargs)

    return run, {
        "weights": f"checkpoint {model_dir}",
        "precision": "fp32",
        "device": device_name(resolve_device(device)),
    }


EMBEDDERS = {"cellplm": _cellplm, "scgpt": _scgpt, "geneformer": _geneformer}
LABELS = {"cellplm": "CellPLM (this project)", "scgpt": "scGPT 0.2.4", "geneformer": "Geneformer"}


def measure(
    model: str, cells_path, options: dict | None = None, device: str = "auto", repeats: int = 3, warmup_cells: int = 8
) -> dict:
    """Time ``repeats`` embeddings of all cells in ``cells_path`` (after a warm-up on a few cells); median reported."""
    import anndata as ad
    import torch

    from .timing import timed

    options = dict(options or {})
    row = {"method": model, "status": "ok", "reason": ""}
    try:
        adata = ad.read_h5ad(cells_path)
        row.update(n_cells=adata.n_obs, n_genes=adata.n_vars)
        embed, meta = EMBEDDERS[model](options, device)
        embed(adata[: min(warmup_cells, adata.n_obs)].copy())  # kernels, allocator, lazy imports
        reset_peak_gpu_memory()
        times = []
        clock = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        for _ in range(repeats):
            seconds, z = timed(lambda: embed(adata), clock)
            times.append(seconds)
        if z.shape[0] != adata.n_obs:
            raise RuntimeError(f"{model} returned {z.shape[0]} embeddings for {adata.n_obs} cells")
        seconds = statistics.median(times)
        row.update(
            seconds=seconds,
            times=times,
            value=adata.n_obs / seconds,
            dim=int(z.shape[1]),
            weights=meta["weights"],
            precision=meta["precision"],
            device=meta["device"],
        )
        if (gpu_mb := peak_gpu_mb()) is not None:
            row["peak_gpu_mb"] = gpu_mb
    except NotApplicable as e:
        row.update(status="not_applicable", reason=str(e))
    except Exception as e:  # noqa: BLE001 - a model that fails is a row, not a crash of the job
        row.update(status="failed", reason=f"{type(e).__name__}: {e}".splitlines()[0][:300])
        traceback.print_exc()
    row["peak_rss_mb"] = peak_rss_mb()
    return row


# ---- the job: every model, one after the other ------------------------------------------------------------


def speed_input(adata, n_cells: int, n_genes: int | None, seed: int = 0):
    """The cells every model embeds: ``n_cells`` drawn without replacement (seeded) and, when ``n_genes`` is set,
    only the ``n_genes`` most variable genes (the input size of both annotation protocols: 3,000 HVGs)."""
    from .normalise import select_hvg

    if adata.n_obs == 0:
        raise BenchError("speed input: the dataset has no cells")
    rng = np.random.default_rng(seed)
    cells = np.sort(rng.choice(adata.n_obs, size=min(n_cells, adata.n_obs), replace=False))
    sub = adata[cells].copy()
    if n_genes and n_genes < sub.n_vars:
        sub = sub[:, select_hvg(sub, n_genes)].copy()
    sub.uns = {"speed_input": {"n_cells": int(sub.n_obs), "n_genes": int(sub.n_vars), "seed": seed}}
    return sub


def run_models(
    models: dict,
    cells_path,
    device: str = "auto",
    repeats: int = 3,
    threads: int | None = None,
    timeout_s: float | None = None,
    log=print,
) -> pd.DataFrame:
    """Measure each model (``{name: {"python": interpreter, "options": {...}}}``) on the same cells and device.

    Each model runs in a subprocess of its own interpreter; a crash, a timeout or a missing interpreter becomes a
    ``failed`` row with the reason; a model without an interpreter (``python`` None, ``reason`` given) a
    ``not_applicable`` row.
    """
    rows = []
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    for name, spec in models.items():
        if not spec.get("python"):
            rows.append({"method": name, "status": "not_applicable", "reason": spec.get("reason") or "no interpreter"})
            continue
        log(f"speed: {name} with {spec['python']} on {device}")
        cmd = [
            spec["python"],
            "-m",
            "cellplm.bench.speed",
            "measure",
            "--model",
            name,
            "--cells",
            str(cells_path),
            "--options",
            json.dumps(spec.get("options", {})),
            "--device",
            device,
            "--repeats",
            str(repeats),
        ]
        t0 = time.perf_counter()
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            why = (
                f"timed out after {timeout_s:.0f} s"
                if isinstance(e, subprocess.TimeoutExpired)
                else f"{type(e).__name__}: {e}"
            )
            rows.append({"method": name, "status": "failed", "reason": why})
            log(f"speed: {name}: {why}")
            continue
        log(out.stderr[-4000:])
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode != 0 or not lines:
            last = (out.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append({"method": name, "status": "failed", "reason": f"exit {out.returncode}: {last}"[:300]})
            continue
        row = json.loads(lines[-1])
        log(
            f"speed: {name}: {row['status']} {row.get('value', float('nan')):.1f} cells/s "
            f"({time.perf_counter() - t0:.0f} s in all) {row.get('reason', '')}"
        )
        rows.append(row)
    return embedding_table(rows)


def embedding_table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df:
            df[col] = np.nan
    df["measure"], df["unit"] = "embedding_throughput", "cells/s"
    ok = df["status"] == "ok"
    df.loc[~ok, "value"] = np.nan
    ref = df.loc[ok & (df["method"] == REFERENCE), "value"]
    df["speedup_vs_scgpt"] = df["value"] / ref.iloc[0] if len(ref) else np.nan
    return df.reindex(columns=COLUMNS + ["seconds", "dim"])


def speed_table(embedding: pd.DataFrame, runs: pd.DataFrame, method_model: dict | None = None) -> pd.DataFrame:
    """``results/tables/speed.tsv``: embedding throughput rows plus fit/predict wall time per run group.

    ``runs`` is :func:`cellplm.bench.report.aggregate.speed` (mean over seeds per dataset, split, method). Wall-time
    speed-ups compare with the method ``scgpt`` on the same dataset and split (scGPT's time / the method's).
    """
    parts = [embedding.reindex(columns=COLUMNS)] if not embedding.empty else []
    for measure, col in (("fit_wall", "fit_s"), ("predict_wall", "predict_s")):
        if runs.empty:
            continue
        r = runs.rename(columns={col: "value"}).assign(
            measure=measure,
            unit="s",
            status="ok",
            reason="",
            n_cells=runs["n_train"] if measure == "fit_wall" else runs["n_test"],
        )
        ref = r[r["method"] == REFERENCE].set_index(["dataset", "split"])["value"]
        key = pd.MultiIndex.from_frame(r[["dataset", "split"]])
        r["speedup_vs_scgpt"] = ref.reindex(key).to_numpy() / r["value"].to_numpy()
        parts.append(r.reindex(columns=COLUMNS))
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(parts, ignore_index=True)


# ---- command line ------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cellplm.bench.speed", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="time one model's zero-shot embedding of an h5ad; prints one JSON row")
    m.add_argument("--model", required=True, choices=sorted(EMBEDDERS))
    m.add_argument("--cells", required=True, help="h5ad of raw counts (cells x genes)")
    m.add_argument("--options", default="{}", help="JSON object of model options (weights, shape, precision, ...)")
    m.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    m.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up (median reported)")
    args = p.parse_args(argv)
    try:
        options = json.loads(args.options)
    except ValueError as e:
        print(f"ERROR: --options: not JSON ({e})", file=sys.stderr)
        return 2
    try:
        row = measure(args.model, args.cells, options, args.device, args.repeats)
    except BenchError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
