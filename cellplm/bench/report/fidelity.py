"""Fidelity: our CellPLM fine-tuning (``cellplm_finetune``) against the authors' code (``cellplm_upstream``).

Both fine-tune the same checkpoint on the same split files, so where our CellPLM rows miss the published values, this
table says how much of the gap is the re-implementation's: per dataset, split and metric, ours minus the authors' code,
as the mean over seeds of each and the difference of those means, and as the paired difference of the runs with the
same seed number (each code draws its own random numbers from it, so a pair shares the data, split, checkpoint and
run index, not the random stream), with its mean and sd over the seeds both ran.

A difference is only like for like when the two ran the same settings: the table compares what their run records say
(checkpoint, precision and the protocol settings of :data:`~cellplm.bench.finetune_protocol.PROTOCOL`) and names
every one that differs.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..finetune_protocol import PROTOCOL
from ..metrics import METRIC_LABELS, METRICS

OURS, AUTHORS = "cellplm_finetune", "cellplm_upstream"
KEYS = ["dataset", "split"]
COLUMNS = [
    "dataset",
    "split",
    "metric",
    "ours",
    "authors",
    "ours_mean",
    "ours_sd",
    "ours_n_seeds",
    "authors_mean",
    "authors_sd",
    "authors_n_seeds",
    "difference_of_means",
    "n_paired",
    "paired_mean",
    "paired_sd",
    "paired_differences",
    "like_for_like",
    "settings",
    "ours_status",
    "authors_status",
]


def _sd(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else np.nan


def settings(records: pd.DataFrame) -> dict[tuple, dict[str, str]]:
    """(dataset, split, method) -> the settings its run records name (every value over its seeds, joined): the
    checkpoint label, the precision and each protocol setting (``extra['protocol']``)."""
    out: dict[tuple, dict[str, set]] = {}
    for _, r in records.iterrows():
        extra = json.loads(r["extra"]) if isinstance(r.get("extra"), str) and r["extra"] else {}
        found = {
            "checkpoint": r.get("checkpoint") or "",
            "precision": r.get("precision") or extra.get("precision") or "",
        }
        found.update({k: (extra.get("protocol") or {}).get(k, "") for k in PROTOCOL})
        mine = out.setdefault((r["dataset"], r["split"], r["method"]), {})
        for k, v in found.items():
            if v != "" and v is not None:
                mine.setdefault(k, set()).add(str(v))
    return {key: {k: ", ".join(sorted(v)) for k, v in found.items()} for key, found in out.items()}


def settings_note(ours: dict[str, str], authors: dict[str, str]) -> tuple[bool, str]:
    """(like for like, in words): every setting the two record that differs, "ours vs authors'", a setting only one
    of them recorded named as unknown; or, where a side has no successful run (only those record their settings),
    that its settings are unknown."""
    unknown = [
        who
        for who, found in (("ours", ours), ("the authors' code", authors))
        if not any(found.get(k) for k in ("precision", *PROTOCOL))
    ]
    if unknown:
        return False, f"settings unknown: no successful run of {' and '.join(unknown)} recorded them"
    diffs = []
    for name in ("checkpoint", "precision", *PROTOCOL):
        a, b = ours.get(name, ""), authors.get(name, "")
        if a != b:
            diffs.append(f"{name} {a or 'unknown'} vs {b or 'unknown'}")
    if diffs:
        return False, "settings differ (ours vs authors'): " + "; ".join(diffs)
    same = (f"{k} {ours[k]}" for k in ("checkpoint", "precision", *PROTOCOL) if k in ours)
    return True, "like for like: " + ", ".join(same)


def fidelity_table(
    scores: pd.DataFrame, records: pd.DataFrame, ours: str = OURS, authors: str = AUTHORS
) -> pd.DataFrame:
    """``results/tables/fidelity.tsv``: one row per dataset, split and metric where either method ran (see the module
    docstring); empty (with its columns) when the run has neither."""
    if scores.empty or not scores["method"].isin([ours, authors]).any():
        return pd.DataFrame(columns=COLUMNS)
    cfg = settings(records) if not records.empty else {}
    both = scores[scores["method"].isin([ours, authors])]
    rows = []
    for (dataset, split, metric), sub in both.groupby(KEYS + ["metric"], sort=False):
        ok = sub[sub["status"] == "ok"]
        by = {m: ok[ok["method"] == m].set_index("seed")["value"].astype(float) for m in (ours, authors)}
        paired = sorted(set(by[ours].index) & set(by[authors].index))
        d = np.array([by[ours][s] - by[authors][s] for s in paired])
        like, note = settings_note(cfg.get((dataset, split, ours), {}), cfg.get((dataset, split, authors), {}))
        status = {m: ",".join(sorted(set(sub.loc[sub["method"] == m, "status"]))) or "not run" for m in (ours, authors)}
        mean = {m: float(by[m].mean()) if len(by[m]) else np.nan for m in (ours, authors)}
        rows.append(
            {
                "dataset": dataset,
                "split": split,
                "metric": metric,
                "ours": ours,
                "authors": authors,
                "ours_mean": mean[ours],
                "ours_sd": _sd(by[ours]),
                "ours_n_seeds": len(by[ours]),
                "authors_mean": mean[authors],
                "authors_sd": _sd(by[authors]),
                "authors_n_seeds": len(by[authors]),
                "difference_of_means": mean[ours] - mean[authors],
                "n_paired": len(paired),
                "paired_mean": float(d.mean()) if len(d) else np.nan,
                "paired_sd": _sd(d),
                "paired_differences": "; ".join(f"seed {s}: {v:+.4f}" for s, v in zip(paired, d)),
                "like_for_like": like,
                "settings": note,
                "ours_status": status[ours],
                "authors_status": status[authors],
            }
        )
    order = {m: i for i, m in enumerate(METRICS)}
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values(
        KEYS + ["metric"], key=lambda c: c.map(order) if c.name == "metric" else c, kind="stable"
    ).reset_index(drop=True)


def markdown_lines(table: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    """The section "Fidelity: ours vs the authors' code" of benchmark.md ([] when neither method ran)."""
    if table.empty:
        return []
    first = table.iloc[0]
    ours, authors = labels.get(first["ours"], first["ours"]), labels.get(first["authors"], first["authors"])
    lines = [
        "",
        "## Fidelity: ours vs the authors' code",
        "",
        f"{ours} (`{first['ours']}`, this project's re-implementation) minus {authors} (`{first['authors']}`, "
        "the authors' CellTypeAnnotationPipeline), same split files and checkpoint: the difference of the means "
        "over seeds, and the paired difference of the runs with the same seed number (mean ± sd, n). A "
        "difference is like for like only where the settings column says so (results/tables/fidelity.tsv).",
        "",
    ]
    for (dataset, split), sub in table.groupby(KEYS, sort=False):
        note = "; ".join(dict.fromkeys(sub["settings"]))
        statuses = {s for s in (*sub["ours_status"], *sub["authors_status"]) if s != "ok"}
        lines += [
            f"### {dataset}, split `{split}`",
            "",
            f"{note}." + (f" Runs not ok: {', '.join(sorted(statuses))}." if statuses else ""),
            "",
            "| metric | ours | authors' code | difference of means | paired difference (mean ± sd, n) |",
            "|---|---|---|---|---|",
        ]
        for _, r in sub.iterrows():
            paired = (
                (
                    f"{r['paired_mean']:+.3f}"
                    + (f" ± {r['paired_sd']:.3f}" if pd.notna(r["paired_sd"]) else "")
                    + f" (n {r['n_paired']})"
                )
                if r["n_paired"]
                else "–"
            )
            metric = METRIC_LABELS.get(r["metric"], r["metric"])
            lines.append(
                f"| {metric} | {_mean(r, 'ours')} | {_mean(r, 'authors')} | "
                f"{_signed(r['difference_of_means'])} | {paired} |"
            )
        lines.append("")
    return lines[:-1]


def _mean(r, who: str) -> str:
    if not r[f"{who}_n_seeds"]:
        return r[f"{who}_status"]
    sd = r[f"{who}_sd"]
    return f"{r[f'{who}_mean']:.3f}" + (f" ± {sd:.3f}" if pd.notna(sd) else "") + f" (n {r[f'{who}_n_seeds']})"


def _signed(x) -> str:
    return f"{x:+.3f}" if pd.notna(x) else "–"
