"""Confusion matrices of every method on one dataset and split (one seed)."""

import pandas as pd

from cellplm.bench.config import method_labels
from cellplm.bench.job import job
from cellplm.bench.report import plots

with job(snakemake):
    cfg = snakemake.config
    labels = method_labels(cfg)
    confusions = {}
    for method, path in zip(snakemake.params.methods, snakemake.input):
        table = pd.read_csv(path, sep="\t", index_col=0)
        confusions[method] = table if table.size else None
    w = snakemake.wildcards
    title = f"{w.dataset}, split {w.split}, seed {snakemake.params.seed} (rows normalised)"
    plots.confusion_grid(confusions, labels, title, snakemake.output[0])
