"""Write the canonical h5ad of one dataset and its QC report."""

from cellplm.bench.io import write_h5ad, write_json
from cellplm.bench.preprocess import DatasetSpec, preprocess
from cellplm.bench.workflow import job

with job(snakemake):
    spec = DatasetSpec.from_config(snakemake.wildcards.dataset, snakemake.params.spec)
    adata, report = preprocess(snakemake.input[0], spec)
    print(report)
    write_h5ad(adata, snakemake.output.h5ad)
    write_json(report.__dict__, snakemake.output.qc)
