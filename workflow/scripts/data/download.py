"""Fetch one remote file (resumable, retried, sha256-verified, atomic). See cellplm/bench/download.py."""

from cellplm.bench.download import Manifest, fetch
from cellplm.bench.workflow import job

with job(snakemake) as log:
    s = snakemake.params.settings
    info = fetch(snakemake.params.url, snakemake.output[0], sha256=snakemake.params.sha256,
                 manifest=Manifest(s["manifest"]), retries=s["retries"], timeout=s["timeout"],
                 cellxgene_api=s["cellxgene_api"])
    print(info)
