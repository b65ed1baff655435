"""Write train.h5ad, test.h5ad (no labels) and solution.h5ad (labels only) for one split variant."""

from cellplm.bench.data.split import SplitSpec, make_split
from cellplm.bench.io import read_h5ad, write_h5ad
from cellplm.bench.job import job

with job(snakemake):
    adata = read_h5ad(snakemake.input[0], layers=False)
    spec = SplitSpec.from_config(snakemake.wildcards.split, snakemake.params.spec)
    parts = make_split(adata, spec, snakemake.params.fractions, path=snakemake.input[0])
    print(parts["train"].uns)
    for name in ("train", "test", "solution"):
        write_h5ad(parts[name], snakemake.output[name])
