"""The tissue-context track: what reading cells together ("cells as tokens, tissues as sentences") buys, measured,
and how much one cell's label depends on the cells it is read with.

Three tables (figures in :mod:`.context_plots`):

- the **context curve**: the zero-shot scores of the ``cellplm`` embedding under each sentence policy (its rows
  ``cellplm_<policy>`` of zeroshot.tsv, and the kNN annotation of each, ``<row>_zeroshot`` of the method tables)
  against the mean sentence size; the ``cellplm`` row is the batch policy, the one upstream uses;
- the **stability** of the fine-tuned CellPLM: its test cells labelled under other policies by the same model
  (:meth:`cellplm.bench.methods.base.Annotator.predict_variants`): macro-F1, accuracy and the fraction of test cells
  whose label differs from the trained policy's, per run, then mean and spread over seeds;
- the **cost** of context: embedding seconds and cells per second against the sentence size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...keys import LABEL, PREDICTION
from ..io import read_h5ad
from ..methods.base import variant_column
from ..metrics import score
from .aggregate import _fmt, _num

AS_TRAINED = "as trained"  # the policy column of a run's own prediction (batch sentences, as the fit read them)
CURVE_METRICS = {  # zeroshot.tsv metric -> the words of the curve (and the kNN row's macro-F1)
    "bio_conservation": "bio conservation",
    "batch_correction": "batch correction",
    "total": "total",
    "knn_macro_f1": "kNN macro-F1",
}
RUN_COLUMNS = ["dataset", "embedding", "policy", "kind", "k", "seed", "n_sentences", "cells_per_sentence"]
CURVE_COLUMNS = [
    *RUN_COLUMNS,
    "metric",
    "value",
    "status",
    "reason",
    "checkpoint",
    "precision",
    "device",
    "cells",
    "embed_s",
    "cells_per_s",
]
STABILITY_COLUMNS = [
    "dataset",
    "split",
    "method",
    "seed",
    "policy",
    "with_training_cells",
    "macro_f1",
    "accuracy",
    "changed",
    "n_test",
    "seconds",
    "status",
    "reason",
]


def _policy_records(records: list[dict]) -> pd.DataFrame:
    """One row per embedding record run under a sentence policy (``extra['sentence_policy']``: the cellplm rows)."""
    rows = []
    for rec in records:
        extra = rec.get("extra") or {}
        policy = extra.get("sentence_policy") or (rec.get("params") or {}).get("sentences")
        if policy is None:
            continue
        if isinstance(policy, str):  # a run that stopped before embedding: its params say which policy
            policy = {"policy": policy}
        rows.append(
            {
                "dataset": rec["dataset"],
                "embedding": rec["embedding"],
                "policy": policy.get("policy"),
                "kind": policy.get("kind"),
                "k": policy.get("k"),
                "seed": policy.get("seed"),
                "n_sentences": extra.get("n_sentences"),
                "cells_per_sentence": policy.get("mean_cells"),
                "precision": extra.get("precision", ""),
                "record_status": rec.get("status", ""),
                "record_reason": rec.get("reason", ""),
            }
        )
    return pd.DataFrame(rows, columns=[*RUN_COLUMNS, "precision", "record_status", "record_reason"])


def context_curve(zeroshot: pd.DataFrame, records: list[dict], summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """The context curve (results/tables/context_curve.tsv): for every embedding run under a sentence policy, the
    aggregate scib scores of ``zeroshot`` (zeroshot.tsv) and, from ``summary`` (summary.tsv), the macro-F1 of its
    kNN row (mean over splits and seeds), with the policy, the sentence size and the provenance."""
    runs = _policy_records(records)
    if runs.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    scib = zeroshot[zeroshot["metric"].isin(CURVE_METRICS)][
        [
            "dataset",
            "embedding",
            "metric",
            "value",
            "status",
            "reason",
            "checkpoint",
            "device",
            "cells",
            "embed_s",
            "cells_per_s",
        ]
    ]
    rows = runs.merge(scib, on=["dataset", "embedding"], how="left")
    if summary is not None and not summary.empty:
        rows = pd.concat([rows, _knn_rows(summary, runs, scib)], ignore_index=True)
    rows["metric"] = rows["metric"].fillna("")
    rows["status"] = rows["status"].fillna(rows["record_status"])
    rows["reason"] = rows["reason"].where(rows["reason"].fillna("") != "", rows["record_reason"]).fillna("")
    order = {m: i for i, m in enumerate(CURVE_METRICS)}
    rows = rows.sort_values(
        ["dataset", "cells_per_sentence", "embedding", "metric"],
        key=lambda c: c.map(order) if c.name == "metric" else c,
    )
    return rows[CURVE_COLUMNS].reset_index(drop=True)


def _knn_rows(summary: pd.DataFrame, runs: pd.DataFrame, scib: pd.DataFrame) -> pd.DataFrame:
    """The kNN annotation of each policy's embedding (its ``<embedding>_zeroshot`` rows of summary.tsv): macro-F1,
    mean over the dataset's splits (each a mean over seeds)."""
    rows = []
    provenance = scib.drop_duplicates(["dataset", "embedding"]).set_index(["dataset", "embedding"])
    for r in runs.to_dict("records"):
        sub = summary[
            (summary["dataset"] == r["dataset"])
            & (summary["method"] == f"{r['embedding']}_zeroshot")
            & (summary["metric"] == "macro_f1")
        ]
        value = float(sub["mean"].mean()) if sub["mean"].notna().any() else np.nan
        if (r["dataset"], r["embedding"]) in provenance.index:
            p = provenance.loc[(r["dataset"], r["embedding"])]
            r.update({c: p[c] for c in ("checkpoint", "device", "cells", "embed_s", "cells_per_s")})
        found = not np.isnan(value)
        rows.append(
            {
                **r,
                "metric": "knn_macro_f1",
                "value": value,
                "status": "ok" if found else (r["record_status"] if r["record_status"] != "ok" else "missing"),
                "reason": "" if found else r["record_reason"] or "no kNN row",
            }
        )
    return pd.DataFrame(rows)


