"""Figures of the report from the aggregated tables."""

import pandas as pd

from cellplm.bench.config import method_labels
from cellplm.bench.job import job
from cellplm.bench.report import plots, zeroshot_plots

with job(snakemake):
    cfg = snakemake.config
    labels = method_labels(cfg)
    inp, out = snakemake.input, snakemake.output
    plots.score_heatmap(pd.read_csv(inp.summary, sep="\t"), cfg["run"]["heatmap_metric"], labels, out.heatmap)
    plots.published_comparison(pd.read_csv(inp.comparison, sep="\t"), labels, out.published)
    plots.speed_bars(pd.read_csv(inp.speed, sep="\t"), labels, out.speed)
    zeroshot_plots.scib_plot(pd.read_csv(inp.zeroshot, sep="\t"), out.zeroshot)
