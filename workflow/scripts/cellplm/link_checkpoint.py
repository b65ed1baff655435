"""Link a CellPLM checkpoint (local files or a download) into its provenance-named folder as model.*, and verify
it (cellplm/bench/checkpoints.py)."""

from cellplm.bench.checkpoints import link
from cellplm.bench.job import job

with job(snakemake):
    inp, out, p = snakemake.input, snakemake.output, snakemake.params
    record = link(
        inp.config,
        inp.weights,
        out.config,
        out.weights,
        out.provenance,
        source=p.source,
        kind=p.kind,
        urls=p.url,
        trusted_sha256=p.trusted_sha256,
    )
    print(record["load_report"], "released architecture:", record["architecture"]["released_architecture"])
