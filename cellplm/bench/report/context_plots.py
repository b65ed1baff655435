"""Figures of the tissue-context track (:mod:`.context`): the context curve, the stability bars, the cost curve."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .context import AS_TRAINED, CURVE_METRICS, stability_summary
from .plots import _placeholder, _save, plt

MARKERS = {"batch": "*", "single": "o", "random": "o", "spatial": "s", "mixed": "^"}


def _panels(n: int, width: float = 4.2, height: float = 3.2):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, axes[0]


def _policy_points(ax, runs: pd.DataFrame, y: str, colour) -> None:
    """One marker per run at (cells per sentence, ``y``), shaped by its policy's kind; the batch policy larger."""
    for kind, marker in MARKERS.items():
        pts = runs[runs["kind"] == kind]
        size = 120 if kind == "batch" else 36
        ax.scatter(pts["cells_per_sentence"], pts[y], marker=marker, color=colour, s=size, zorder=3)


def _ok(curve: pd.DataFrame) -> pd.DataFrame:
    return curve[(curve["status"] == "ok") & curve["value"].notna() & curve["cells_per_sentence"].notna()]


def curve_plot(curve: pd.DataFrame, path) -> None:
    """Per dataset: each metric against the mean cells per sentence (log scale), one line per metric through the
    within-batch policies (single, random:K, batch), batch marked with a star; spatial and mixed policies as
    separate markers of the metric's colour."""
    ok = _ok(curve)
    if ok.empty:
        return _placeholder(path, "No sentence-policy embedding was scored (zeroshot.sentence_policies)")
    datasets = list(dict.fromkeys(ok["dataset"]))
    fig, axes = _panels(len(datasets))
    colours = dict(zip(CURVE_METRICS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, dataset in zip(axes, datasets):
        sub = ok[ok["dataset"] == dataset]
        for metric, words in CURVE_METRICS.items():
            m = sub[sub["metric"] == metric]
            if m.empty:
                continue
            line = m[m["kind"].isin(["single", "random", "batch"])].sort_values("cells_per_sentence")
            ax.plot(line["cells_per_sentence"], line["value"], "-", color=colours[metric], label=words)
            _policy_points(ax, m, "value", colours[metric])
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("cells per sentence (log)")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score")
    handles = [plt.Line2D([], [], color=c, label=CURVE_METRICS[m]) for m, c in colours.items()]
    handles += [plt.Line2D([], [], marker=mk, color="grey", linestyle="", label=k) for k, mk in MARKERS.items()]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    fig.suptitle("CellPLM zero-shot, by sentence policy (batch = upstream's)", fontsize=10, y=1.04)
    _save(fig, path)


def stability_plot(stability: pd.DataFrame, labels: dict, path) -> None:
    """Per dataset split: the share of test cells whose label changes under each policy (mean, sd over seeds)."""
    summary = stability_summary(stability) if not stability.empty else pd.DataFrame()
    summary = summary[summary["policy"] != AS_TRAINED] if not summary.empty else summary
    if summary.empty:
        return _placeholder(path, "No fine-tuned run with context predictions finished")
    groups = list(dict.fromkeys(zip(summary["dataset"], summary["split"], summary["method"])))
    policies = list(dict.fromkeys(summary["policy"]))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(groups) * len(policies) / 2 + 2), 3.2))
    width = 0.8 / len(policies)
    x = np.arange(len(groups))
    for i, policy in enumerate(policies):
        rows = summary[summary["policy"] == policy].set_index(["dataset", "split", "method"])
        mean = [rows["changed_mean"].get(g, np.nan) for g in groups]
        sd = [rows["changed_std"].get(g, np.nan) for g in groups]
        ax.bar(x + (i - (len(policies) - 1) / 2) * width, mean, width, yerr=np.nan_to_num(sd), capsize=3, label=policy)
    ax.set_xticks(x, [f"{d}/{s}\n{labels.get(m, m)}" for d, s, m in groups], fontsize=8)
    ax.set_ylabel("test cells whose label changes")
    ax.set_ylim(0, max(0.05, float(np.nanmax(summary["changed_mean"] + summary["changed_std"].fillna(0)))) * 1.15)
    ax.legend(title="policy", fontsize=8, frameon=False)
    ax.set_title("Fine-tuned CellPLM: labels against the trained policy's", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def cost_plot(curve: pd.DataFrame, path) -> None:
    """Per dataset: embedding cells per second against the mean cells per sentence (log-log)."""
    runs = curve[(curve["status"] == "ok")].drop_duplicates(["dataset", "embedding"])
    runs = runs[runs["cells_per_s"].notna() & runs["cells_per_sentence"].notna()]
    if runs.empty:
        return _placeholder(path, "No sentence-policy embedding ran")
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for dataset, sub in runs.groupby("dataset", sort=False):
        sub = sub.sort_values("cells_per_sentence")
        (line,) = ax.plot(sub["cells_per_sentence"], sub["cells_per_s"], "-", alpha=0.5, label=dataset)
        _policy_points(ax, sub, "cells_per_s", line.get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cells per sentence (log)")
    ax.set_ylabel("cells embedded per second (log)")
    ax.set_title(f"Cost of context ({runs['device'].iloc[0] or 'device'}; markers as in the curve)", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3, which="both")
    _save(fig, path)
