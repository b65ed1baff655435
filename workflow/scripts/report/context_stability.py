"""The tissue-context track's stability table: each context run's labels under every sentence policy, scored."""

import json

import pandas as pd

from cellplm.bench.io import write_tsv
from cellplm.bench.job import job
from cellplm.bench.report import context

with job(snakemake):
    inp = snakemake.input
    rows = [
        context.stability_rows(prediction, solution, json.load(open(record)))
        for prediction, record, solution in zip(inp.predictions, inp.records, inp.solutions)
    ]
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=context.STABILITY_COLUMNS)
    write_tsv(table, snakemake.output[0])
