"""Fetch one pretrained model folder (config `models`): see cellplm/bench/data/services.py."""

import json

from cellplm.bench.data.download import Manifest
from cellplm.bench.data.services import fetch_model
from cellplm.bench.job import job

with job(snakemake):
    s = snakemake.params.settings
    info = fetch_model(
        snakemake.params.spec,
        snakemake.output[0],
        Manifest(s["manifest"]),
        retries=s["retries"],
        timeout=s["timeout"],
        endpoints=s["endpoints"],
    )
    print(json.dumps(info, indent=2))