def stability_rows(prediction_path, solution_path, record: dict) -> pd.DataFrame:
    """One run's rows of the stability table: its own prediction (policy "as trained") and each variant prediction
    (``obs['label_pred_<name>']``, described by ``record['extra']['context_predictions']``), scored against the
    solution, with the fraction of test cells whose label differs from the trained prediction's."""
    base = {k: record[k] for k in ("dataset", "split", "method", "seed")}
    variants = (record.get("extra") or {}).get("context_predictions") or {}
    if record.get("status") != "ok":
        return pd.DataFrame(
            [{**base, "policy": AS_TRAINED, "status": record.get("status"), "reason": record.get("reason", "")}],
            columns=STABILITY_COLUMNS,
        )
    pred = read_h5ad(prediction_path).obs
    truth = read_h5ad(solution_path).obs[LABEL].astype(str).reindex(pred.index)
    trained = pred[PREDICTION].astype(str)
    rows = [
        {
            **base,
            "policy": AS_TRAINED,
            "with_training_cells": None,
            "seconds": record.get("predict_s"),
            **_scores(truth, trained, trained),
        }
    ]
    for name, about in variants.items():
        row = {
            **base,
            "policy": about.get("policy", name),
            "with_training_cells": about.get("with_training_cells"),
            "seconds": about.get("seconds"),
            "status": about.get("status", "ok"),
            "reason": about.get("reason", ""),
        }
        column = variant_column(name)
        if column in pred.columns:
            row.update(_scores(truth, pred[column].astype(str), trained))
        rows.append(row)
    return pd.DataFrame(rows, columns=STABILITY_COLUMNS)


