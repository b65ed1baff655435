#!/usr/bin/env python
"""Fine-tuning accuracy of our CellPLM against upstream ``CellPLM`` 0.1.0.post2, side by side in one process.

Run it in the upstream environment (``bash tools/upstream_env.sh``) with this repository importable:

    PYTHONPATH=$PWD .venv-upstream/bin/python benchmarks/finetune_accuracy.py trajectory --shape small --epochs 150
    PYTHONPATH=$PWD .venv-upstream/bin/python benchmarks/finetune_accuracy.py seeds --shape small --seeds 0-15

Both implementations fine-tune from the SAME checkpoint file on the SAME cells and split. The file is an
annotation-shaped model (encoder, fresh linear latent and head all included), written once per seed by our
package in the upstream format, so upstream's loader and ours start from identical weights, including the
latent and head that the protocol initialises fresh. Without ``--pretrained`` the trunk is random
(``--shape``); with it the trunk is that pretrained checkpoint and only the latent and head are fresh.

``trajectory``: deterministic equivalence of the training loop. Augmentation OFF in both (every dropout p=0,
including the attention's hard-coded 0.01; no cell dropping; no masking), fp32, one thread: the only source of
difference left is floating-point summation order. Per epoch: training loss (the value each loop hands to
ReduceLROnPlateau), learning rates of both groups, the gradient norm that ``clip_grad_norm_`` returns, and
validation macro-F1. Reports the first epoch where the two differ beyond a relative tolerance.

``seeds``: the protocol (augmentation ON) over many seeds: test macro-F1 of upstream, ours fp32 and ours bf16
(``--precisions``) for each seed, with mean, sd and a paired comparison (mean difference, its 95% t interval,
sign-flip permutation p-value, wins/ties/losses). A seed fixes the checkpoint's fresh weights and the RNG
streams; the data and split are fixed by ``--data-seed``.

``trajectory --control upstream|ours``: the drift baseline, one implementation against itself with the
sentence's cells permuted (only the floating-point summation order changes).
``summary A.tsv B.tsv``: the seeds table over several ``seeds`` runs (e.g. seed ranges run separately).
``corpus --out X.h5ad``: a synthetic pretraining corpus over the fine-tuning genes, for
``python -m cellplm.pretrain X.h5ad --out DIR --shape small`` and then ``--pretrained DIR/model``.

Results go to a JSON result file under benchmarks/results/ (rows: one per run/epoch; with the run's provenance:
date, machine, versions, commit, command), and a table with ratios is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import provenance, write_result  # noqa: E402

DEFAULT_OUT = {"trajectory": "benchmarks/results/finetune_trajectory.json",
               "seeds": "benchmarks/results/finetune_accuracy.json"}


# ---- data and checkpoints ----------------------------------------------------------------------------------
def labelled_data(n_cells: int, n_genes: int, seed: int):
    """Seeded synthetic labelled counts (6 types, vocabulary genes, one sentence) and a train/valid/test split.

    Cells are ordered train/valid first, test last, so that both implementations hold the cells of the
    sentence in the same order (ours puts the test context after the training cells).
    """
    from benchmarks.speed import assign_split, synthetic_labelled

    from cellplm.model import released_config

    adata, desc = synthetic_labelled(n_cells, n_genes, released_config().gene_list, seed)
    adata.obs["split"] = assign_split(adata.n_obs, seed)
    order = np.argsort((adata.obs["split"] == "test").to_numpy(), kind="stable")
    return adata[order].copy(), desc


def init_checkpoint(folder: Path, shape: str, n_classes: int, seed: int, pretrained: str | None) -> Path:
    """An annotation-shaped checkpoint (trunk random of ``shape`` or from ``pretrained``; fresh latent and head
    drawn with ``seed``) in the upstream file format, loaded by both implementations."""
    from cellplm.model import CellPLM, config_for_shape, load_model, save_checkpoint

    torch.manual_seed(seed)
    if pretrained:
        model, report = load_model(pretrained, task="annotation", n_classes=n_classes)
        if not report.ok:
            raise SystemExit(f"{pretrained}: {report.summary()}")
    else:
        model = CellPLM(config_for_shape(shape).for_annotation(n_classes))
    prefix = folder / f"init_seed{seed}"
    save_checkpoint(model, prefix)
    return prefix


def no_dropout(model: torch.nn.Module) -> int:
    """Set p=0 on every dropout module (torch's and ours); returns how many were switched off."""
    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout) or type(m).__name__ == "Dropout":
            m.p = 0.0
            n += 1
    return n


