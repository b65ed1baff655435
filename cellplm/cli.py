"""``cellplm``: embed, fine-tune and pretrain CellPLM from the command line.

    cellplm embed    DATA.h5ad --checkpoint PREFIX --out EMB.h5ad        zero-shot embeddings in obsm['X_cellplm']
    cellplm finetune TRAIN.h5ad --test TEST.h5ad --checkpoint PREFIX --out PRED.h5ad
    cellplm pretrain CORPUS.h5ad [...] --out DIR                         masked cell modelling
    cellplm inspect  PREFIX                                              load a checkpoint and report every key

A checkpoint PREFIX names the pair ``PREFIX.config.json`` + ``PREFIX.best.ckpt`` (upstream's format).
Errors are one line naming the file and the problem; outputs are written atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from . import finetune_options
from .errors import CellPLMError
from .keys import BATCH, CELLPLM_EMBEDDING, IS_VALIDATION, LABEL, PREDICTION

DESCRIPTION = __doc__.split("\n\n")[0]


def _embed_options(p: argparse.ArgumentParser) -> None:
    """The runtime options of ``cellplm embed`` (the defaults of :func:`cellplm.embed.embed_cells`); ``cellplm
    finetune``'s come from :class:`cellplm.finetune_options.FinetuneConfig`."""
    p.add_argument(
        "--device", default="auto", help="auto (CUDA if visible, else CPU), cpu, cuda, cuda:1 ... (default: auto)"
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="matrix-product precision: auto = bf16 where the hardware has native bf16, else fp32 "
        "(upstream's arithmetic) (default: auto)",
    )
    p.add_argument(
        "--group-key",
        default=BATCH,
        help=f"obs column whose values are the sentences (tissues); missing column = one sentence (default: {BATCH})",
    )
    p.add_argument(
        "--min-gene-share",
        type=float,
        default=0.3,
        help="refuse (exit 3, not applicable) below this share of genes in the vocabulary (default: 0.3)",
    )
    p.add_argument(
        "--min-count-share", type=float, default=0.5, help="... or below this share of counts (default: 0.5)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _policy(text: str):
    from .sentence_policy import SentencePolicy

    try:
        return SentencePolicy.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _read(path):
    from .io import read_h5ad

    return read_h5ad(path)


def cmd_embed(args) -> int:
    import anndata as ad

    from .io import write_h5ad
    from .embed import embed_cells, h5ad_safe, load_embedder

    adata = ad.read_h5ad(args.data, backed="r") if args.backed else _read(args.data)
    model, provenance = load_embedder(args.checkpoint, spatial_pe=True if args.spatial_pe else None)
    result = embed_cells(
        adata,
        model,
        group_key=args.group_key,
        policy=dataclasses.replace(args.sentences, seed=args.sentence_seed),
        max_cells=args.max_cells,
        layer=args.layer,
        gene_ids=args.gene_ids,
        spatial_key=args.spatial_key,
        device=args.device,
        precision=args.precision,
        sample_cluster=args.sample_cluster,
        min_gene_share=args.min_gene_share,
        min_count_share=args.min_count_share,
        progress=not args.no_progress,
        source=args.data,
    )
    out = ad.AnnData(obs=adata.obs.copy())
    out.obsm[CELLPLM_EMBEDDING] = result.embedding
    out.obs["cellplm_cluster"] = result.cluster
    out.uns["cellplm"] = h5ad_safe(json.loads(json.dumps({**provenance, **result.info}, default=str)))
    write_h5ad(out, args.out)
    print(
        f"{args.out}: {adata.n_obs} cells embedded ({result.info['cells_per_second']:.0f} cells/s, "
        f"{result.info['device_detail']})"
    )
    return 0


def cmd_finetune(args) -> int:
    import anndata as ad
    import pandas as pd

    from .io import write_h5ad, write_json
    from .finetune import CellTypeAnnotator

    train = _read(args.train)
    test = _read(args.test)
    model = CellTypeAnnotator(args.checkpoint, **finetune_options.from_args(args))
    model.fit(train, label_key=args.label_key, unlabelled=test)
    labels = model.predict(test)
    out = ad.AnnData(obs=pd.DataFrame({PREDICTION: pd.Series(labels, index=test.obs_names, dtype="string")}))
    write_h5ad(out, args.out)
    if args.save_model:
        model.save(args.save_model)
    if args.history:
        write_json({"info": model.info_, "history": model.history_}, args.history)
    print(
        f"{args.out}: {test.n_obs} test cells labelled; best validation macro-F1 "
        f"{model.info_.get('best_valid_macro_f1')} at epoch {model.info_.get('best_epoch')}"
    )
    return 0


def cmd_inspect(args) -> int:
    from .model import load_model

    _, report = load_model(args.checkpoint, task=args.task, n_classes=args.n_classes)
    print(report.summary())
    if args.verbose:
        print(json.dumps(report.to_dict(), indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cellplm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log details (gene coverage, checkpoint keys)")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser(
        "embed",
        help="zero-shot cell embeddings",
        description="Zero-shot CellPLM embeddings of raw "
        f"counts; writes an h5ad with obs, obsm['{CELLPLM_EMBEDDING}'], obs['cellplm_cluster'] and "
        "uns['cellplm'].",
    )
    e.add_argument("data", help="input h5ad with raw counts")
    e.add_argument("--checkpoint", required=True, help="checkpoint prefix (PREFIX.config.json + PREFIX.best.ckpt)")
    e.add_argument("--out", required=True, help="output h5ad")
    e.add_argument("--layer", help="layer holding raw counts (default: layers['counts'] if present, else X)")
    e.add_argument(
        "--gene-ids",
        help="var column with Ensembl ids, or 'var_names' (default: detect; symbols are "
        "mapped offline with GENCODE v44)",
    )
    e.add_argument(
        "--sentences",
        default="batch",
        type=_policy,
        metavar="POLICY",
        help="which cells share a sentence: batch (one per --group-key value, upstream's), single (every cell alone), "
        "random:K or spatial:K (K cells of a batch, at random or spatially compact by obsm['spatial']), mixed:K "
        "(K random cells across batches) (default: batch)",
    )
    e.add_argument("--sentence-seed", type=int, default=0, help="seed of the random and mixed policies (default: 0)")
    e.add_argument("--max-cells", type=int, help="split sentences larger than this (bounds memory; changes context)")
    e.add_argument("--backed", action="store_true", help="read the input backed (on disk), one sentence at a time")
    e.add_argument("--spatial-key", help="obsm key with 2-D coordinates (scaled to [0, 1] per sentence)")
    e.add_argument(
        "--spatial-pe", action="store_true", help="add the 2-D positional encoding (off in the released model)"
    )
    e.add_argument(
        "--sample-cluster",
        action="store_true",
        help="draw the mixture component as upstream does (stochastic); default: the most probable one (deterministic)",
    )
    _embed_options(e)
    e.set_defaults(func=cmd_embed)

    f = sub.add_parser(
        "finetune",
        help="fine-tune for cell-type annotation",
        description="Fine-tune CellPLM on "
        f"labelled cells (upstream protocol) and label the test cells; writes obs['{PREDICTION}']. "
        "The options are those of cellplm.finetune.CellTypeAnnotator (cellplm/finetune_options.py).",
    )
    f.add_argument("train", help=f"labelled h5ad (raw counts, obs[--label-key]; obs['{IS_VALIDATION}'] optional)")
    f.add_argument("--test", required=True, help="h5ad of the cells to label (context in the transductive setting)")
    f.add_argument("--checkpoint", help="checkpoint prefix; omit to train from random initialisation (--shape)")
    f.add_argument("--out", required=True, help=f"output h5ad with obs['{PREDICTION}']")
    f.add_argument("--label-key", default=LABEL, help=f"obs column with labels (default: {LABEL})")
    f.add_argument("--save-model", metavar="PREFIX", help="also write the fine-tuned model as a checkpoint")
    f.add_argument("--history", metavar="JSON", help="write the per-epoch history and run info")
    finetune_options.add_arguments(f)
    f.set_defaults(func=cmd_finetune)

    from . import pretrain

    t = sub.add_parser(
        "pretrain",
        help="pretrain by masked cell modelling",
        description="Pretrain CellPLM on a corpus of h5ad files (raw counts); resumable, torchrun-ready.",
    )
    pretrain.add_arguments(t)
    t.set_defaults(func=pretrain.run_from_args)

    i = sub.add_parser(
        "inspect",
        help="load a checkpoint and report its keys",
        description="Load a checkpoint into "
        "the architecture of its config and report loaded, new, unused, missing and mismatched keys.",
    )
    i.add_argument("checkpoint", help="checkpoint prefix or .ckpt file")
    i.add_argument("--task", default="embedder", choices=["embedder", "annotation", "pretrain"])
    i.add_argument("--n-classes", type=int, default=2, help="classes of the annotation head (task annotation)")
    i.set_defaults(func=cmd_inspect)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from .errors import NotApplicable

    try:
        return args.func(args)
    except NotApplicable as err:
        print(f"not applicable: {err}", file=sys.stderr)
        return 3
    except (CellPLMError, KeyError, FileNotFoundError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
