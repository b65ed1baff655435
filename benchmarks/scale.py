#!/usr/bin/env python
"""Scale benchmark: preprocessing, splitting and CellPLM zero-shot embedding of large synthetic datasets.

    .venv/bin/python benchmarks/scale.py                         # 50k, 100k, 200k, 500k cells x 20,000 genes
    .venv/bin/python benchmarks/scale.py --cells 2000 4000 --genes 2000 --shape tiny --workdir /tmp/s

1. Generation (one subprocess, one pass for all sizes): seeded raw counts written chunk by chunk straight into
   h5ad files (CSR datasets grown with h5py; the dense matrix never exists). The dataset of N cells is the first
   N cells of one cell stream, so the sizes are nested. Structure: ``--cell-types`` cell types (``obs['cell_type']``)
   with marker programs (``--genes`` / 25 markers each), ``--batches`` batches (``obs['batch']``) with gene-wise
   batch effects, log-normal library sizes (mean ``--counts-per-cell``) and Poisson noise: the project's one
   synthetic generator, ``cellplm.bench.data.sources.SyntheticCounts`` (the workflow's ``synthetic`` source).
   Genes are real human symbols from the GENCODE v44 table that CellTypist ships (what the workflow maps
   symbols with); ``--vocab-share`` of them are in the CellPLM vocabulary, the rest are not.
2. For each size, three steps, each in its own subprocess, exactly as the workflow runs them:
   ``preprocess`` (``cellplm.bench.data.preprocess.preprocess`` + ``cellplm.bench.io.write_h5ad``, as
   workflow/scripts/data/preprocess.py), ``split`` (``read_h5ad(layers=False)`` + ``make_split`` with the published
   random split + ``write_h5ad`` of train/test/solution, as workflow/scripts/data/split.py) and ``embed``
   (``cellplm.embed.embed_cells`` of the preprocessed file, streamed from disk, sentences = batches as in the
   zero-shot method; random weights of the ``--shape`` shape unless ``--checkpoint`` is given).
3. Peak memory of a step: ``ru_maxrss`` of the step's process as the kernel reports it to ``os.wait4`` (peak
   resident set size of that one child, interpreter and imports included). Wall time: the child's wall clock.

Results: ``--out`` (default benchmarks/results/scale.json; written atomically after every step, so a long run
leaves a partial file): one row per size and step with the growth of peak memory and wall time relative to the
smallest size, and the run's provenance (date, machine, versions, commit, command); a markdown table is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STEPS = ("preprocess", "split", "embed")
COLUMNS = [
    "n_cells",
    "n_genes",
    "nnz",
    "counts_per_cell",
    "step",
    "status",
    "wall_s",
    "peak_rss_gib",
    "peak_growth",
    "wall_growth",
    "cells_per_s",
    "n_cells_out",
    "n_genes_out",
    "detail",
    "device",
    "precision",
    "threads",
    "weights",
    "machine_mem_gib",
    "cpu_cores",
    "date",
]
SPLIT_FRACTIONS = {"train": 0.9, "valid": 0.0, "test": 0.1}  # the synthetic dataset's fractions in config/demo.yaml
GIB = 1024**3


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- generation ------------------------------------------------------------------------------------------------


def gene_symbols(n_genes: int, vocab_share: float, seed: int):
    """``n_genes`` unique human symbols (GENCODE v44, CellTypist's table) and whether each is in the vocabulary."""
    import numpy as np

    from cellplm.genes import ENSEMBL_RE, gencode_symbol_to_id
    from cellplm.model.config import released_config

    vocab = set(released_config().gene_list)
    table = gencode_symbol_to_id()
    ok = sorted(s for s in table if s and not ENSEMBL_RE.match(s))
    seen: set[str] = set()
    inside = [s for s in ok if table[s] in vocab and not (table[s] in seen or seen.add(table[s]))]  # one symbol per id
    outside = [s for s in ok if table[s] not in vocab]
    rng = np.random.default_rng(seed)
    n_in = min(len(inside), int(round(n_genes * vocab_share)))
    n_out = n_genes - n_in
    if n_out > len(outside):
        raise SystemExit(f"--genes {n_genes}: only {len(inside)} vocabulary and {len(outside)} other symbols available")
    picked = list(rng.choice(inside, n_in, replace=False)) + list(rng.choice(outside, n_out, replace=False))
    order = rng.permutation(n_genes)
    symbols = np.array(picked, dtype=object)[order]
    in_vocab = np.array([True] * n_in + [False] * n_out)[order]
    return symbols, in_vocab


class H5adCSRWriter:
    """An h5ad file whose X (CSR) grows chunk by chunk; obs and var are written at the end."""

    def __init__(self, path: Path, n_genes: int, compression: str | None, index_dtype: str):
        import h5py

        self.path, self.n_genes = path, n_genes
        self.tmp = path.parent / f".{path.stem}.partial-{os.getpid()}{path.suffix}"
        self.f = h5py.File(self.tmp, "w")
        self.f.attrs["encoding-type"], self.f.attrs["encoding-version"] = "anndata", "0.1.0"
        g = self.f.create_group("X")
        g.attrs["encoding-type"], g.attrs["encoding-version"] = "csr_matrix", "0.1.0"
        kw = dict(maxshape=(None,), chunks=(1 << 18,), compression=compression)
        self.data = g.create_dataset("data", (0,), dtype="float32", **kw)
        # indices and indptr share one dtype, as scipy keeps them (mixed dtypes break some scipy routines)
        self.indices = g.create_dataset("indices", (0,), dtype=index_dtype, **kw)
        self.indptr = g.create_dataset("indptr", (1,), dtype=index_dtype, maxshape=(None,), chunks=(1 << 16,), data=[0])
        self.group, self.n_cells, self.nnz = g, 0, 0

    def append(self, data, indices, indptr) -> None:
        n, k = len(indptr) - 1, len(data)
        self.data.resize((self.nnz + k,))
        self.data[self.nnz :] = data
        self.indices.resize((self.nnz + k,))
        self.indices[self.nnz :] = indices
        self.indptr.resize((self.n_cells + n + 1,))
        self.indptr[self.n_cells + 1 :] = indptr[1:] + self.nnz
        self.n_cells += n
        self.nnz += k

    def close(self, obs, var) -> None:
        try:
            from anndata.io import write_elem
        except ImportError:  # pragma: no cover
            from anndata.experimental import write_elem

        self.group.attrs["shape"] = (self.n_cells, self.n_genes)
        write_elem(self.f, "obs", obs)
        write_elem(self.f, "var", var)
        write_elem(self.f, "uns", {"generator": "benchmarks/scale.py"})
        self.f.close()
        os.replace(self.tmp, self.path)


def generate(sizes: list[int], n_genes: int, paths: list[Path], args) -> dict:
    """Write the nested datasets (first N cells of one stream) in one pass; returns per-size nnz."""
    from cellplm.bench.data.sources import SyntheticCounts

    symbols, in_vocab = gene_symbols(n_genes, args.vocab_share, args.seed)
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    todo = [sizes[i] for i in order]
    # The shared generator (cellplm.bench.data.sources), one stream for the largest size; smaller sizes are its
    # prefixes.
    model = SyntheticCounts(
        n_cells=todo[-1],
        n_genes=n_genes,
        n_cell_types=args.cell_types,
        n_batches=args.batches,
        mean_counts=args.counts_per_cell,
        markers_per_type=max(1, n_genes // 25),
        seed=args.seed,
        chunk=args.gen_chunk,
        gene_symbols=symbols.astype(str),
    )
    # nnz <= total counts; int32 indices while that stays well below 2**31, as scipy would choose
    index_dtype = "int32" if max(sizes) * args.counts_per_cell * 1.5 < 2**31 - 1 else "int64"
    writers = [H5adCSRWriter(paths[i], n_genes, args.raw_compression, index_dtype) for i in order]
    done, index, t0 = 0, 0, time.perf_counter()
    total_counts = 0.0
    for block in model.chunks():
        n = block.shape[0]
        data, indices, indptr = block.data, block.indices, block.indptr
        total_counts += float(data.sum())
        for w, size in zip(writers, todo):
            keep = min(n, size - done)
            if keep > 0:
                w.append(data[: indptr[keep]], indices[: indptr[keep]], indptr[: keep + 1])
        done += n
        index += 1
        if index % 10 == 0 or done == todo[-1]:
            rate = done / (time.perf_counter() - t0)
            log(f"generate: {done:,}/{todo[-1]:,} cells ({rate:,.0f} cells/s)")
    var = model.var()
    out = {}
    for w, size in zip(writers, todo):
        w.close(model.obs(size), var)
        out[size] = {"nnz": int(w.nnz)}
    for size in out:
        out[size].update(n_genes=n_genes, vocab_genes=int(in_vocab.sum()))
    out["_mean_counts_per_cell"] = total_counts / todo[-1]
    return out


# ---- steps (each runs in its own process) ------------------------------------------------------------------------


def step_preprocess(src: Path, dst: Path, qc: Path) -> dict:
    from cellplm.bench.io import write_h5ad, write_json
    from cellplm.bench.data.preprocess import DatasetSpec, preprocess

    spec = DatasetSpec.from_config(
        "synthetic", {"label_key": "cell_type", "batch_key": "batch", "split_fractions": SPLIT_FRACTIONS}
    )
    adata, report = preprocess(src, spec)
    write_h5ad(adata, dst)
    write_json(report.__dict__, qc)
    return {
        "n_cells_out": report.n_cells,
        "n_genes_out": report.n_genes,
        "detail": f"{report.ensembl_mapped_fraction:.1%} genes mapped to Ensembl ids; "
        f"{report.dropped_empty_genes} empty genes dropped",
    }


def step_split(src: Path, outdir: Path) -> dict:
    from cellplm.bench.io import read_h5ad, write_h5ad
    from cellplm.bench.data.split import SplitSpec, make_split

    adata = read_h5ad(src, layers=False)
    spec = SplitSpec.from_config("published", {"strategy": "random", "seed": 10})
    parts = make_split(adata, spec, SPLIT_FRACTIONS, path=src)
    for name in ("train", "test", "solution"):
        write_h5ad(parts[name], outdir / f"{name}.h5ad")
    u = parts["train"].uns
    return {
        "n_cells_out": int(u["n_train"] + u["n_test"]),
        "n_genes_out": int(adata.n_vars),
        "detail": f"published random split 90/0/10: {u['n_train']} train, {u['n_test']} test",
    }


def step_embed(src: Path, args) -> dict:
    import anndata as ad
    import h5py
    import numpy as np
    import torch

    try:
        from anndata.io import read_elem, sparse_dataset
    except ImportError:  # pragma: no cover
        from anndata.experimental import read_elem, sparse_dataset

    from cellplm.embed import embed_cells, load_embedder
    from cellplm.model import CellPLM, config_for_shape

    torch.set_num_threads(args.threads)
    if args.checkpoint:
        model, _ = load_embedder(args.checkpoint)
        weights = f"checkpoint {args.checkpoint}"
    else:
        torch.manual_seed(0)
        model = CellPLM(config_for_shape(args.shape).for_embedding())
        weights = f"random weights, {args.shape} shape"
    with h5py.File(src, "r") as f:
        # Streamed: the counts stay on disk (anndata's backed mode would load layers['counts'] into memory).
        adata = ad.AnnData(
            X=sparse_dataset(f["layers/counts"] if "layers/counts" in f else f["X"]),
            obs=read_elem(f["obs"]),
            var=read_elem(f["var"]),
        )
        result = embed_cells(
            adata,
            model,
            group_key="batch",
            max_cells=args.max_cells,
            device=args.device,
            precision=args.precision,
            progress=sys.stderr.isatty(),
            source=str(src),
        )
    z = result.embedding
    if not np.isfinite(z).all() or z.shape[0] != adata.n_obs:
        raise RuntimeError(f"bad embedding: shape {z.shape}, finite {np.isfinite(z).all()}")
    info = result.info
    return {
        "n_cells_out": int(z.shape[0]),
        "n_genes_out": int(info["genes"]["n_matched"]),
        "cells_per_s": info["cells_per_second"],
        "device": info["device_detail"].rsplit(",", 1)[0],
        "precision": info["precision"],
        "weights": weights,
        "detail": (
            f"{info['genes']['n_matched']}/{info['genes']['n_genes']} genes in the vocabulary "
            f"({info['genes']['count_share']:.1%} of counts); {info['n_sentences']} sentences "
            f"(group_key batch, max_cells {args.max_cells or 'none'}); embedding {z.shape[1]}-d; "
            f"streamed from disk"
        ),
    }


def child_main(argv: list[str]) -> int:
    """``_step NAME JSON``: run one step, print its result as the last line (JSON)."""
    name, params = argv[0], json.loads(argv[1])
    args = argparse.Namespace(**params["args"])
    t0 = time.perf_counter()
    if name == "generate":
        paths = [Path(p) for p in params["paths"]]
        res = generate(params["sizes"], args.genes, paths, args)
        res = {str(k): v for k, v in res.items()}
    elif name == "preprocess":
        res = step_preprocess(Path(params["src"]), Path(params["dst"]), Path(params["qc"]))
    elif name == "split":
        res = step_split(Path(params["src"]), Path(params["outdir"]))
    elif name == "embed":
        res = step_embed(Path(params["src"]), args)
    else:
        raise SystemExit(f"unknown step {name}")
    res["wall_s"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(res), flush=True)
    return 0


def run_child(name: str, params: dict, log_path: Path) -> dict:
    """Run one step in a fresh interpreter; peak RSS from os.wait4 (that child only)."""
    from cellplm.bench.timing import child_peak_rss

    cmd = [sys.executable, str(Path(__file__).resolve()), "_step", name, json.dumps(params)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with open(log_path, "a") as logf:
        logf.write(f"\n=== {name} {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        logf.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logf, text=True, env=env, cwd=ROOT)
        result = None
        for line in proc.stdout:
            logf.write(line)
            logf.flush()
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
            elif line.startswith("["):
                print("    " + line.rstrip(), flush=True)
        proc.stdout.close()
        rc, peak_bytes = child_peak_rss(proc.pid)
    proc.returncode = rc
    wall = time.perf_counter() - t0
    peak = peak_bytes / GIB
    if rc != 0 or result is None:
        reason = f"exit code {rc}" if rc >= 0 else f"killed by signal {-rc}"
        return {"status": f"failed ({reason}; see {log_path})", "peak_rss_gib": peak, "wall_s": wall}
    result.update(status="ok", peak_rss_gib=peak, process_wall_s=wall)
    return result


# ---- driver ----------------------------------------------------------------------------------------------------


def machine_mem_gib() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / GIB
    return float("nan")


def finish_table(rows: list[dict]):
    import pandas as pd

    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = None
    df = df[COLUMNS].sort_values(["step", "n_cells"], key=lambda s: s.map(STEPS.index) if s.name == "step" else s)
    for step, g in df.groupby("step"):
        ok = g[g["status"] == "ok"]
        if ok.empty:
            continue
        base = ok.loc[ok["n_cells"].idxmin()]
        df.loc[g.index, "peak_growth"] = g["peak_rss_gib"] / base["peak_rss_gib"]
        df.loc[g.index, "wall_growth"] = g["wall_s"] / base["wall_s"]
    for c, digits in (("wall_s", 2), ("peak_rss_gib", 3), ("peak_growth", 3), ("wall_growth", 3), ("cells_per_s", 1)):
        df[c] = pd.to_numeric(df[c], errors="coerce").round(digits)
    return df.reset_index(drop=True)


def markdown(df, meta: dict) -> str:
    lines = [
        "# Scale benchmark (synthetic data)",
        "",
        f"{meta['genes']:,} genes, about {meta['counts']:,.0f} counts per cell; machine: {meta['mem']:.1f} GiB RAM, "
        f"{meta['cores']} CPU cores; {meta['date']}. Peak memory: peak resident set size of each step's own process "
        "(os.wait4 ru_maxrss, interpreter and imports included); growth = value / value at the smallest size. "
        f"Embedding: {meta['weights']} ({meta['precision']}, {meta['threads']} threads), sentences = batches. "
        f"Generated by `{meta['command']}`.",
        "",
        "| step | cells | nnz | wall s | peak RSS GiB | peak growth | time growth | cells/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def f(x, fmt):
        return "" if x is None or x != x else format(x, fmt)

    for r in df.itertuples():
        status = "" if r.status == "ok" else f" ({r.status})"
        lines.append(
            f"| {r.step}{status} | {r.n_cells:,} | {r.nnz:,} | {f(r.wall_s, '.1f')} | {f(r.peak_rss_gib, '.2f')} | "
            f"{f(r.peak_growth, '.2f')}x | {f(r.wall_growth, '.2f')}x | {f(r.cells_per_s, ',.0f')} |"
        )
    if meta.get("generation"):
        lines += ["", meta["generation"]]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " (see the module docstring)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--cells", type=int, nargs="+", default=[50_000, 100_000, 200_000, 500_000], help="dataset sizes")
    p.add_argument("--genes", type=int, default=20_000, help="genes per dataset")
    p.add_argument("--counts-per-cell", type=float, default=2000.0, help="mean counts per cell")
    p.add_argument("--cell-types", type=int, default=8)
    p.add_argument("--batches", type=int, default=5)
    p.add_argument("--vocab-share", type=float, default=0.9, help="share of genes taken from the CellPLM vocabulary")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    p.add_argument("--shape", default="85M", help="CellPLM shape for random weights (85M, small, tiny)")
    p.add_argument("--checkpoint", default=None, help="CellPLM checkpoint prefix (default: random weights)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for embedding")
    p.add_argument(
        "--max-cells", type=int, default=None, help="split sentences larger than this (default: whole batches)"
    )
    p.add_argument(
        "--raw-compression", default=None, choices=[None, "gzip", "lzf"], help="compression of the raw input"
    )
    p.add_argument("--gen-chunk", type=int, default=2000, help="cells generated per chunk")
    p.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "cellplm_scale", help="folder for the data files"
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the h5ad files (default: delete each size's files when done)"
    )
    p.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json", help="result file (JSON)"
    )
    p.add_argument("--memory-limit-gib", type=float, default=24.0, help="a step above this counts as not fitting")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_step":
        return child_main(argv[1:])
    args = parse_args(argv)
    from benchmarks.common import provenance, write_result

    prov = provenance("benchmarks/scale.py", argv, vars(args))

    sizes = sorted(set(args.cells))
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "benchmark_scale.log"
    child_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    raw = [work / f"n{n}" / "raw.h5ad" for n in sizes]
    for r in raw:
        r.parent.mkdir(parents=True, exist_ok=True)
    log(f"generating {', '.join(f'{n:,}' for n in sizes)} cells x {args.genes:,} genes in {work} (log: {log_path})")
    gen = run_child("generate", {"args": child_args, "sizes": sizes, "paths": [str(p) for p in raw]}, log_path)
    if gen["status"] != "ok":
        log(f"generation {gen['status']}")
        return 1
    counts = gen["_mean_counts_per_cell"]
    generation = (
        f"Generation (all sizes in one pass, not part of the table): {gen['wall_s']:.0f} s, peak RSS "
        f"{gen['peak_rss_gib']:.2f} GiB; {gen[str(sizes[0])]['vocab_genes']:,} of {args.genes:,} genes are "
        f"CellPLM vocabulary symbols; mean {counts:,.0f} counts per cell."
    )
    log(generation)
    common = {
        "n_genes": args.genes,
        "counts_per_cell": round(counts, 1),
        "threads": args.threads,
        "machine_mem_gib": round(machine_mem_gib(), 1),
        "cpu_cores": os.cpu_count(),
        "date": dt.date.today().isoformat(),
    }
    rows, meta_embed = [], {"weights": "", "precision": ""}
    for n, src in zip(sizes, raw):
        folder = src.parent
        pre = folder / "synthetic.h5ad"
        failed = False
        for step in args.steps:
            if failed and step in ("split", "embed") and "preprocess" in args.steps:
                rows.append(
                    {
                        **common,
                        "n_cells": n,
                        "nnz": gen[str(n)]["nnz"],
                        "step": step,
                        "status": "skipped (preprocess failed)",
                    }
                )
                continue
            log(f"n={n:,}: {step} ...")
            if step == "preprocess":
                res = run_child(
                    step,
                    {"args": child_args, "src": str(src), "dst": str(pre), "qc": str(folder / "qc.json")},
                    log_path,
                )
            elif step == "split":
                res = run_child(step, {"args": child_args, "src": str(pre), "outdir": str(folder / "split")}, log_path)
            else:
                res = run_child(step, {"args": child_args, "src": str(pre)}, log_path)
                meta_embed.update({k: res[k] for k in ("weights", "precision") if k in res})
            row = {**common, "n_cells": n, "nnz": gen[str(n)]["nnz"], "step": step, **res}
            row.setdefault("device", "cpu" if step != "embed" else args.device)
            row.setdefault("precision", "")
            row.setdefault("weights", "")
            if step != "embed":
                row["threads"] = 1
            if row["status"] == "ok" and row["peak_rss_gib"] > args.memory_limit_gib:
                row["status"] = f"over {args.memory_limit_gib:g} GiB"
            rows.append(row)
            failed |= step == "preprocess" and res["status"] != "ok"
            extra = f", {res['cells_per_s']:,.0f} cells/s" if res.get("cells_per_s") else ""
            log(
                f"n={n:,}: {step} {res['status']}: {res['wall_s']:.1f} s, peak RSS {res['peak_rss_gib']:.2f} GiB{extra}"
            )
            write_result(args.out, "scale", prov, finish_table(rows).to_dict("records"), complete=False)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    meta = {
        "genes": args.genes,
        "counts": counts,
        "mem": machine_mem_gib(),
        "cores": os.cpu_count(),
        "date": common["date"],
        "threads": args.threads,
        "generation": generation,
        "command": prov["command"],
        **meta_embed,
    }
    df = finish_table(rows)
    write_result(
        args.out,
        "scale",
        prov,
        df.to_dict("records"),
        complete=True,
        generation=generation,
        mean_counts_per_cell=counts,
        embedding={k: meta[k] for k in ("weights", "precision", "threads")},
    )
    md = markdown(df, meta)
    print()
    print(md)
    log(f"wrote {args.out} ({platform.node()})")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
