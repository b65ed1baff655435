"""The zero-shot track's figures: scib-metrics' results table as a figure, and a UMAP grid per dataset.

They read the tables of :mod:`.zeroshot` (the long ``zeroshot.tsv``) and the embeddings themselves; a value or an
embedding that is missing is drawn as such, with its reason.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ...keys import BATCH, EMBEDDING, LABEL  # noqa: E402
from ..compile_cache import cache_umap_numba  # noqa: E402
from ..embedding_metrics import subsample  # noqa: E402
from .plots import _placeholder, _save  # noqa: E402
from .zeroshot import TYPE_ORDER, _columns, _str  # noqa: E402

LEGEND_MAX = 30  # more categories than this: no legend (a note says how many)


def _value_norm(values: np.ndarray) -> Normalize:
    """Colour scale of one metric column: median ± 2.5 standard deviations, as scib-metrics' results table
    (plottable's normed_cmap); 0 to 1 where the column has too few values to spread."""
    v = values[~np.isnan(values)]
    std = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    if std == 0:
        return Normalize(0, 1)
    return Normalize(np.median(v) - 2.5 * std, np.median(v) + 2.5 * std)


def _ink(rgba) -> str:
    """Black or white text, whichever reads on this background."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _ranked(sub: pd.DataFrame) -> list[str]:
    """Embeddings best first: by total, or by bio conservation where no total was scored (one batch); then the
    controls, unranked, in table order (a random embedding can top the total: it is a bound, not a method)."""
    controls = set(sub.loc[sub["control"], "embedding"])
    order = [e for e in dict.fromkeys(sub["embedding"]) if e not in controls]
    wide = sub.pivot_table(index="embedding", columns="metric", values="value", sort=False, dropna=False).reindex(order)
    key = next((k for k in ("total", "bio_conservation") if k in wide and wide[k].notna().any()), None)
    if key is not None:
        order = list(wide[key].sort_values(ascending=False, na_position="last", kind="stable").index)
    return order + [e for e in dict.fromkeys(sub["embedding"]) if e in controls]


def _scib_panel(ax, dataset: str, sub: pd.DataFrame, wrap: int) -> None:
    """One dataset: rows embeddings, metric values as coloured circles, aggregates as bars, n/a in grey; the
    controls last, below a line, greyed (their colours faded, names in grey italics)."""
    columns = _columns(sub)
    types = dict(zip(sub["metric"], sub["metric_type"]))
    names = dict(zip(sub["metric"], sub["metric_label"]))
    rows = _ranked(sub)
    value = {(r.embedding, r.metric): r.value for r in sub.itertuples()}
    first = sub.drop_duplicates("embedding").set_index("embedding")
    control = first["control"].astype(bool)
    faded = control.reindex(rows).to_numpy()  # the controls' rows, in drawing order
    alpha = np.where(faded, 0.4, 1.0)
    n = len(rows)
    ax.set_xlim(-3.2, len(columns) - 0.5)
    ax.set_ylim(n - 0.5, -2.4)
    ax.axis("off")
    for i, e in enumerate(rows):
        ax.text(
            -3.1,
            i - 0.1,
            first.loc[e, "embedding_label"],
            ha="left",
            va="center",
            fontsize=9,
            weight="normal" if control[e] else "bold",
            style="italic" if control[e] else "normal",
            color="dimgrey" if control[e] else "black",
        )
        ax.text(
            -3.1,
            i + 0.25,
            textwrap.shorten(_str(first.loc[e, "checkpoint"]) or "–", 48),
            ha="left",
            va="center",
            fontsize=6,
            color="dimgrey",
        )
        ax.axhline(i + 0.5, color="black", lw=0.8, ls=(0, (1, 5)))
    if control.any() and not control.all():  # the line above the first control
        ax.axhline(rows.index(next(e for e in rows if control[e])) - 0.5, color="black", lw=1)
    for j, m in enumerate(columns):
        ax.text(j, -0.75, names[m].replace(" ", "\n", 1), ha="center", va="center", fontsize=8)
        values = np.array([value.get((e, m), np.nan) for e in rows], dtype=float)
        if types[m] == "aggregate":
            for i, v in enumerate(values):
                if np.isnan(v):
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="grey")
                    continue
                end = j - 0.45 + 0.9 * min(max(v, 0), 1)
                ax.barh(
                    i, end - (j - 0.45), left=j - 0.45, height=0.7, color=plt.cm.YlGnBu(v), alpha=alpha[i], zorder=1
                )
                inside = v >= 0.5  # the value inside a long bar, after a short one
                ax.text(
                    end - 0.03 if inside else end + 0.03,
                    i,
                    f"{v:.2f}",
                    ha="right" if inside else "left",
                    va="center",
                    fontsize=8,
                    color=_ink(plt.cm.YlGnBu(v)) if inside else "black",
                    zorder=2,
                )
            continue
        norm = _value_norm(values[~faded] if not faded.all() else values)  # the controls do not stretch the scale
        for i, v in enumerate(values):
            colour = (0.85, 0.85, 0.85, 1.0) if np.isnan(v) else plt.cm.PRGn(norm(v))
            ax.scatter([j], [i], s=700, color=[colour], alpha=alpha[i], edgecolors="none", zorder=1)
            ax.text(
                j,
                i,
                "n/a" if np.isnan(v) else f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="grey" if np.isnan(v) else _ink(colour),
                zorder=2,
            )
    groups = {t: [j for j, m in enumerate(columns) if types[m] == t] for t in TYPE_ORDER}
    titles = {"bio": "Bio conservation", "batch": "Batch correction", "aggregate": "Aggregate score"}
    for t, js in groups.items():
        if js:
            ax.text((js[0] + js[-1]) / 2, -1.85, titles[t], ha="center", va="center", fontsize=9, weight="bold")
            ax.plot([js[0] - 0.4, js[-1] + 0.4], [-1.55, -1.55], color="black", lw=1)
    if groups["aggregate"]:
        ax.axvline(groups["aggregate"][0] - 0.5, color="black", lw=1)
    ax.axhline(-0.25, color="black", lw=1)
    cells = "; ".join(dict.fromkeys(sub["cells"].map(_str)))
    metric_set = "; ".join(dict.fromkeys(sub["metric_set"].map(_str)))
    ax.set_title(f"{dataset}: {cells}\n" + textwrap.fill(metric_set, wrap), loc="left", fontsize=8)


def scib_plot(zeroshot: pd.DataFrame, path) -> None:
    """Our equivalent of scib-metrics' ``Benchmarker.plot_results_table`` (matplotlib only): one panel per dataset,
    embeddings best first and the controls after them, greyed and unranked, metric values as circles coloured within
    their column (the controls' values left out of its scale), aggregates as bars; what was not scored is a grey
    "n/a" (its reason is in zeroshot.tsv and benchmark.md). Written atomically as png."""
    if zeroshot.empty:
        return _placeholder(path, "no zero-shot scores")
    datasets = sorted(set(zeroshot["dataset"]))
    subs = [zeroshot[zeroshot["dataset"] == d] for d in datasets]
    width = 3.5 + 1.0 * max(len(_columns(s)) for s in subs)
    heights = [2.0 + 0.5 * s["embedding"].nunique() for s in subs]
    fig, axes = plt.subplots(
        len(datasets), 1, figsize=(width, sum(heights)), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    for ax, d, sub in zip(axes[:, 0], datasets, subs):
        _scib_panel(ax, d, sub, wrap=int(width * 15))
    fig.tight_layout()
    _save(fig, path)


# ---- UMAPs of the embeddings ----------------------------------------------------------------------------------------


def _palette(categories: list) -> dict:
    """Category -> colour, the same in every row of the grid."""
    from scanpy.plotting.palettes import default_102

    colours = (
        plt.cm.tab10.colors if len(categories) <= 10 else plt.cm.tab20.colors if len(categories) <= 20 else default_102
    )
    return {c: colours[i % len(colours)] for i, c in enumerate(categories)}


def _umap(x: np.ndarray, seed: int) -> np.ndarray:
    """2-d UMAP of one embedding: scanpy's kNN graph on it (15 neighbours) then ``sc.tl.umap``."""
    import anndata as ad
    import scanpy as sc

    cache_umap_numba()
    adata = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(x))]))
    adata.obsm[EMBEDDING] = np.asarray(x, dtype=np.float32)
    sc.pp.neighbors(adata, use_rep=EMBEDDING, random_state=seed)
    sc.tl.umap(adata, random_state=seed)
    return adata.obsm["X_umap"]