@contextlib.contextmanager
def quiet():
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield sink
        except BaseException:
            sys.__stderr__.write(sink.getvalue()[-4000:])
            raise


# ---- instrumentation: the values each loop hands to the scheduler and to clipping --------------------------
class Recorder:
    """Patches ``ReduceLROnPlateau.step`` and ``torch.nn.utils.clip_grad_norm_`` (both loops call them once per
    step) and upstream's validation ``inference``, recording per step: loss, both learning rates, gradient norm."""

    def __init__(self):
        self.impl = None
        self.steps: list[dict] = []
        self.valid_f1: dict[str, list[float]] = {}
        self._norm = float("nan")

    @contextlib.contextmanager
    def active(self):
        from torch.optim.lr_scheduler import ReduceLROnPlateau

        import CellPLM.pipeline.cell_type_annotation as upstream_cta

        rec = self
        orig_step, orig_clip, orig_inference = ReduceLROnPlateau.step, torch.nn.utils.clip_grad_norm_, upstream_cta.inference

        def step(sched, metrics, *a, **k):
            groups = sched.optimizer.param_groups
            rec.steps.append(dict(implementation=rec.impl, loss=float(metrics), lr_embedder=groups[0]["lr"],
                                  lr_main=groups[1]["lr"], grad_norm=rec._norm))
            return orig_step(sched, metrics, *a, **k)

        def clip(params, max_norm, *a, **k):
            norm = orig_clip(params, max_norm, *a, **k)
            rec._norm = float(norm)
            return norm

        def inference(model, dataloader, split, *a, **k):
            out = orig_inference(model, dataloader, split, *a, **k)
            if split == "valid":
                rec.valid_f1.setdefault(rec.impl, []).append(float(out["metrics"]["f1_score"]))
            return out

        ReduceLROnPlateau.step, torch.nn.utils.clip_grad_norm_, upstream_cta.inference = step, clip, inference
        try:
            yield self
        finally:
            ReduceLROnPlateau.step, torch.nn.utils.clip_grad_norm_, upstream_cta.inference = orig_step, orig_clip, orig_inference


# ---- one fine-tuning run of each implementation ------------------------------------------------------------
def run_upstream(prefix: Path, adata, n_classes: int, epochs: int, patience: int, seed: int, augment: bool) -> dict:
    from CellPLM.pipeline.cell_type_annotation import CellTypeAnnotationDefaultModelConfig, CellTypeAnnotationPipeline

    from cellplm.bench.metrics import score

    torch.manual_seed(seed)
    np.random.seed(seed)
    overwrite = dict(CellTypeAnnotationDefaultModelConfig, out_dim=n_classes)
    if not augment:  # MaskBuilder needs both rates > 0; otherwise upstream builds NullMaskBuilder(drop_node_rate)
        overwrite.update(drop_node_rate=0.0, mask_node_rate=0.0, mask_feature_rate=0.0)
    with quiet():
        pipe = CellTypeAnnotationPipeline(pretrain_prefix=prefix.name, overwrite_config=overwrite,
                                          pretrain_directory=str(prefix.parent))
    saved = torch.load(str(prefix) + ".best.ckpt", map_location="cpu", weights_only=True)["model_state_dict"]
    own = pipe.model.state_dict()
    missing = [k for k, v in own.items() if not (k in saved and torch.equal(saved[k], v))]
    if missing:
        raise SystemExit(f"upstream did not load {len(missing)} parameters from {prefix} (e.g. {missing[:3]})")
    if not augment:
        no_dropout(pipe.model)
    test = (adata.obs["split"] == "test").to_numpy()
    t0 = time.perf_counter()
    with quiet():
        pipe.fit(adata, train_config={"epochs": epochs, "es": patience}, split_field="split", train_split="train",
                 valid_split="valid", label_fields=["celltype"], device="cpu")
        codes = pipe.predict(adata, device="cpu")
    seconds = time.perf_counter() - t0
    pred = pipe.label_encoders["celltype"].inverse_transform(codes.cpu().numpy())
    return dict(scores=score(adata.obs["celltype"].to_numpy()[test], pred[test]), seconds=seconds, precision="fp32")


