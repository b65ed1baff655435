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

DEFAULT_OUT = {
    "trajectory": "benchmarks/results/finetune_trajectory.json",
    "seeds": "benchmarks/results/finetune_accuracy.json",
    "replay": "benchmarks/results/finetune_replay.json",
    "augmentation": "benchmarks/results/finetune_augmentation.json",
}


# ---- data and checkpoints ----------------------------------------------------------------------------------
def labelled_data(n_cells: int, n_genes: int, seed: int, batches: int = 1, marker_fold: float = 4.0):
    """Seeded synthetic labelled counts (6 types, vocabulary genes; one sentence or ``batches`` samples) and a
    train/valid/test split.

    Cells are ordered train/valid first, test last, so that both implementations hold the cells of each sentence in
    the same order (ours puts the test context after the training cells).
    """
    from benchmarks.speed import assign_split, synthetic_labelled

    from cellplm.model import released_config

    adata, desc = synthetic_labelled(
        n_cells, n_genes, released_config().gene_list, seed, n_batches=batches, marker_fold=marker_fold
    )
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
    step) and each loop's validation scoring (upstream's ``inference``, our ``validation_macro_f1``), recording per
    step: loss, both learning rates, gradient norm; per validation pass: macro-F1 and how many classes it predicted."""

    def __init__(self):
        self.impl = None
        self.steps: list[dict] = []
        self.valid_f1: dict[str, list[float]] = {}
        self.valid_classes: dict[str, list[int]] = {}  # distinct classes predicted for the validation cells
        self._norm = float("nan")

    @contextlib.contextmanager
    def active(self):
        from torch.optim.lr_scheduler import ReduceLROnPlateau

        import CellPLM.pipeline.cell_type_annotation as upstream_cta

        import cellplm.finetune as ours_ft

        rec = self
        orig_step, orig_clip, orig_inference = (
            ReduceLROnPlateau.step,
            torch.nn.utils.clip_grad_norm_,
            upstream_cta.inference,
        )
        orig_f1 = ours_ft.validation_macro_f1

        def step(sched, metrics, *a, **k):
            groups = sched.optimizer.param_groups
            rec.steps.append(
                dict(
                    implementation=rec.impl,
                    loss=float(metrics),
                    lr_embedder=groups[0]["lr"],
                    lr_main=groups[1]["lr"],
                    grad_norm=rec._norm,
                )
            )
            return orig_step(sched, metrics, *a, **k)

        def clip(params, max_norm, *a, **k):
            norm = orig_clip(params, max_norm, *a, **k)
            rec._norm = float(norm)
            return norm

        def inference(model, dataloader, split, *a, **k):
            out = orig_inference(model, dataloader, split, *a, **k)
            if split == "valid":
                rec.valid_f1.setdefault(rec.impl, []).append(float(out["metrics"]["f1_score"]))
                rec.valid_classes.setdefault(rec.impl, []).append(int(out["pred"].unique().numel()))
            return out

        def f1(y_true, y_pred):
            rec.valid_classes.setdefault(rec.impl, []).append(int(np.unique(y_pred).size))
            return orig_f1(y_true, y_pred)

        ReduceLROnPlateau.step, torch.nn.utils.clip_grad_norm_, upstream_cta.inference = step, clip, inference
        ours_ft.validation_macro_f1 = f1
        try:
            yield self
        finally:
            ReduceLROnPlateau.step, torch.nn.utils.clip_grad_norm_, upstream_cta.inference = (
                orig_step,
                orig_clip,
                orig_inference,
            )
            ours_ft.validation_macro_f1 = orig_f1


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
        pipe = CellTypeAnnotationPipeline(
            pretrain_prefix=prefix.name, overwrite_config=overwrite, pretrain_directory=str(prefix.parent)
        )
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
        pipe.fit(
            adata,
            train_config={"epochs": epochs, "es": patience},
            split_field="split",
            train_split="train",
            valid_split="valid",
            label_fields=["celltype"],
            device="cpu",
        )
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
        annot = Annotator(
            checkpoint=prefix,
            max_epochs=epochs,
            patience=patience,
            precision=precision,
            device="cpu",
            seed=seed,
            progress=False,
        )
        annot.fit(train, label_key="celltype", unlabelled=test)
        pred = np.asarray(annot.predict(test), dtype=str)
    seconds = time.perf_counter() - t0
    return dict(
        scores=score(test.obs["celltype"].to_numpy(), pred),
        seconds=seconds,
        precision=annot.info_["precision"],
        history=annot.history_,
        best_epoch=annot.info_["best_epoch"],
    )


def corpus(args) -> None:
    """A synthetic pretraining corpus over the genes of the fine-tuning data: with the default ``--corpus-seed``
    (= ``--data-seed``) the same six expression programs (unlabelled, other cells, several samples), as when a
    corpus covers the tissue; another seed gives other programs."""
    from cellplm.bench.data.sources import synthetic

    genes = labelled_data(10, args.genes, args.data_seed)[0].var_names.tolist()
    adata = synthetic(
        n_cells=args.cells,
        n_genes=len(genes),
        n_cell_types=6,
        n_batches=args.samples,
        markers_per_type=30,
        marker_fold=4.0,
        seed=args.data_seed if args.corpus_seed is None else args.corpus_seed,
        gene_symbols=genes,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(args.out)
    print(
        f"wrote {args.out}: {adata.n_obs} cells x {adata.n_vars} genes, {adata.obs['batch'].nunique()} samples "
        "(obs['batch'])"
    )


# ---- experiment 1: deterministic trajectories --------------------------------------------------------------
def trajectory(args) -> pd.DataFrame:
    adata, desc = labelled_data(args.cells, args.genes, args.data_seed, args.batches, args.marker_fold)
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
            if (
                args.control == "upstream"
            ):  # upstream again, cells of the sentence in another order: summation order only
                ours = run_upstream(
                    prefix, adata[perm].copy(), n_classes, args.epochs, args.epochs + 1, args.seed, augment=False
                )
                ours_f1 = rec.valid_f1["ours"]
            else:
                ours = run_ours(
                    prefix,
                    adata[perm].copy() if args.control == "ours" else adata,
                    args.epochs,
                    args.epochs + 1,
                    args.seed,
                    augment=False,
                    precision="fp32",
                )
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
    bad = df[
        (df[[f"rel_diff_{c}" for c in ("loss", "lr_embedder", "lr_main", "grad_norm")]] > tol).any(axis=1)
        | (df.upstream_valid_f1 - df.ours_valid_f1).abs().gt(1e-6)
    ]
    first = int(bad.epoch.iloc[0]) if len(bad) else None
    if args.control:
        print(
            f"CONTROL: both columns are {args.control}, the second ('ours') with the sentence's cells permuted "
            "(floating-point summation order only)"
        )
    print(
        "\nDeterministic trajectories "
        f"({args.shape}{', pretrained ' + args.pretrained if args.pretrained else ', random init'}; "
        f"no dropout, no cell dropping, no masking; fp32; {torch.get_num_threads()} thread(s))"
    )
    print(
        f"{'epoch':>5s} {'loss up':>10s} {'loss ours':>10s} {'rel':>8s} {'|g| up':>9s} {'|g| ours':>9s} {'rel':>8s} "
        f"{'lr main':>9s} {'lr emb':>9s} {'F1 up':>6s} {'F1 ours':>7s}"
    )
    show = sorted(
        set(range(0, 10))
        | set(range(10, len(df), max(1, len(df) // 20)))
        | {len(df) - 1}
        | ({first} if first is not None else set())
    )
    for e in (e for e in show if e < len(df)):
        r = df.iloc[e]
        print(
            f"{e:5d} {r.upstream_loss:10.6f} {r.ours_loss:10.6f} {r.rel_diff_loss:8.1e} {r.upstream_grad_norm:9.4f} "
            f"{r.ours_grad_norm:9.4f} {r.rel_diff_grad_norm:8.1e} {r.ours_lr_main:9.2e} {r.ours_lr_embedder:9.2e} "
            f"{r.upstream_valid_f1:6.3f} {r.ours_valid_f1:7.3f}{'  <- first beyond tolerance' if e == first else ''}"
        )
    print(
        f"\nmax relative difference over epochs 0-{min(9, len(df) - 1)}: loss {df.rel_diff_loss[:10].max():.1e}, "
        f"grad norm {df.rel_diff_grad_norm[:10].max():.1e}; learning rates equal in every epoch: "
        f"{bool((df.rel_diff_lr_main < 1e-12).all() and (df.rel_diff_lr_embedder < 1e-12).all())}"
    )
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
    return dict(
        mean_diff=float(d.mean()),
        ci_low=float(d.mean() - half),
        ci_high=float(d.mean() + half),
        p_value=p,
        wins=int((d > 1e-9).sum()),
        ties=int((np.abs(d) <= 1e-9).sum()),
        losses=int((d < -1e-9).sum()),
    )


def seeds(args) -> pd.DataFrame:
    adata, desc = labelled_data(args.cells, args.genes, args.data_seed, args.batches, args.marker_fold)
    n_classes = adata.obs["celltype"].nunique()
    init = f"pretrained {args.pretrained}" if args.pretrained else f"random initialisation ({args.shape})"
    print(
        f"data: {desc}; split {dict(adata.obs['split'].value_counts())}; init: {init}; "
        f"{args.epochs} epochs max, early stopping {args.patience}"
    )
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
                    r = run_ours(
                        prefix,
                        adata,
                        args.epochs,
                        args.patience,
                        seed,
                        augment=True,
                        precision=variant.split("_", 1)[1],
                    )
                rows.append(
                    dict(
                        seed=seed,
                        variant=variant,
                        precision=r["precision"],
                        test_macro_f1=r["scores"]["macro_f1"],
                        test_accuracy=r["scores"]["accuracy"],
                        test_balanced_accuracy=r["scores"]["balanced_accuracy"],
                        seconds=r["seconds"],
                        init=init,
                        epochs=args.epochs,
                        patience=args.patience,
                    )
                )
                line.append(f"{variant} {r['scores']['macro_f1']:.3f} ({r['seconds']:.0f} s)")
            print("  ".join(line), flush=True)
            write_result(
                args.out, "finetune_accuracy", args.provenance, rows, complete=False
            )  # partial results survive
    df = pd.DataFrame(rows)
    return summarise(df, init, args.precisions)


# ---- experiment 3: the same random draws in both loops, augmentation on ---------------------------------------
def best_epoch(valid_f1: list[float]) -> int:
    """The epoch whose weights both loops keep: the best validation macro-F1, ties to the later epoch."""
    f1 = np.asarray(valid_f1, dtype=float)
    return int(np.flatnonzero(f1 == np.nanmax(f1))[-1])


ESCAPE = 0.5  # validation macro-F1 that a run stuck on the plateau near chance has not reached


def first_epoch_at(valid_f1: list[float], level: float) -> int | None:
    """The first epoch whose validation macro-F1 reaches ``level`` (None: never): how long a run stays on the
    plateau."""
    above = np.flatnonzero(np.asarray(valid_f1, dtype=float) >= level)
    return int(above[0]) if above.size else None


def divergence(genuine: pd.DataFrame, replay: pd.DataFrame, f1_genuine, f1_replay, tol: float) -> dict:
    """Where a replay leaves the genuine run it replays: relative loss difference per step, validation F1 per epoch."""
    n = min(len(genuine), len(replay))
    a, b = genuine.loss.to_numpy()[:n], replay.loss.to_numpy()[:n]
    rel = np.abs(a - b) / np.maximum(np.abs(a), 1e-30)
    beyond = np.flatnonzero(rel > tol)
    f1_same = np.abs(np.asarray(f1_genuine[:n]) - np.asarray(f1_replay[:n])) <= 1e-6
    return dict(
        steps=n,
        max_rel_loss_diff_first10=float(rel[:10].max()),
        max_rel_loss_diff=float(rel.max()),
        first_step_beyond_tol=int(beyond[0]) if beyond.size else None,
        epochs_valid_f1_equal_from_start=int(np.argmin(f1_same)) if not f1_same.all() else n,
        median_rel_loss_diff=float(np.median(rel)),
    )


PERTURBATION = 1e-7  # the drift control: every weight changed in about its last float32 digit
CONTROL = "ours replaying ours, weights perturbed"
CONTROL_LABEL = f"ours, weights x (1 + {PERTURBATION:g} N(0,1))"


def perturbed(prefix: Path, scale: float, seed: int) -> Path:
    """A copy of the checkpoint at ``prefix`` with every floating-point weight multiplied by 1 + scale * N(0, 1)."""
    from cellplm.model import load_model, save_checkpoint

    model, _ = load_model(prefix, task="annotation", n_classes=None)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + scale * torch.randn(p.shape, generator=gen))
    out = prefix.with_name(prefix.name + "_perturbed")
    save_checkpoint(model, out)
    return out


def replay(args) -> pd.DataFrame:
    """Each implementation's genuine run recorded, then replayed by the other: same init, same data, same draws.
    Control: ours replaying its own draws from weights changed in their last digits (:data:`PERTURBATION`), the
    pace at which any floating-point difference grows into a different run."""
    from benchmarks.finetune_draws import Draws, record_ours, record_upstream, replay_into_ours, replay_into_upstream

    if args.batches != 1:
        raise SystemExit("replay: only one-sentence data can be replayed (--batches 1)")
    adata, desc = labelled_data(args.cells, args.genes, args.data_seed, args.batches, args.marker_fold)
    n_classes = adata.obs["celltype"].nunique()
    print(f"data: {desc}; split {dict(adata.obs['split'].value_counts())}; {args.epochs} epochs; fp32")
    rows, epochs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in parse_seeds(args.seeds):
            prefix = init_checkpoint(Path(tmp), args.shape, n_classes, seed, args.pretrained)
            rec = Recorder()
            runs = {}
            with rec.active():
                ours_draws, upstream_draws = Draws(), Draws()
                rec.impl = "ours"
                with record_ours(ours_draws):
                    runs["ours"] = run_ours(prefix, adata, args.epochs, args.patience, seed, True, "fp32")
                rec.impl = "upstream replaying ours"
                with replay_into_upstream(ours_draws.steps):
                    runs[rec.impl] = run_upstream(prefix, adata, n_classes, args.epochs, args.patience, seed, True)
                rec.impl = CONTROL  # the drift of ours against itself: same draws, weights changed in the last digits
                with replay_into_ours(ours_draws.steps):
                    runs[rec.impl] = run_ours(
                        perturbed(prefix, PERTURBATION, seed), adata, args.epochs, args.patience, seed, True, "fp32"
                    )
                del ours_draws
                rec.impl = "upstream"
                with record_upstream(upstream_draws):
                    runs["upstream"] = run_upstream(prefix, adata, n_classes, args.epochs, args.patience, seed, True)
                rec.impl = "ours replaying upstream"
                with replay_into_ours(upstream_draws.steps):
                    runs[rec.impl] = run_ours(prefix, adata, args.epochs, args.patience, seed, True, "fp32")
                del upstream_draws
            steps = pd.DataFrame(rec.steps)
            f1 = {
                impl: (
                    rec.valid_f1[impl]
                    if impl.startswith("upstream")
                    else [h.get("valid_macro_f1", float("nan")) for h in runs[impl]["history"]]
                )
                for impl in runs
            }
            for impl in runs:
                traj = steps[steps.implementation == impl].reset_index(drop=True)
                for e in range(len(traj)):
                    epochs.append(
                        dict(
                            seed=seed,
                            run=impl,
                            epoch=e,
                            loss=traj.loss[e],
                            grad_norm=traj.grad_norm[e],
                            lr_main=traj.lr_main[e],
                            valid_macro_f1=f1[impl][e],
                            valid_classes_predicted=rec.valid_classes[impl][e],
                        )
                    )
            line = [f"seed {seed:3d}"]
            for genuine, replayed in (
                ("ours", "upstream replaying ours"),
                ("upstream", "ours replaying upstream"),
                ("ours", CONTROL),
            ):
                trajectory_of = {
                    impl: steps[steps.implementation == impl].reset_index(drop=True) for impl in (genuine, replayed)
                }
                d = divergence(
                    trajectory_of[genuine], trajectory_of[replayed], f1[genuine], f1[replayed], args.tolerance
                )
                rows.append(
                    dict(
                        seed=seed,
                        draws_of=genuine,
                        replayed_by=CONTROL_LABEL if replayed == CONTROL else replayed.split()[0],
                        genuine_first_epoch_f1_05=first_epoch_at(f1[genuine], ESCAPE),
                        replay_first_epoch_f1_05=first_epoch_at(f1[replayed], ESCAPE),
                        genuine_test_macro_f1=runs[genuine]["scores"]["macro_f1"],
                        replay_test_macro_f1=runs[replayed]["scores"]["macro_f1"],
                        genuine_best_epoch=best_epoch(f1[genuine]),
                        replay_best_epoch=best_epoch(f1[replayed]),
                        epochs=args.epochs,
                        shape=args.shape,
                        **d,
                    )
                )
                equal_steps = d["first_step_beyond_tol"] if d["first_step_beyond_tol"] is not None else d["steps"]
                line.append(
                    f"{genuine} draws: genuine {runs[genuine]['scores']['macro_f1']:.3f} / replay "
                    f"{runs[replayed]['scores']['macro_f1']:.3f} (loss equal to {args.tolerance:g} for "
                    f"{equal_steps} steps)"
                )
            print("  ".join(line), flush=True)
    args.extra_output = {"epochs": epochs}
    return pd.DataFrame(rows)


# ---- experiment 4: what the augmentation draws, ours against upstream ------------------------------------------
def augmentation(args) -> pd.DataFrame:
    """The draws of genuine runs of both implementations (same data, same init per seed), compared step by step in
    distribution: counts that must be equal, rates that must agree within sampling error."""
    from benchmarks.finetune_draws import Draws, check_upstream_dropout, draw_statistics, record_ours, record_upstream

    if not check_upstream_dropout():
        raise SystemExit("the recorder's dropout does not reproduce nn.Dropout: upstream's draws would not be genuine")
    adata, desc = labelled_data(args.cells, args.genes, args.data_seed, args.batches, args.marker_fold)
    n_classes = adata.obs["celltype"].nunique()
    print(f"data: {desc}; {args.epochs} epochs x seeds {args.seeds}")
    ours, upstream = Draws(), Draws()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in parse_seeds(args.seeds):
            prefix = init_checkpoint(Path(tmp), args.shape, n_classes, seed, args.pretrained)
            with record_ours(ours):
                run_ours(prefix, adata, args.epochs, args.epochs + 1, seed, True, "fp32")
            with record_upstream(upstream):
                run_upstream(prefix, adata, n_classes, args.epochs, args.epochs + 1, seed, True)
    df = pd.DataFrame(draw_statistics(ours.steps, upstream.steps))
    print(f"\n{'check':62s} {'kind':8s} {'ours':>26s} {'upstream':>26s} {'p':>7s} ok")
    for _, r in df.iterrows():
        p = f"{r['p']:.3f}" if pd.notna(r.get("p")) else ""
        print(
            f"{r['check'][:62]:62s} {r['kind']:8s} {str(r['ours'])[:26]:>26s} {str(r['upstream'])[:26]:>26s} {p:>7s} "
            f"{'yes' if r['ok'] else 'NO'}"
        )
    df["steps_ours"], df["steps_upstream"] = len(ours), len(upstream)
    return df


LOW = 0.70  # a run below this test macro-F1 counts as a collapse
# What "indistinguishable from upstream" means for a variant (the CellPLM-fidelity issue): the paired 95% CI contains
# 0 and is at most +-0.035 wide around its mean, the mean difference is within +-0.03, ours' sd at most 1.3x upstream's.
CRITERIA = dict(ci_half_width=0.035, mean_diff=0.03, sd_ratio=1.3)


def spread(x: np.ndarray, y: np.ndarray, n_boot: int = 10000) -> dict:
    """Spread of ``y`` against ``x`` over the same seeds: each sd, their ratio sd(y)/sd(x) with a paired bootstrap 95%
    CI (seeds resampled), and the runs below :data:`LOW`."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    ratios = y[idx].std(1, ddof=1) / np.maximum(x[idx].std(1, ddof=1), 1e-12)
    return dict(
        sd_reference=float(x.std(ddof=1)),
        sd=float(y.std(ddof=1)),
        sd_ratio=float(y.std(ddof=1) / x.std(ddof=1)),
        sd_ratio_ci_low=float(np.percentile(ratios, 2.5)),
        sd_ratio_ci_high=float(np.percentile(ratios, 97.5)),
        below_low=int((y < LOW).sum()),
        below_low_reference=int((x < LOW).sum()),
    )


