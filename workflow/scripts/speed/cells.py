"""The cells of the speed job: a seeded draw of speed.n_cells cells and speed.n_genes HVGs of one dataset."""

from cellplm.bench.io import read_h5ad, write_h5ad
from cellplm.bench.job import job
from cellplm.bench.speed import speed_input

with job(snakemake):
    p = snakemake.params
    cells = speed_input(read_h5ad(snakemake.input[0]), p.n_cells, p.n_genes, p.seed)
    print(f"speed input: {cells.n_obs} cells x {cells.n_vars} genes")
    write_h5ad(cells, snakemake.output[0])
