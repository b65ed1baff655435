"""Loss curve of the CellPLM pretraining run (training steps and validation per epoch)."""

import pandas as pd

from cellplm.bench.job import job
from cellplm.bench.report import plots

with job(snakemake):
    plots.pretraining_loss(pd.read_csv(snakemake.input[0], sep="\t"), snakemake.params.title, snakemake.output[0])