def _legend(ax, palette: dict, what: str) -> None:
    """A legend of every category in its own column of the grid; beyond LEGEND_MAX categories a note instead."""
    ax.axis("off")
    if len(palette) > LEGEND_MAX:
        ax.text(
            0,
            1,
            f"{what}: {len(palette)}\nvalues, too many\nfor a legend",
            va="top",
            fontsize=8,
            transform=ax.transAxes,
        )
        return
    handles = [Line2D([], [], ls="", marker="o", color=c, label=str(k)) for k, c in palette.items()]
    ax.legend(
        handles=handles,
        loc="upper left",
        frameon=False,
        title=what,
        borderaxespad=0,
        fontsize=8 if len(palette) <= 15 else 6,
        title_fontsize=8,
        markerscale=0.8,
        handletextpad=0.2,
    )


def umap_plot(
    dataset: str, embeddings: dict, obs: pd.DataFrame, path, max_cells: int | None = 20000, seed: int = 0
) -> None:
    """A grid of UMAPs, one row per embedding, coloured by cell type (left) and by batch (right), png written
    atomically.

    ``embeddings``: id -> (label, array (n_cells, d) or None, reason); rows of every array are the rows of ``obs``
    (columns ``cell_type`` and ``batch``). Every embedding is drawn on the same seeded subsample of at most
    ``max_cells`` cells; one that did not run is a panel with its reason. Labels only colour the points: the UMAP
    of an embedding sees nothing but that embedding.
    """
    if not embeddings:
        return _placeholder(path, f"{dataset}: no embeddings to draw")
    idx = subsample(len(obs), max_cells, seed)
    for e, (_, x, _) in embeddings.items():
        if x is not None and len(x) != len(obs):
            raise ValueError(f"embedding {e}: {len(x)} rows for {len(obs)} cells")
    cell_type = obs[LABEL].astype(str).to_numpy()[idx]
    batch = obs[BATCH].astype(str).to_numpy()[idx]
    colours = {"cell type": _palette(sorted(set(cell_type))), "batch": _palette(sorted(set(batch)))}
    order = np.random.default_rng(seed).permutation(len(idx))  # no class painted over all others by file order
    size = min(20.0, 120000 / len(idx))  # scanpy's default point size
    height = 3.6 * len(embeddings) + 0.6
    fig = plt.figure(figsize=(11, height))
    grid = fig.add_gridspec(len(embeddings), 4, width_ratios=[1, 0.45, 1, 0.3], wspace=0.05, top=1 - 0.7 / height)
    for i, (e, (label, x, reason)) in enumerate(embeddings.items()):
        panels = [fig.add_subplot(grid[i, 0]), fig.add_subplot(grid[i, 2])]
        if x is None:
            panels[0].set(xticks=[], yticks=[])
            panels[1].axis("off")
            panels[0].text(
                0.5,
                0.5,
                textwrap.fill(f"{label}: not available ({reason or 'no reason recorded'})", 40),
                ha="center",
                va="center",
                fontsize=9,
                transform=panels[0].transAxes,
            )
            panels[0].set_title(label, fontsize=9)
            continue
        xy = _umap(np.asarray(x)[idx], seed)[order]
        for ax, (what, values) in zip(panels, [("cell type", cell_type), ("batch", batch)]):
            ax.scatter(
                xy[:, 0], xy[:, 1], s=size, c=[colours[what][v] for v in values[order]], linewidths=0, rasterized=True
            )
            ax.set(xticks=[], yticks=[])
            ax.set_title(f"{label}: {what}", fontsize=9)
    _legend(fig.add_subplot(grid[:, 1]), colours["cell type"], "cell type")
    _legend(fig.add_subplot(grid[:, 3]), colours["batch"], "batch")
    cells = (
        f"all {len(idx):,} cells"
        if len(idx) == len(obs)
        else f"a seeded subsample of {len(idx):,} of {len(obs):,} cells (seed {seed})"
    )
    fig.suptitle(f"{dataset}: UMAP of each zero-shot embedding, {cells}", fontsize=11, y=1 - 0.2 / height)
    _save(fig, path)
