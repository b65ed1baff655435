"""The zero-shot track's report: embeddings scored with scib-metrics, as tables, Markdown and figures.

Tables and Markdown here; the figures are in :mod:`.zeroshot_plots`. Inputs are the long scib rows of
:func:`cellplm.bench.embedding_metrics.score_embeddings` concatenated over
datasets (with a ``dataset`` column) and the embedding run records (run.json dicts). Every row keeps what
produced it (checkpoint, cells scored, metric set), and every missing value keeps its reason, so no table or
figure shows a number, or a gap, without saying where it came from.

The control embeddings (``control: true``: random noise, the jittered cell types, PCA per batch) are bounds of each
score, not methods: every table and figure lists them after the embeddings, marked, and ranks none of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .aggregate import _num, _text, checkpoint_label

# An embedding method without any checkpoint (PCA, scVI) is fitted on the very cells it embeds: that is its provenance.
NO_CHECKPOINT = "none (fitted on these cells, no labels)"
CONTROL_CHECKPOINT = "none (a control)"
# What each shipped control bounds (benchmark.md says it under the tables); a control of your own is "a bound".
CONTROL_ROLES = {
    "random_embedding": "the floor of bio conservation; noise knows no batch, so it mixes batches perfectly: it tops"
    " the batch-correction metrics and can top the total, which is why the total alone ranks nothing",
    "celltype_jittered": "the ceiling of bio conservation (the one embedding that sees the labels: the cell types"
    " one-hot, with a little noise)",
    "pca_per_batch": "each batch centred on its own mean and projected on its own axes: batches overlap, so it"
    " scores well on batch correction, while nothing aligns a cell type across batches; an integration worth its"
    " name mixes batches better than the unintegrated PCA (a regular row) and conserves cell types better than this",
}
TYPE_ORDER = ("bio", "batch", "aggregate")
TYPE_WORDS = {"bio": "bio-conservation metrics", "batch": "batch-correction metrics"}
RECORD_COLUMNS = [
    "dataset",
    "embedding",
    "label",
    "status",
    "reason",
    "device",
    "n_cells",
    "embed_s",
    "cells_per_s",
    "peak_rss_mb",
    "peak_gpu_mb",
    "checkpoint",
]
ZEROSHOT_COLUMNS = [
    "dataset",
    "embedding",
    "embedding_label",
    "control",
    "checkpoint",
    "cells",
    "metric_set",
    "metric",
    "metric_label",
    "metric_type",
    "value",
    "status",
    "reason",
    "n_cells",
    "n_cells_total",
    "device",
    "embed_s",
    "cells_per_s",
    "n_dims",
]


def read_embedding_records(paths) -> list[dict]:
    """The embedding run records (run.json) as the dicts the tables below take."""
    return [json.loads(Path(p).read_text()) for p in paths]


def _checkpoint(rec: dict, control: bool) -> str:
    """The record's weights in words (:func:`.aggregate.checkpoint_label`); an embedding method with no checkpoint
    (PCA, scVI) says it was fitted on the cells it embeds, a control that it is one; a not-applicable run that
    loaded nothing, nothing (its reason says why)."""
    if control:
        return CONTROL_CHECKPOINT
    extra, params = rec.get("extra") or {}, rec.get("params") or {}
    if not any(k in d for d in (extra, params) for k in ("checkpoint", "checkpoint_kind", "model_dir")):
        return NO_CHECKPOINT
    if rec.get("status") == "not_applicable" and not extra:
        return ""
    return checkpoint_label(extra, params)


def _records_frame(records: list[dict], labels: dict, controls) -> pd.DataFrame:
    """One row per (dataset, embedding) record, with the checkpoint in words and cells/s where only n/s is known."""
    rows = []
    for rec in records:
        rate, secs, n = rec.get("cells_per_s"), rec.get("embed_s"), rec.get("n_cells")
        if rate is None and secs and n:
            rate = n / secs
        rows.append(
            {
                **{k: rec.get(k) for k in RECORD_COLUMNS},
                "label": labels.get(rec["embedding"], rec["embedding"]),
                "cells_per_s": rate,
                "checkpoint": _checkpoint(rec, rec["embedding"] in controls),
                "n_dims": rec.get("n_dims"),
            }
        )
    df = pd.DataFrame(rows, columns=RECORD_COLUMNS + ["n_dims"])
    twice = df[df.duplicated(["dataset", "embedding"], keep=False)]
    if not twice.empty:
        raise ValueError(
            "more than one embedding record for dataset/embedding "
            + ", ".join(sorted({f"{d}/{e}" for d, e in zip(twice["dataset"], twice["embedding"])}))
        )
    for c in ("n_cells", "embed_s", "cells_per_s", "peak_rss_mb", "peak_gpu_mb", "n_dims"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in ("status", "reason", "device", "checkpoint"):
        df[c] = df[c].fillna("").astype(str)
    return df


def _embedding_rank(embeddings: pd.Series, labels: dict, controls) -> pd.Series:
    """Sort key: the embeddings, then the controls, each in the order of ``labels``, then embeddings it does not
    name in order of appearance."""
    rank = {e: i for i, e in enumerate(sorted(labels, key=lambda e: e in controls))}
    for e in dict.fromkeys(embeddings):
        rank.setdefault(e, len(rank))
    return embeddings.map(rank)


def zeroshot_table(scib: pd.DataFrame, records: list[dict], labels: dict, controls=()) -> pd.DataFrame:
    """The tidy zero-shot table (results/tables/zeroshot.tsv): each scib row with the embedding's label, whether it
    is a control (``controls``: ids), checkpoint and cost, sorted by dataset, embedding (the order of ``labels``,
    controls last) and metric type (bio, batch, aggregate)."""
    if scib.empty:
        return pd.DataFrame(columns=ZEROSHOT_COLUMNS)
    rec = _records_frame(records, labels, controls)[
        ["dataset", "embedding", "checkpoint", "device", "embed_s", "cells_per_s", "n_dims"]
    ]
    out = scib.merge(rec, on=["dataset", "embedding"], how="left")
    out["embedding_label"] = out["embedding"].map(lambda e: labels.get(e, e))
    out["control"] = out["embedding"].isin(controls)
    for c in ("checkpoint", "device", "reason"):
        out[c] = out[c].fillna("").astype(str)
    rank = _embedding_rank(out["embedding"], labels, controls)
    out = out.assign(_e=rank, _t=out["metric_type"].map(TYPE_ORDER.index))
    out = out.sort_values(["dataset", "_e", "_t"], kind="stable")
    return out[ZEROSHOT_COLUMNS].reset_index(drop=True)


def embedding_speed_table(records: list[dict], labels: dict, controls=()) -> pd.DataFrame:
    """What each embedding cost: device, cells, seconds, cells/s, peak memory, per (dataset, embedding; controls
    last), with the status and reason of those that did not run."""
    df = _records_frame(records, labels, controls)
    df = df.assign(_e=_embedding_rank(df["embedding"], labels, controls)).sort_values(["dataset", "_e"], kind="stable")
    return df[RECORD_COLUMNS].reset_index(drop=True)


def _str(x) -> str:
    return x if isinstance(x, str) else ""


def _why(status: str, reason: str) -> str:
    """Why a value is missing, in words."""
    if status and status != "ok":
        return f"{status.replace('_', ' ')}: {reason}" if reason else status.replace("_", " ")
    return reason or "no value returned"


def _columns(sub: pd.DataFrame) -> list[str]:
    """Metric ids in table order (bio, batch, aggregate; first appearance within a type)."""
    return list(
        dict.fromkeys(sub.sort_values("metric_type", key=lambda t: t.map(TYPE_ORDER.index), kind="stable")["metric"])
    )


def _scope(
    cells: list[tuple[str, str]], columns: list[str], types: dict, names: dict, embeddings: list[str], emb_labels: dict
) -> str:
    """Which cells of a dataset's table one reason covers, in words ("batch-correction metrics, Total")."""
    metrics = {m for _, m in cells}
    if metrics == set(columns):
        what = "every metric"
    else:
        of_type = {t: {m for m in columns if types[m] == t} for t in TYPE_WORDS}
        whole = [t for t, of in of_type.items() if of and of <= metrics]
        what = ", ".join(
            [TYPE_WORDS[t] for t in whole] + [names[m] for m in columns if m in metrics and types[m] not in whole]
        )
    embs = list(dict.fromkeys(e for e, _ in cells))
    return what if set(embs) == set(embeddings) else f"{what} for {', '.join(emb_labels[e] for e in embs)}"