def verdict(c: dict, s: dict) -> dict:
    """Each criterion of :data:`CRITERIA`, and whether all hold."""
    half = (c["ci_high"] - c["ci_low"]) / 2
    checks = {
        "ci_contains_0": c["ci_low"] <= 0 <= c["ci_high"],
        "ci_half_width_ok": half <= CRITERIA["ci_half_width"],
        "mean_diff_ok": abs(c["mean_diff"]) <= CRITERIA["mean_diff"],
        "sd_ratio_ok": s["sd_ratio"] <= CRITERIA["sd_ratio"],
    }
    return {**checks, "ci_half_width": half, "indistinguishable": all(checks.values())}


def summarise(df: pd.DataFrame, init: str, precisions: list[str]) -> pd.DataFrame:
    """Print mean/sd/median/range per variant, paired comparisons with upstream (and bf16 vs fp32), the spread (sd
    ratio with its bootstrap CI, runs below 0.70) and the verdict against :data:`CRITERIA`."""
    variants = ["upstream"] + [f"ours_{p}" for p in precisions]
    wide = df.pivot(index="seed", columns="variant", values="test_macro_f1")
    print(f"\nTest macro-F1 over {len(wide)} seeds ({init})")
    print(
        f"  {'variant':14s} {'mean':>6s} {'sd':>6s} {'median':>6s} {'min':>6s} {'max':>6s} {'<0.70':>5s} "
        f"{'paired diff vs upstream [95% CI]':>34s} {'p':>6s} {'W/T/L':>8s} {'sd ratio [95% CI]':>20s} {'s/run':>6s}"
    )
    up = wide["upstream"].to_numpy()
    for variant in variants:
        v = wide[variant].to_numpy()
        secs = df[df.variant == variant].seconds.mean()
        cmp_s = p_s = wtl = ratio_s = ""
        if variant != "upstream":
            c, sp = paired(up, v), spread(up, v)
            cmp_s = f"{c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
            p_s, wtl = f"{c['p_value']:.3f}", f"{c['wins']}/{c['ties']}/{c['losses']}"
            ratio_s = f"{sp['sd_ratio']:.2f} [{sp['sd_ratio_ci_low']:.2f}, {sp['sd_ratio_ci_high']:.2f}]"
            ver = verdict(c, sp)
            values = {
                "paired_mean_diff": c["mean_diff"],
                "paired_ci_low": c["ci_low"],
                "paired_ci_high": c["ci_high"],
                "paired_p": c["p_value"],
                "sd_ratio": sp["sd_ratio"],
                "sd_ratio_ci_low": sp["sd_ratio_ci_low"],
                "sd_ratio_ci_high": sp["sd_ratio_ci_high"],
                "indistinguishable": ver["indistinguishable"],
            }
            for col, val in values.items():
                df.loc[df.variant == variant, col] = val
        print(
            f"  {variant:14s} {v.mean():6.3f} {v.std(ddof=1):6.3f} {np.median(v):6.3f} {v.min():6.3f} {v.max():6.3f} "
            f"{int((v < LOW).sum()):5d} {cmp_s:>34s} {p_s:>6s} {wtl:>8s} {ratio_s:>20s} {secs:6.1f}"
        )
        if variant != "upstream":
            failed = [k for k, ok in ver.items() if k.endswith(("_0", "_ok")) and not ok]
            print(
                f"  {'':14s} criteria (CI contains 0, half-width <= {CRITERIA['ci_half_width']}, |mean| <= "
                f"{CRITERIA['mean_diff']}, sd ratio <= {CRITERIA['sd_ratio']}): "
                + ("all met: indistinguishable" if ver["indistinguishable"] else "NOT met: " + ", ".join(failed))
            )
    if len(precisions) > 1:
        a, b = wide[f"ours_{precisions[0]}"].to_numpy(), wide[f"ours_{precisions[1]}"].to_numpy()
        c = paired(a, b)
        print(
            f"  ours_{precisions[1]} vs ours_{precisions[0]}: {c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, "
            f"{c['ci_high']:+.3f}], p {c['p_value']:.3f}, W/T/L {c['wins']}/{c['ties']}/{c['losses']}"
        )
    return df


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="experiment", required=True)
    for name, help_ in (
        ("trajectory", "deterministic loop equivalence, augmentation off"),
        ("seeds", "test macro-F1 over many seeds, protocol (augmentation on)"),
        ("replay", "each implementation's random draws replayed by the other (augmentation on)"),
        ("augmentation", "the draws of both implementations compared in distribution"),
    ):
        s = sub.add_parser(name, help=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        s.add_argument("--shape", default="small", choices=("85M", "small", "tiny"), help="model shape (random trunk)")
        s.add_argument(
            "--pretrained", default=None, help="checkpoint prefix of a pretrained model (trunk) instead of random"
        )
        s.add_argument("--cells", type=int, default=700, help="cells of the synthetic labelled dataset")
        s.add_argument("--genes", type=int, default=700, help="vocabulary genes of the synthetic dataset")
        s.add_argument(
            "--batches", type=int, default=1, help="samples (obs['batch'], the sentences) of the synthetic dataset"
        )
        s.add_argument(
            "--marker-fold",
            type=float,
            default=4.0,
            help="marker strength of the synthetic cell types (the demo's synthetic dataset: 2.5)",
        )
        s.add_argument("--data-seed", type=int, default=0, help="seed of the data and the train/valid/test split")
        s.add_argument("--epochs", type=int, default={"trajectory": 150, "augmentation": 20}.get(name, 200))
        s.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
        s.add_argument("--out", default=str(ROOT / DEFAULT_OUT[name]), help="result file (JSON, written atomically)")
        if name in ("trajectory", "replay"):
            s.add_argument("--tolerance", type=float, default=1e-3, help="relative difference counted as a divergence")
        if name == "trajectory":
            s.add_argument("--seed", type=int, default=0, help="seed of the fresh latent/head weights")
            s.add_argument(
                "--control",
                choices=("upstream", "ours"),
                default=None,
                help="instead of upstream vs ours, compare one implementation with itself on permuted cell "
                "order (the floating-point drift baseline)",
            )
        else:
            s.add_argument(
                "--seeds", default="0-7" if name != "augmentation" else "0-1", help="seeds, e.g. 0-15 or 0,3,5"
            )
        if name in ("seeds", "replay"):
            s.add_argument(
                "--patience", type=int, default=200, help="early stopping (epochs after the best validation F1)"
            )
        if name == "seeds":
            s.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    m = sub.add_parser("summary", help="the seeds table of one or more seeds TSVs (e.g. runs over seed ranges)")
    m.add_argument("results", nargs="+", help="result files written by `seeds` (same init and data)")
    c = sub.add_parser(
        "corpus",
        help="write a synthetic pretraining corpus (h5ad) over the fine-tuning genes",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
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
        summarise(
            df.drop_duplicates(["seed", "variant"], keep="last"), "; ".join(map(str, df["init"].unique())), precisions
        )
        return 0
    try:
        import CellPLM  # noqa: F401
    except ImportError:
        raise SystemExit(
            "upstream CellPLM is not importable: run with .venv-upstream/bin/python (bash tools/upstream_env.sh)"
        )
    torch.set_num_threads(args.threads)
    args.provenance = provenance("benchmarks/finetune_accuracy.py", argv, vars(args))
    t0 = time.perf_counter()
    args.extra_output = {}
    experiments = {"trajectory": trajectory, "seeds": seeds, "replay": replay, "augmentation": augmentation}
    df = experiments[args.experiment](args)
    df["torch"], df["threads"] = torch.__version__, args.threads
    write_result(
        args.out,
        f"finetune_{'accuracy' if args.experiment == 'seeds' else args.experiment}",
        args.provenance,
        df.to_dict("records"),
        complete=True,
        seconds=round(time.perf_counter() - t0, 1),
        **args.extra_output,
    )
    print(f"\nwrote {args.out} ({len(df)} rows) in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
