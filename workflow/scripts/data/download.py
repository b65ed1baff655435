"""Fetch one remote file through its service's contract (resumable, retried, verified, atomic); see
cellplm/bench/data/download.py."""

import json

from cellplm.bench.data.download import Manifest, fetch
from cellplm.bench.job import job

with job(snakemake) as log:
    s, spec = snakemake.params.settings, snakemake.params.spec
    info = fetch(
        spec["url"],
        snakemake.output[0],
        sha256=spec.get("sha256"),
        manifest=Manifest(s["manifest"]),
        mirrors=spec.get("mirrors") or [],
        version_id=spec.get("version_id"),
        as_of=spec.get("as_of"),
        retries=s["retries"],
        timeout=s["timeout"],
        endpoints=s["endpoints"],
    )
    print(json.dumps(info, indent=2))
