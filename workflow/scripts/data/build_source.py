"""Build a source h5ad that is not a single downloaded file: PBMC12K (scvi-tools) or synthetic data."""

from cellplm.bench.data import sources
from cellplm.bench.io import write_h5ad
from cellplm.bench.job import job

with job(snakemake):
    src = dict(snakemake.params.source)
    kind = src.pop("kind")
    if kind == "pbmc12k":
        sources.assemble_pbmc12k(dict(snakemake.input.items()), snakemake.output[0])
    elif kind == "synthetic":
        write_h5ad(sources.synthetic(**src, progress=True), snakemake.output[0])
    else:
        raise ValueError(f"build_source cannot build a '{kind}' source")