def run_ours(prefix: Path, adata, epochs: int, patience: int, seed: int, augment: bool, precision: str) -> dict:
    from cellplm.bench.metrics import score
    from cellplm.finetune import CellTypeAnnotator

    class Annotator(CellTypeAnnotator):
        def _build_model(self, n_classes):
            model = super()._build_model(n_classes)
            if not augment:
                model.config = model.config.replace(drop_node_rate=0.0, mask_node_rate=0.0, mask_feature_rate=0.0)
                no_dropout(model)
            return model

    split = adata.obs["split"].to_numpy()
    train = adata[split != "test"].copy()
    train.obs["is_validation"] = train.obs["split"] == "valid"
    test = adata[split == "test"].copy()
    t0 = time.perf_counter()
    with quiet():
        annot = Annotator(checkpoint=prefix, max_epochs=epochs, patience=patience, precision=precision, device="cpu",
                          seed=seed, progress=False)
        annot.fit(train, label_key="celltype", unlabelled=test)
        pred = np.asarray(annot.predict(test), dtype=str)
    seconds = time.perf_counter() - t0
    return dict(scores=score(test.obs["celltype"].to_numpy(), pred), seconds=seconds, precision=annot.info_["precision"],
                history=annot.history_, best_epoch=annot.info_["best_epoch"])


def corpus(args) -> None:
    """A synthetic pretraining corpus over the genes of the fine-tuning data: with the default ``--corpus-seed``
    (= ``--data-seed``) the same six expression programs (unlabelled, other cells, several samples), as when a
    corpus covers the tissue; another seed gives other programs."""
    from cellplm.bench.data.sources import synthetic

    genes = labelled_data(10, args.genes, args.data_seed)[0].var_names.tolist()
    adata = synthetic(n_cells=args.cells, n_genes=len(genes), n_cell_types=6, n_batches=args.samples, markers_per_type=30,
                      marker_fold=4.0, seed=args.data_seed if args.corpus_seed is None else args.corpus_seed, gene_symbols=genes)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(args.out)
    print(f"wrote {args.out}: {adata.n_obs} cells x {adata.n_vars} genes, {adata.obs['batch'].nunique()} samples (obs['batch'])")