def _name(label: str, control: bool) -> str:
    """An embedding's name in benchmark.md: a control's in italics (a bound of the scores, listed last, not ranked)."""
    return f"*{label}*" if control else label


def _dataset_lines(dataset: str, sub: pd.DataFrame) -> list[str]:
    """One dataset's table (embeddings x metrics, 3 decimals, n/a cells numbered by reason), its footnotes and
    the cells and metric set behind it."""
    columns = _columns(sub)
    types = dict(zip(sub["metric"], sub["metric_type"]))
    names = dict(zip(sub["metric"], sub["metric_label"]))
    embeddings = list(dict.fromkeys(sub["embedding"]))
    emb_labels = dict(zip(sub["embedding"], sub["embedding_label"]))
    by_cell = {(r.embedding, r.metric): r for r in sub.itertuples()}
    checkpoint = dict(zip(sub["embedding"], sub["checkpoint"]))
    control = dict(zip(sub["embedding"], sub["control"]))
    reasons: dict[str, list] = {}
    rows = []
    for e in embeddings:
        cells = []
        for m in columns:
            r = by_cell.get((e, m))
            if r is not None and pd.notna(r.value):
                cells.append(f"{r.value:.3f}")
                continue
            why = _why(_str(r.status), _str(r.reason)) if r is not None else "not scored"
            reasons.setdefault(why, []).append((e, m))
            cells.append(f"n/a [{list(reasons).index(why) + 1}]")
        rows.append(f"| {_name(emb_labels[e], control[e])} | {_text(checkpoint[e])} | " + " | ".join(cells) + " |")
    lines = [
        "",
        f"### Dataset `{dataset}`",
        "",
        "| embedding | checkpoint | " + " | ".join(names[m] for m in columns) + " |",
        "|---" * (len(columns) + 2) + "|",
        *rows,
        "",
    ]
    lines += [
        f"- n/a [{i}] ({_scope(cells, columns, types, names, embeddings, emb_labels)}): {why}."
        for i, (why, cells) in enumerate(reasons.items(), 1)
    ]
    cells_scored = "; ".join(dict.fromkeys(sub["cells"].map(_str))) or "–"
    metric_set = "; ".join(dict.fromkeys(sub["metric_set"].map(_str))) or "–"
    lines.append(f"- Cells scored: {cells_scored}. Metric set: {metric_set}.")
    return lines


