"""UMAPs of one dataset's embeddings, coloured by cell type and by batch."""

from cellplm.bench.embedding_results import read_embeddings
from cellplm.bench.io import read_h5ad
from cellplm.bench.job import job
from cellplm.bench.report.zeroshot_plots import umap_plot

with job(snakemake):
    inp, p = snakemake.input, snakemake.params
    arrays, unavailable, cells = read_embeddings(p.embeddings, inp.embeddings, inp.records)
    obs = read_h5ad(inp.dataset, layers=False).obs.loc[cells]
    panels = {e: (p.labels[e], arrays.get(e), unavailable.get(e, ("", ""))[1]) for e in p.embeddings}
    umap_plot(
        snakemake.wildcards.dataset,
        panels,
        obs,
        snakemake.output[0],
        max_cells=p.umap["max_cells"],
        seed=p.umap["seed"],
    )
