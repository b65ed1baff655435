"""One CellPLM pretraining corpus item as an h5ad of raw counts (see cellplm.bench.data.sources.corpus_item)."""

from cellplm.bench.data.sources import corpus_item
from cellplm.bench.io import write_h5ad
from cellplm.bench.job import job

with job(snakemake):
    adata = corpus_item(snakemake.wildcards.item, list(snakemake.input), snakemake.params.spec)
    print(
        f"{snakemake.wildcards.item}: {adata.n_obs} cells, {adata.n_vars} genes, "
        f"{adata.obs['batch'].nunique()} sentences; spatial: {'spatial' in adata.obsm}"
    )
    write_h5ad(adata, snakemake.output[0])
