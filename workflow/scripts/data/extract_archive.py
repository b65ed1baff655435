"""Extract the members of one downloaded archive that this run's datasets use (one pass over the archive)."""

from cellplm.bench.data.sources import extract_members
from cellplm.bench.job import job

with job(snakemake):
    extract_members(snakemake.input[0], snakemake.params.members, snakemake.output[0])
    print(f"{snakemake.output[0]}: {', '.join(snakemake.params.members)}")
