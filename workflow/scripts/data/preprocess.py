"""Write the canonical h5ad of one dataset and its QC report (with where its source came from)."""

from pathlib import Path

from cellplm.bench.data.download import Manifest
from cellplm.bench.data.preprocess import DatasetSpec, preprocess
from cellplm.bench.data.sources import source_record
from cellplm.bench.io import write_h5ad, write_json
from cellplm.bench.job import job

with job(snakemake):
    spec = DatasetSpec.from_config(snakemake.wildcards.dataset, snakemake.params.spec)
    source = Path(snakemake.input[0]) / snakemake.params.member if snakemake.params.member else snakemake.input[0]
    adata, report = preprocess(source, spec)
    print(report)
    write_h5ad(adata, snakemake.output.h5ad)
    record = source_record(snakemake.params.spec["source"], source, Manifest(snakemake.params.manifest))
    write_json({**report.__dict__, "source_record": record}, snakemake.output.qc)