# ---- experiment 1: deterministic trajectories --------------------------------------------------------------
def trajectory(args) -> pd.DataFrame:
    adata, desc = labelled_data(args.cells, args.genes, args.data_seed)
    n_classes = adata.obs["celltype"].nunique()
    print(f"data: {desc}; split {dict(adata.obs['split'].value_counts())}")
    rec = Recorder()
    with tempfile.TemporaryDirectory() as tmp:
        prefix = init_checkpoint(Path(tmp), args.shape, n_classes, args.seed, args.pretrained)
        perm = np.random.default_rng(args.seed).permutation(adata.n_obs)
        with rec.active():
            rec.impl = "upstream"
            if args.control == "ours":  # ours in both columns, the second on permuted cells
                up = run_ours(prefix, adata, args.epochs, args.epochs + 1, args.seed, augment=False, precision="fp32")
                rec.valid_f1["upstream"] = [h.get("valid_macro_f1", float("nan")) for h in up["history"]]
            else:
                up = run_upstream(prefix, adata, n_classes, args.epochs, args.epochs + 1, args.seed, augment=False)
            rec.impl = "ours"
            if args.control == "upstream":  # upstream again, cells of the sentence in another order: summation order only
                ours = run_upstream(prefix, adata[perm].copy(), n_classes, args.epochs, args.epochs + 1, args.seed, augment=False)
                ours_f1 = rec.valid_f1["ours"]
            else:
                ours = run_ours(prefix, adata[perm].copy() if args.control == "ours" else adata, args.epochs, args.epochs + 1,
                                args.seed, augment=False, precision="fp32")
                ours_f1 = [h.get("valid_macro_f1", float("nan")) for h in ours["history"]]
    steps = pd.DataFrame(rec.steps)
    a = steps[steps.implementation == "upstream"].reset_index(drop=True)
    b = steps[steps.implementation == "ours"].reset_index(drop=True)
    if len(a) != len(b):
        raise SystemExit(f"different numbers of steps: upstream {len(a)}, other {len(b)}")
    rows = []
    for e in range(len(a)):
        row = dict(epoch=e)
        for col in ("loss", "lr_embedder", "lr_main", "grad_norm"):
            row[f"upstream_{col}"], row[f"ours_{col}"] = a.at[e, col], b.at[e, col]
            row[f"rel_diff_{col}"] = abs(a.at[e, col] - b.at[e, col]) / max(abs(a.at[e, col]), 1e-30)
        row["upstream_valid_f1"] = rec.valid_f1["upstream"][e]
        row["ours_valid_f1"] = ours_f1[e]
        rows.append(row)
    df = pd.DataFrame(rows)
    tol = args.tolerance
    bad = df[(df[[f"rel_diff_{c}" for c in ("loss", "lr_embedder", "lr_main", "grad_norm")]] > tol).any(axis=1)
             | (df.upstream_valid_f1 - df.ours_valid_f1).abs().gt(1e-6)]
    first = int(bad.epoch.iloc[0]) if len(bad) else None
    if args.control:
        print(f"CONTROL: both columns are {args.control}, the second ('ours') with the sentence's cells permuted "
              "(floating-point summation order only)")
    print(f"\nDeterministic trajectories ({args.shape}{', pretrained ' + args.pretrained if args.pretrained else ', random init'}; "
          f"no dropout, no cell dropping, no masking; fp32; {torch.get_num_threads()} thread(s))")
    print(f"{'epoch':>5s} {'loss up':>10s} {'loss ours':>10s} {'rel':>8s} {'|g| up':>9s} {'|g| ours':>9s} {'rel':>8s} "
          f"{'lr main':>9s} {'lr emb':>9s} {'F1 up':>6s} {'F1 ours':>7s}")
    show = sorted(set(range(0, 10)) | set(range(10, len(df), max(1, len(df) // 20))) | {len(df) - 1}
                  | ({first} if first is not None else set()))
    for e in (e for e in show if e < len(df)):
        r = df.iloc[e]
        print(f"{e:5d} {r.upstream_loss:10.6f} {r.ours_loss:10.6f} {r.rel_diff_loss:8.1e} {r.upstream_grad_norm:9.4f} "
              f"{r.ours_grad_norm:9.4f} {r.rel_diff_grad_norm:8.1e} {r.ours_lr_main:9.2e} {r.ours_lr_embedder:9.2e} "
              f"{r.upstream_valid_f1:6.3f} {r.ours_valid_f1:7.3f}{'  <- first beyond tolerance' if e == first else ''}")
    print(f"\nmax relative difference over epochs 0-{min(9, len(df) - 1)}: loss {df.rel_diff_loss[:10].max():.1e}, "
          f"grad norm {df.rel_diff_grad_norm[:10].max():.1e}; learning rates equal in every epoch: "
          f"{bool((df.rel_diff_lr_main < 1e-12).all() and (df.rel_diff_lr_embedder < 1e-12).all())}")
    print(f"first epoch beyond relative tolerance {tol:g} (or validation F1 differing): {first}")
    print(f"test macro-F1: upstream {up['scores']['macro_f1']:.4f}, ours {ours['scores']['macro_f1']:.4f}")
    df["shape"], df["init"] = args.shape, args.pretrained or "random initialisation"
    df["compared"] = f"{args.control} vs {args.control} (cells permuted)" if args.control else "upstream vs ours"
    df["upstream_test_macro_f1"], df["ours_test_macro_f1"] = up["scores"]["macro_f1"], ours["scores"]["macro_f1"]
    return df


# ---- experiment 2: many seeds, protocol on ------------------------------------------------------------------
def parse_seeds(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def paired(x: np.ndarray, y: np.ndarray, n_perm: int = 20000) -> dict:
    """Paired comparison of y against x over seeds: mean difference, 95% t interval, sign-flip p-value."""
    from scipy import stats

    d = y - x
    n = d.size
    sd = d.std(ddof=1) if n > 1 else float("nan")
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    rng = np.random.default_rng(0)
    flips = rng.choice([-1.0, 1.0], size=(n_perm, n))
    p = float((np.abs((flips * d).mean(1)) >= abs(d.mean()) - 1e-12).mean())
    return dict(mean_diff=float(d.mean()), ci_low=float(d.mean() - half), ci_high=float(d.mean() + half), p_value=p,
                wins=int((d > 1e-9).sum()), ties=int((np.abs(d) <= 1e-9).sum()), losses=int((d < -1e-9).sum()))


def seeds(args) -> pd.DataFrame:
    adata, desc = labelled_data(args.cells, args.genes, args.data_seed)
    n_classes = adata.obs["celltype"].nunique()
    init = f"pretrained {args.pretrained}" if args.pretrained else f"random initialisation ({args.shape})"
    print(f"data: {desc}; split {dict(adata.obs['split'].value_counts())}; init: {init}; "
          f"{args.epochs} epochs max, early stopping {args.patience}")
    rows = []
    variants = ["upstream"] + [f"ours_{p}" for p in args.precisions]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in parse_seeds(args.seeds):
            prefix = init_checkpoint(Path(tmp), args.shape, n_classes, seed, args.pretrained)
            line = [f"seed {seed:3d}"]
            for variant in variants:
                if variant == "upstream":
                    r = run_upstream(prefix, adata, n_classes, args.epochs, args.patience, seed, augment=True)
                else:
                    r = run_ours(prefix, adata, args.epochs, args.patience, seed, augment=True, precision=variant.split("_", 1)[1])
                rows.append(dict(seed=seed, variant=variant, precision=r["precision"], test_macro_f1=r["scores"]["macro_f1"],
                                 test_accuracy=r["scores"]["accuracy"], test_balanced_accuracy=r["scores"]["balanced_accuracy"],
                                 seconds=r["seconds"], init=init, epochs=args.epochs, patience=args.patience))
                line.append(f"{variant} {r['scores']['macro_f1']:.3f} ({r['seconds']:.0f} s)")
            print("  ".join(line), flush=True)
            write_result(args.out, "finetune_accuracy", args.provenance, rows, complete=False)  # partial results survive
    df = pd.DataFrame(rows)
    return summarise(df, init, args.precisions)


def summarise(df: pd.DataFrame, init: str, precisions: list[str]) -> pd.DataFrame:
    """Print mean/sd/median/range per variant and paired comparisons with upstream (and bf16 vs fp32)."""
    variants = ["upstream"] + [f"ours_{p}" for p in precisions]
    wide = df.pivot(index="seed", columns="variant", values="test_macro_f1")
    print(f"\nTest macro-F1 over {len(wide)} seeds ({init})")
    print(f"  {'variant':14s} {'mean':>6s} {'sd':>6s} {'median':>6s} {'min':>6s} {'max':>6s} {'ratio':>6s} "
          f"{'paired diff vs upstream [95% CI]':>34s} {'p':>6s} {'W/T/L':>8s} {'s/run':>6s}")
    up = wide["upstream"].to_numpy()
    for variant in variants:
        v = wide[variant].to_numpy()
        secs = df[df.variant == variant].seconds.mean()
        if variant == "upstream":
            cmp_s, p_s, wtl = "", "", ""
        else:
            c = paired(up, v)
            cmp_s = f"{c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
            p_s, wtl = f"{c['p_value']:.3f}", f"{c['wins']}/{c['ties']}/{c['losses']}"
            df.loc[df.variant == variant, ["paired_mean_diff", "paired_ci_low", "paired_ci_high", "paired_p"]] = (
                c["mean_diff"], c["ci_low"], c["ci_high"], c["p_value"])
        print(f"  {variant:14s} {v.mean():6.3f} {v.std(ddof=1):6.3f} {np.median(v):6.3f} {v.min():6.3f} {v.max():6.3f} "
              f"{v.mean() / up.mean():6.2f} {cmp_s:>34s} {p_s:>6s} {wtl:>8s} {secs:6.1f}")
    if len(precisions) > 1:
        a, b = wide[f"ours_{precisions[0]}"].to_numpy(), wide[f"ours_{precisions[1]}"].to_numpy()
        c = paired(a, b)
        print(f"  ours_{precisions[1]} vs ours_{precisions[0]}: {c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, "
              f"{c['ci_high']:+.3f}], p {c['p_value']:.3f}, W/T/L {c['wins']}/{c['ties']}/{c['losses']}")
    return df


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="experiment", required=True)
    for name, help_ in (("trajectory", "deterministic loop equivalence, augmentation off"),
                        ("seeds", "test macro-F1 over many seeds, protocol (augmentation on)")):
        s = sub.add_parser(name, help=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        s.add_argument("--shape", default="small", choices=("85M", "small", "tiny"), help="model shape (random trunk)")
        s.add_argument("--pretrained", default=None, help="checkpoint prefix of a pretrained model (trunk) instead of random")
        s.add_argument("--cells", type=int, default=700, help="cells of the synthetic labelled dataset")
        s.add_argument("--genes", type=int, default=700, help="vocabulary genes of the synthetic dataset")
        s.add_argument("--data-seed", type=int, default=0, help="seed of the data and the train/valid/test split")
        s.add_argument("--epochs", type=int, default=150 if name == "trajectory" else 200)
        s.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
        s.add_argument("--out", default=str(ROOT / DEFAULT_OUT[name]), help="result file (JSON, written atomically)")
        if name == "trajectory":
            s.add_argument("--seed", type=int, default=0, help="seed of the fresh latent/head weights")
            s.add_argument("--tolerance", type=float, default=1e-3, help="relative difference counted as a divergence")
            s.add_argument("--control", choices=("upstream", "ours"), default=None,
                           help="instead of upstream vs ours, compare one implementation with itself on permuted cell "
                                "order (the floating-point drift baseline)")
        else:
            s.add_argument("--seeds", default="0-7", help="seeds, e.g. 0-15 or 0,3,5")
            s.add_argument("--patience", type=int, default=200, help="early stopping (epochs after the best validation F1)")
            s.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    m = sub.add_parser("summary", help="the seeds table of one or more seeds TSVs (e.g. runs over seed ranges)")
    m.add_argument("results", nargs="+", help="result files written by `seeds` (same init and data)")
    c = sub.add_parser("corpus", help="write a synthetic pretraining corpus (h5ad) over the fine-tuning genes",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("--out", required=True, help="h5ad to write (then: python -m cellplm.pretrain OUT --out DIR)")
    c.add_argument("--cells", type=int, default=6000)
    c.add_argument("--samples", type=int, default=12, help="samples (obs['batch']), i.e. sentences")
    c.add_argument("--genes", type=int, default=700, help="as for the fine-tuning data")
    c.add_argument("--data-seed", type=int, default=0, help="as for the fine-tuning data (its genes)")
    c.add_argument("--corpus-seed", type=int, default=None, help="seed of the corpus (default: --data-seed)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.experiment == "corpus":
        corpus(args)
        return 0
    if args.experiment == "summary":
        import json

        df = pd.concat([pd.DataFrame(json.loads(Path(p).read_text())["rows"]) for p in args.results], ignore_index=True)
        precisions = [v.split("_", 1)[1] for v in df.variant.unique() if v.startswith("ours_")]
        summarise(df.drop_duplicates(["seed", "variant"], keep="last"), "; ".join(map(str, df["init"].unique())), precisions)
        return 0
    try:
        import CellPLM  # noqa: F401
    except ImportError:
        raise SystemExit("upstream CellPLM is not importable: run with .venv-upstream/bin/python (bash tools/upstream_env.sh)")
    torch.set_num_threads(args.threads)
    args.provenance = provenance("benchmarks/finetune_accuracy.py", argv, vars(args))
    t0 = time.perf_counter()
    df = trajectory(args) if args.experiment == "trajectory" else seeds(args)
    df["torch"], df["threads"] = torch.__version__, args.threads
    write_result(args.out, "finetune_accuracy" if args.experiment == "seeds" else "finetune_trajectory", args.provenance, df.to_dict("records"), complete=True,
                 seconds=round(time.perf_counter() - t0, 1))
    print(f"\nwrote {args.out} ({len(df)} rows) in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
