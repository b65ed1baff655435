"""Figures for the report: score heatmap, ours vs published, confusion matrices, speed (log scale)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import atomic_path  # noqa: E402
from ..metrics import METRIC_LABELS  # noqa: E402
from .readings import READING_SHORT, READING_TOLERANCE, READINGS  # noqa: E402


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def _placeholder(path, text: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    _save(fig, path)


def score_heatmap(summary: pd.DataFrame, metric: str, labels: dict, path) -> None:
    sub = summary[summary["metric"] == metric].copy()
    if sub.empty:
        return _placeholder(path, "no scores")
    sub["column"] = sub["dataset"] + "\n" + sub["split"]
    piv = sub.pivot_table(index="method", columns="column", values="mean", sort=False)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * piv.shape[1], 0.8 + 0.45 * piv.shape[0]))
    im = ax.imshow(piv.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(piv.shape[1]), piv.columns, fontsize=8)
    ax.set_yticks(range(piv.shape[0]), [labels.get(m, m) for m in piv.index], fontsize=8)
    for (i, j), v in np.ndenumerate(piv.to_numpy(dtype=float)):
        ax.text(
            j,
            i,
            "–" if np.isnan(v) else f"{v:.2f}",
            ha="center",
            va="center",
            color="white" if not np.isnan(v) and v < 0.6 else "black",
            fontsize=8,
        )
    fig.colorbar(im, ax=ax, label=METRIC_LABELS[metric])
    ax.set_title(f"{METRIC_LABELS[metric]} (mean over seeds)")
    _save(fig, path)


READING_MARKERS = {"tm_macro_accuracy": "o", "tm_macro_accuracy_swapped": "s", "accuracy": "^"}
READING_OFFSET = 0.22  # markers of one row side by side, in READINGS order
UNCERTAIN_LABEL = f"reading uncertain (our readings more than {READING_TOLERANCE} apart)"


def published_comparison(comp: pd.DataFrame, labels: dict, path) -> None:
    """Per dataset, one column per published row: our mean under each of the three readings side by side (marker
    shape: the reading; filled: the reading the evidence favours, blue where comparable with the published value,
    grey where not; error bars: standard deviation over seeds), the published value as a red bar across the column,
    and an orange band behind rows whose readings are more than READING_TOLERANCE apart ("reading uncertain", also
    in the tick label). The y axis spans the values shown, so that gaps of a few thousandths stay visible."""
    sub = comp[comp["method"] != "(not run here)"]
    if sub.empty:
        return _placeholder(path, "No dataset in this run has published values (see config: published_as).")
    panels = list(dict.fromkeys(zip(sub["dataset"], sub["split"])))
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(1.2 + 1.1 * sub.groupby(["dataset", "split"]).size().max() * len(panels), 4.6),
        squeeze=False,
    )
    for ax, (d, split) in zip(axes[0], panels):
        r = sub[(sub["dataset"] == d) & (sub["split"] == split)]
        x = np.arange(len(r))
        ok = r["comparable"].astype(bool).to_numpy()
        uncertain = r["reading_uncertain"].astype(bool).to_numpy()
        for i in np.flatnonzero(uncertain):
            ax.axvspan(i - 0.45, i + 0.45, color="tab:orange", alpha=0.15, linewidth=0, label=UNCERTAIN_LABEL)
        shown = [r["published_value"].to_numpy(dtype=float)]
        for k, g in enumerate(READINGS):
            xs = x + (k - (len(READINGS) - 1) / 2) * READING_OFFSET
            mean, std = r[f"ours_{g}"].to_numpy(dtype=float), r[f"ours_{g}_std"].to_numpy(dtype=float)
            shown.append(mean)
            favoured = (r["reading"] == g).to_numpy()
            have = ~np.isnan(mean)
            ax.errorbar(
                xs[have], mean[have], yerr=np.nan_to_num(std[have]), fmt="none", ecolor="grey", elinewidth=0.8, zorder=3
            )
            for mask, face, name in (
                (favoured & ok, "tab:blue", f"ours, {g} (favoured, comparable)"),
                (favoured & ~ok, "lightgrey", f"ours, {g} (favoured, not comparable)"),
                (~favoured, "none", f"ours, {g}"),
            ):
                if (mask & have).any():
                    ax.scatter(
                        xs[mask & have],
                        mean[mask & have],
                        marker=READING_MARKERS[g],
                        s=40,
                        facecolors=face,
                        edgecolors="black",
                        linewidths=0.8,
                        zorder=4,
                        label=name,
                    )
        has = r["published_value"].notna().to_numpy()
        ax.hlines(
            r["published_value"][has],
            x[has] - 0.42,
            x[has] + 0.42,
            color="tab:red",
            linewidth=2.5,
            zorder=2,
            label="published",
        )
        values = np.concatenate(shown)
        values = values[~np.isnan(values)]
        low, high = (values.min(), values.max()) if values.size else (0.0, 1.0)
        margin = max(0.02, 0.1 * (high - low))
        ax.set_ylim(max(0.0, low - margin), min(1.0, high + margin) + 0.005)
        ax.set_xlim(-0.5, len(r) - 0.5)
        ticks = [
            f"{labels.get(m, m)}\n[favoured: {READING_SHORT.get(g, g)}]"
            + ("\nreading uncertain" if u else "")
            + ("" if c else "\nnot comparable")
            for m, g, u, c in zip(r["method"], r["reading"], uncertain, ok)
        ]
        ax.set_xticks(x, ticks, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{d} ({split})\n{r['data'].iloc[0]}", fontsize=8)
    axes[0][0].set_ylabel("our score under each reading; published value")
    axes[0][-1].legend(handles=_comparison_legend(), loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    _save(fig, path)


def _comparison_legend() -> list:
    """Legend of :func:`published_comparison`: one entry per reading's marker, then the fills, bar and band."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    def marker(shape, face, text):
        return Line2D([], [], linestyle="none", marker=shape, markerfacecolor=face, markeredgecolor="black", label=text)

    return [marker(READING_MARKERS[g], "none", f"ours, {g} ({READING_SHORT[g]})") for g in READINGS] + [
        marker("o", "tab:blue", "filled: the favoured reading, comparable"),
        marker("o", "lightgrey", "filled grey: the favoured reading, not comparable"),
        Line2D([], [], color="tab:red", linewidth=2.5, label="published"),
        Patch(color="tab:orange", alpha=0.15, label=UNCERTAIN_LABEL),
    ]