def _scores(truth: pd.Series, labels: pd.Series, trained: pd.Series) -> dict:
    s = score(truth.to_numpy(), labels.to_numpy())
    return {
        "macro_f1": s["macro_f1"],
        "accuracy": s["accuracy"],
        "changed": float((labels.to_numpy() != trained.to_numpy()).mean()),
        "n_test": int(len(labels)),
        "status": "ok",
        "reason": "",
    }


def stability_summary(stability: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per dataset, split, method and policy (ok rows only)."""
    ok = stability[stability["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame()
    keys = ["dataset", "split", "method", "policy"]
    out = ok.groupby(keys, sort=False)[["macro_f1", "accuracy", "changed"]].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out["n_seeds"] = ok.groupby(keys, sort=False)["seed"].nunique()
    return out.reset_index()


def checkpoint_note(config: dict) -> str:
    """What the track's rows can show with the run's CellPLM checkpoint: a model pretrained here (the demo's tiny
    one) shows the machinery, not the answer, which the released checkpoint gives (the full config)."""
    source = config["cellplm"]["checkpoint"]["source"]
    if source == "pretrain":
        return (
            "**These rows read a CellPLM pretrained here** (the demo's: tiny, minutes of pretraining on a few"
            " thousand cells), so they show the machinery, not the answer: whether context helps is the question of"
            " the released checkpoint, which the full config (config/config.yaml) reads."
        )
    return ""


def markdown_lines(
    curve: pd.DataFrame, stability: pd.DataFrame, labels: dict, note: str = "", runs: pd.DataFrame | None = None
) -> list[str]:
    """benchmark.md's "Tissue context" section; ``runs``: the run records (:func:`.aggregate.read_records`), whose
    checkpoint and precision the stability table names."""
    if curve.empty and stability.empty:
        return []
    lines = [
        "## Tissue context: what reading cells together buys",
        "",
        "CellPLM reads a cell in the context of the other cells of its sentence. The rows below read the same cells"
        " under other sentence policies (`cellplm.sentence_policy`): `batch` (one sentence per batch, upstream's and"
        " the other tables'), `single` (every cell alone), `random:K` and `spatial:K` (K cells of a batch, at random"
        " or spatially compact), `mixed:K` (K random cells across batches)." + (f" {note}" if note else ""),
        "",
    ]
    if not curve.empty:
        lines += _curve_lines(curve)
    if not stability.empty:
        lines += _stability_lines(stability, labels, runs)
    return lines


def _curve_lines(curve: pd.DataFrame) -> list[str]:
    lines = [
        "### Zero-shot: scores against sentence size",
        "",
        "Figure: `results/plots/context/curve.png`; every value in `results/tables/context_curve.tsv`. kNN macro-F1:"
        " the embedding's zero-shot annotation row, mean over splits and seeds.",
        "",
    ]
    for dataset, sub in curve.groupby("dataset", sort=False):
        first = sub.drop_duplicates("embedding")
        lines += [
            f"**{dataset}** ({_provenance(first)})",
            "",
            "| policy | cells / sentence | " + " | ".join(CURVE_METRICS.values()) + " |",
            "|---|---:|" + "---:|" * len(CURVE_METRICS),
        ]
        missing = []
        for _, run in first.iterrows():
            values = sub[sub["embedding"] == run["embedding"]].set_index("metric")["value"]
            if values.isna().all():
                missing.append(
                    f"- {run['policy']}: {run['status'] or 'no scores'} ({run['reason'] or 'no reason recorded'})"
                )
                continue
            policy = f"**{run['policy']}**" if run["kind"] == "batch" else str(run["policy"])
            cells = [_num(values.get(m), ".2f") for m in CURVE_METRICS]
            lines.append(f"| {policy} | {_num(run['cells_per_sentence'], '.0f')} | " + " | ".join(cells) + " |")
        lines += ([""] + missing) if missing else []
        lines.append("")
    lines += ['What each policy costs: the speed section\'s "Cost of context".', ""]
    return lines


def cost_lines(curve: pd.DataFrame) -> list[str]:
    """The speed section's "Cost of context": embedding seconds and cells per second of each policy's run."""
    runs = curve.drop_duplicates(["dataset", "embedding"])
    runs = runs[runs["status"] == "ok"]
    if runs.empty:
        return []
    lines = [
        "",
        "### Cost of context",
        "",
        "CellPLM's zero-shot embedding of the same cells under each sentence policy (the tissue-context track), on"
        " the device each ran on: Flowformer's attention is linear in a sentence's cells, so a cell costs about the"
        " same in any sentence, and small sentences pay one model call each. Figure: `results/plots/context/cost.png`.",
        "",
        "| dataset | policy | cells / sentence | embed s | cells/s | device | precision |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for _, r in runs.iterrows():
        lines.append(
            f"| {r['dataset']} | {r['policy']} | {_num(r['cells_per_sentence'], '.0f')} | {_num(r['embed_s'], '.2f')}"
            f" | {_num(r['cells_per_s'], '.0f')} | {r['device']} | {r['precision']} |"
        )
    return lines


def _provenance(first: pd.DataFrame) -> str:
    r = first.iloc[0]
    seeds = sorted({int(s) for s in first["seed"].dropna()})
    bits = [
        f"checkpoint {r['checkpoint']}" if r.get("checkpoint") else "",
        f"precision {r['precision']}" if r.get("precision") else "",
        f"{r['cells']}" if r.get("cells") else "",
        f"random sentences seeded {', '.join(map(str, seeds))}" if seeds else "",
    ]
    return "; ".join(b for b in bits if b)


def _stability_lines(stability: pd.DataFrame, labels: dict, runs: pd.DataFrame | None) -> list[str]:
    summary = stability_summary(stability)
    lines = [
        "### Fine-tuned: how much a test cell's label depends on its company",
        "",
        "The fine-tuned model of each run labels its test cells again under other sentence policies, without"
        " retraining: `single` (every cell alone), `random:16` (with the training cells, in random sentences of 16),"
        " `test_only` (batch sentences of the test cells without the training cells). Changed: the share of test"
        ' cells whose label differs from the trained policy\'s ("as trained"), mean ± sd over seeds. Figure:'
        " `results/plots/context/stability.png`; per run: `results/tables/context_stability.tsv`.",
        "",
    ]
    if summary.empty:
        return lines + ["No run of a method with context predictions finished.", ""]
    if runs is not None and not runs.empty:
        mine = runs.merge(stability[["dataset", "split", "method", "seed"]].drop_duplicates())
        for method, sub in mine.groupby("method", sort=False):
            n_test = stability.loc[stability["method"] == method, "n_test"]
            what = ", ".join(
                sorted({f"checkpoint {c}, precision {p}" for c, p in zip(sub["checkpoint"], sub["precision"])})
            )
            lines.append(
                f"- {labels.get(method, method)}: {what}; {len(sub)} runs; "
                f"{_num(n_test.min(), '.0f')}-{_num(n_test.max(), '.0f')} test cells a run; random sentences seeded"
                " with each run's seed."
            )
        lines.append("")
    lines += [
        "| dataset | split | method | policy | macro-F1 | accuracy | changed | seeds |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for _, r in summary.iterrows():
        lines.append(
            f"| {r['dataset']} | {r['split']} | {labels.get(r['method'], r['method'])} | {r['policy']} | "
            f"{_fmt(r['macro_f1_mean'], r['macro_f1_std'])} | {_fmt(r['accuracy_mean'], r['accuracy_std'])} | "
            f"{_fmt(r['changed_mean'], r['changed_std'])} | {int(r['n_seeds'])} |"
        )
    failed = stability[stability["status"] != "ok"]
    for _, r in failed.iterrows():
        lines.append(f"- {r['dataset']}/{r['split']} seed {r['seed']}, {r['policy']}: {r['status']} ({r['reason']})")
    return lines + [""]
