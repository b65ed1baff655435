"""Stream one h5ad out of a downloaded archive."""

from cellplm.bench.sources import extract_member
from cellplm.bench.workflow import job

with job(snakemake):
    extract_member(snakemake.input[0], snakemake.params.member, snakemake.output[0])
