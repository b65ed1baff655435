"""Embedding throughput of every configured model, one after the other in this job (see cellplm/bench/speed.py)."""

from cellplm.bench.io import write_tsv
from cellplm.bench.job import job
from cellplm.bench.speed import run_models

with job(snakemake) as log:
    p, inp = snakemake.params, snakemake.input
    models = {
        name: {
            "python": open(inp[name]).read().strip() if not spec["reason"] else None,
            "options": spec["options"],
            "reason": spec["reason"],
        }
        for name, spec in p.models.items()
    }
    table = run_models(
        models,
        inp.cells,
        device=p.device,
        repeats=p.repeats,
        threads=snakemake.threads,
        timeout_s=p.timeout_s,
        log=lambda msg: print(msg, file=log, flush=True),
    )
    write_tsv(table, snakemake.output[0])