def _overview_lines(zeroshot: pd.DataFrame) -> list[str]:
    """Embeddings x datasets (controls last, in italics): the total score, or bio conservation where a dataset has no
    total (one batch), or why neither exists. Not a ranking: the rows keep the run's order."""
    if zeroshot.empty:
        return []
    agg = zeroshot[zeroshot["metric_type"] == "aggregate"]
    datasets = sorted(set(zeroshot["dataset"]))
    lines = [
        "",
        "### Overview: aggregate score per dataset",
        "",
        "Total (0.6 bio + 0.4 batch); *bio* marks bio conservation alone, where a dataset has one batch. Rows in"
        " the run's order, not ranked; the controls (in italics) last.",
        "",
        "| embedding | " + " | ".join(datasets) + " |",
        "|---" * (len(datasets) + 1) + "|",
    ]
    for emb, sub in agg.groupby("embedding", sort=False):
        cells = []
        for d in datasets:
            rows = sub[sub["dataset"] == d].set_index("metric")
            total = rows["value"].get("total", np.nan)
            bio = rows["value"].get("bio_conservation", np.nan)
            if pd.notna(total):
                cells.append(f"{total:.3f}")
            elif pd.notna(bio):
                cells.append(f"{bio:.3f} *bio*")
            elif rows.empty:
                cells.append("–")
            else:
                cells.append(f"n/a ({_str(rows['status'].iloc[0])})")
        name = _name(_str(sub["embedding_label"].iloc[0]), bool(sub["control"].iloc[0]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _control_lines(zeroshot: pd.DataFrame) -> list[str]:
    """What each control of the table is for (:data:`CONTROL_ROLES`); nothing when the run has none."""
    controls = zeroshot[zeroshot["control"]].drop_duplicates("embedding")
    if controls.empty:
        return []
    return [
        "",
        "The controls (in italics, after the embeddings, never ranked) are bounds of each score, not methods; an"
        " embedding's score means something beside them:",
        "",
        *(
            f"- {_name(r.embedding_label, True)}: {CONTROL_ROLES.get(r.embedding, 'a bound of the scores')}."
            for r in controls.itertuples()
        ),
    ]


def markdown_lines(zeroshot: pd.DataFrame, speed: pd.DataFrame, metric_defs: dict) -> list[str]:
    """The "Zero-shot embeddings" section of benchmark.md: per dataset the scib table with its n/a reasons and
    the cells and metric set behind it, each metric's definition, and what each embedding cost.

    ``metric_defs``: metric id -> {"label", "definition"} (``METRICS`` and ``AGGREGATES`` of
    :mod:`cellplm.bench.embedding_metrics`).
    """
    lines = [
        "",
        "## Zero-shot embeddings",
        "",
        "Each embedding method embedded a dataset's cells without seeing any cell-type label (the foundation"
        " models with the checkpoint named in each row; PCA and scVI fitted on these same cells, scVI with"
        " their batches; of the controls, only the jittered cell types see the labels), and scib-metrics"
        " scored every embedding against the labels and batches, on all cells of the dataset or a seeded"
        " subsample of them (values unscaled; total = 0.6 bio conservation + 0.4 batch correction, as"
        " scib-metrics' Benchmarker).",
    ]
    if zeroshot.empty:
        lines += ["", "No zero-shot scores."]
    lines += _overview_lines(zeroshot)
    lines += _control_lines(zeroshot)
    for dataset, sub in zeroshot.groupby("dataset", sort=True):
        lines += _dataset_lines(dataset, sub)
    shown = _columns(zeroshot)
    if shown:
        names = dict(zip(zeroshot["metric"], zeroshot["metric_label"]))
        types = dict(zip(zeroshot["metric"], zeroshot["metric_type"]))
        lines += ["", "### Metric definitions", ""]
        lines += [
            f"- **{names[m]}** (`{m}`, {types[m]}): {metric_defs.get(m, {}).get('definition') or '–'}" for m in shown
        ]
    lines += ["", "### Embedding cost", ""]
    if speed.empty:
        return lines + ["No embedding records."]
    lines += [
        "| dataset | embedding | status | device | cells | seconds | cells/s | peak RSS MB | peak GPU MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in speed.iterrows():
        status = _str(r["status"])
        status = "ok" if status == "ok" else _why(status, _str(r["reason"]))
        lines.append(
            f"| {r['dataset']} | {r['label']} | {status} | {_text(r['device'])} | {_num(r['n_cells'], ',.0f')} | "
            f"{_num(r['embed_s'], '.1f')} | {_num(r['cells_per_s'], ',.0f')} | {_num(r['peak_rss_mb'], ',.0f')} | "
            f"{_num(r['peak_gpu_mb'], ',.0f')} |"
        )
    return lines


# ---- the scib results table, as a figure ----------------------------------------------------------------------------
