"""Figures of the report from the aggregated tables."""

import pandas as pd

from cellplm.bench.config import method_labels
from cellplm.bench.job import job
from cellplm.bench.report import context_plots, plots, zeroshot_plots

with job(snakemake):
    cfg = snakemake.config
    labels = method_labels(cfg)
    inp, out = snakemake.input, snakemake.output
    plots.score_heatmap(pd.read_csv(inp.summary, sep="\t"), cfg["run"]["heatmap_metric"], labels, out.heatmap)
    plots.published_comparison(pd.read_csv(inp.comparison, sep="\t"), labels, out.published)
    plots.speed_bars(pd.read_csv(inp.speed, sep="\t"), labels, out.speed)
    zeroshot_plots.scib_plot(pd.read_csv(inp.zeroshot, sep="\t"), out.zeroshot)
    curve, stability = pd.read_csv(inp.context_curve, sep="\t"), pd.read_csv(inp.context_stability, sep="\t")
    context_plots.curve_plot(curve, out.context_curve)
    context_plots.stability_plot(stability, labels, out.context_stability)
    context_plots.cost_plot(curve, out.context_cost)