def confusion_grid(confusions: dict[str, pd.DataFrame], labels: dict, title: str, path) -> None:
    """Row-normalised confusion matrices, one panel per method."""
    items = [(m, c) for m, c in confusions.items() if c is not None and not c.empty]
    if not items:
        return _placeholder(path, f"{title}: no successful run to show")
    n = len(items)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    size = max(3.0, 0.25 * max(c.shape[0] for _, c in items))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, (method, c) in zip(axes.ravel(), items):
        m = c.to_numpy(dtype=float)
        m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
        ax.set_title(labels.get(method, method), fontsize=9)
        ax.set_xticks(range(c.shape[1]), c.columns, rotation=90, fontsize=6)
        ax.set_yticks(range(c.shape[0]), c.index, fontsize=6)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def speed_bars(speed: pd.DataFrame, labels: dict, path) -> None:
    """Left: zero-shot embedding throughput per model (one job, same cells and device) with the speed-up over
    scGPT; right: fit + predict seconds per run (mean over seeds). Both on log scales."""
    emb = speed[speed["measure"] == "embedding_throughput"]
    fit = speed[speed["measure"] == "fit_wall"].copy()
    pred = speed[speed["measure"] == "predict_wall"].set_index(["dataset", "split", "method"])["value"]
    if emb.empty and fit.empty:
        return _placeholder(path, "no speed measurements")
    fig, (ax_e, ax_f) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 2]})
    if emb.empty:
        ax_e.axis("off")
    else:
        names = [SPEED_LABELS.get(m, m) for m in emb["method"]]
        values = emb["value"].fillna(0).to_numpy(dtype=float)
        ax_e.bar(np.arange(len(emb)), np.where(values > 0, values, np.nan), color="tab:blue")
        for i, (_, r) in enumerate(emb.iterrows()):
            text = (
                (f"{r['speedup_vs_scgpt']:.0f}x scGPT" if pd.notna(r["speedup_vs_scgpt"]) else f"{r['value']:.1f}/s")
                if r["status"] == "ok"
                else r["status"].replace("_", " ")
            )
            ax_e.annotate(text, (i, values[i] if values[i] > 0 else 1), ha="center", va="bottom", fontsize=8)
        ax_e.set_yscale("log")
        ax_e.set_xticks(np.arange(len(emb)), names, rotation=15, fontsize=8)
        ax_e.set_ylabel("cells per second (log scale)")
        first = emb.iloc[0]
        ax_e.set_title(
            f"Zero-shot embedding, {first['n_cells']:.0f} cells x {first['n_genes']:.0f} genes\n"
            f"device: {', '.join(sorted(set(emb['device'].dropna().astype(str)))) or 'n/a'}",
            fontsize=9,
        )
    if fit.empty:
        ax_f.axis("off")
    else:
        fit["total"] = (
            fit["value"] + pred.reindex(pd.MultiIndex.from_frame(fit[["dataset", "split", "method"]])).to_numpy()
        )
        fit["column"] = fit["dataset"] + " / " + fit["split"]
        groups = list(dict.fromkeys(fit["column"]))
        methods = list(dict.fromkeys(fit["method"]))
        width = 0.8 / len(methods)
        for i, m in enumerate(methods):
            r = fit[fit["method"] == m].set_index("column").reindex(groups)
            ax_f.bar(np.arange(len(groups)) + i * width, r["total"].clip(lower=1e-3), width, label=labels.get(m, m))
        ax_f.set_yscale("log")
        ax_f.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
        ax_f.set_ylabel("fit + predict seconds (log scale)")
        ax_f.set_title(
            f"Time per run, mean over seeds (device: {', '.join(sorted(set(fit['device'].astype(str))))})", fontsize=9
        )
        ax_f.legend(fontsize=7, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    _save(fig, path)


SPEED_LABELS = {"cellplm": "CellPLM", "scgpt": "scGPT", "geneformer": "Geneformer"}


def pretraining_loss(loss: pd.DataFrame, title: str, path) -> None:
    """Pretraining loss per optimiser step (with a moving average) and validation loss per epoch."""
    if loss.empty:
        _placeholder(path, "no pretraining steps were logged")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    train = loss[loss["split"] == "train"]
    val = loss[loss["split"] == "val"]
    if not train.empty:
        ax.plot(train["step"], train["loss"], lw=0.6, alpha=0.4, color="tab:blue", label="training (per step)")
        window = max(1, len(train) // 20)
        ax.plot(
            train["step"],
            train["loss"].rolling(window, min_periods=1).mean(),
            color="tab:blue",
            label=f"training (moving mean, {window} steps)",
        )
    if not val.empty:
        ax.plot(val["step"], val["loss"], "o-", color="tab:orange", label="validation (per epoch)")
    ax.set_xlabel("optimiser step (one sentence)")
    ax.set_ylabel("loss (latent + NB reconstruction)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, path)
