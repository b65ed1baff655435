"""``cellplm-bench``: the benchmark's data steps from the command line, outside Snakemake.

cellplm-bench download URL DEST [--sha256 HEX] [--manifest TSV] [--mirror URL ...] [--version-id ID] [--as-of DATE]
                           [--retries N] [--timeout SECONDS]
cellplm-bench preprocess INPUT.h5ad OUTPUT.h5ad [--label-key ...] [--batch-key ...] [--counts ...]
cellplm-bench split DATASET.h5ad OUTDIR [--strategy random|batch_holdout] [--seed 10] [--fractions 0.9 0 0.1]
cellplm-bench synthetic OUTPUT.h5ad [--n-cells N] [--n-genes G] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..keys import LABEL
from .errors import BenchError


def _download(args):
    from .data.download import Manifest, fetch

    timeout = {"timeout": args.timeout} if args.timeout else {}  # else fetch's default
    info = fetch(
        args.url,
        args.dest,
        sha256=args.sha256,
        manifest=Manifest(args.manifest) if args.manifest else None,
        mirrors=args.mirror,
        version_id=args.version_id,
        as_of=args.as_of,
        retries=args.retries,
        **timeout,
    )
    print(json.dumps(info))


def _preprocess(args):
    from .io import write_h5ad, write_json
    from .data.preprocess import DatasetSpec, preprocess

    spec = DatasetSpec(
        Path(args.output).stem,
        label_key=args.label_key,
        batch_key=args.batch_key,
        counts=args.counts,
        gene_symbols=args.gene_symbols,
        gene_ids=args.gene_ids,
        duplicate_genes=args.duplicate_genes,
        min_cells_per_type=args.min_cells_per_type,
    )
    adata, report = preprocess(args.input, spec)
    write_h5ad(adata, args.output)
    write_json(report.__dict__, Path(args.output).with_suffix(".qc.json"))
    print(
        f"{args.output}: {adata.n_obs} cells x {adata.n_vars} genes, {report.n_cell_types} cell types, "
        f"counts from {report.counts_from}"
    )


def _split(args):
    from .io import read_h5ad, write_h5ad
    from .data.split import SplitSpec, make_split

    adata = read_h5ad(args.dataset, layers=False)
    spec = SplitSpec(args.name, strategy=args.strategy, seed=args.seed, test_fraction=args.test_fraction)
    train, valid, test = args.fractions
    parts = make_split(adata, spec, {"train": train, "valid": valid, "test": test}, path=args.dataset)
    for name, part in parts.items():
        write_h5ad(part, Path(args.outdir) / f"{name}.h5ad")
    print(
        f"{args.outdir}: {parts['train'].n_obs} train, {parts['test'].n_obs} test "
        f"({parts['train'].uns['split_protocol']})"
    )


def _synthetic(args):
    from .io import write_h5ad
    from .data.sources import synthetic

    adata = synthetic(
        n_cells=args.n_cells,
        n_genes=args.n_genes,
        n_cell_types=args.n_cell_types,
        n_batches=args.n_batches,
        mean_counts=args.mean_counts,
        seed=args.seed,
        progress=True,
    )
    write_h5ad(adata, args.output)
    print(f"{args.output}: {adata.n_obs} cells x {adata.n_vars} genes, {adata.X.nnz} non-zeros")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cellplm-bench", description="Data steps of the CellPLM annotation benchmark.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("download", help="resumable, retried, sha256-verified download, by each service's contract")
    d.add_argument(
        "url",
        help="http(s) URL, gdrive://<Google Drive file id> (through gdown) or "
        "cellxgene://<dataset id or dataset version id> (CELLxGENE curation API)",
    )
    d.add_argument("dest", help="destination file")
    d.add_argument("--sha256", help="expected checksum")
    d.add_argument("--manifest", help="TSV recording first-download checksums (verified on later downloads)")
    d.add_argument("--retries", type=int, default=4)
    d.add_argument(
        "--timeout", type=float, help="seconds without data before a transfer attempt fails (Google Drive's too)"
    )
    d.add_argument("--mirror", action="append", default=[], help="URL tried when the URL refuses the file (repeatable)")
    d.add_argument("--version-id", help="cellxgene: pin this dataset version")
    d.add_argument("--as-of", help="cellxgene: the newest version published on or before this date (YYYY-MM-DD)")
    d.set_defaults(func=_download)

    pp = sub.add_parser("preprocess", help="write the canonical h5ad (raw counts, symbols, cell_type, batch)")
    pp.add_argument("input")
    pp.add_argument("output")
    pp.add_argument("--label-key", default=LABEL)
    pp.add_argument("--batch-key", default=None)
    pp.add_argument("--counts", default=None, help="X, raw or a layer name (default: detect)")
    pp.add_argument("--gene-symbols", default=None, help="var column with symbols (default: var_names)")
    pp.add_argument("--gene-ids", default=None, help="var column with Ensembl ids, or var_names")
    pp.add_argument("--duplicate-genes", choices=["error", "make_unique"], default="error")
    pp.add_argument("--min-cells-per-type", type=int, default=10)
    pp.set_defaults(func=_preprocess)

    s = sub.add_parser("split", help="write train/test/solution h5ad files")
    s.add_argument("dataset", help="canonical h5ad")
    s.add_argument("outdir")
    s.add_argument("--name", default="published")
    s.add_argument("--strategy", choices=["random", "batch_holdout"], default="random")
    s.add_argument("--seed", type=int, default=10)
    s.add_argument("--fractions", type=float, nargs=3, default=[0.8, 0.1, 0.1], metavar=("TRAIN", "VALID", "TEST"))
    s.add_argument("--test-fraction", type=float, default=0.2, help="batch_holdout only")
    s.set_defaults(func=_split)

    g = sub.add_parser("synthetic", help="seeded synthetic count data (scale tests, demos)")
    g.add_argument("output")
    g.add_argument("--n-cells", type=int, default=2000)
    g.add_argument("--n-genes", type=int, default=2000)
    g.add_argument("--n-cell-types", type=int, default=6)
    g.add_argument("--n-batches", type=int, default=3)
    g.add_argument("--mean-counts", type=float, default=2000.0)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=_synthetic)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except BenchError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
