"""UMAPs of each dataset's embeddings, coloured by cell type and by batch (one figure per dataset, all in one job)."""

from cellplm.bench.embedding_results import read_embeddings
from cellplm.bench.io import read_h5ad
from cellplm.bench.job import job
from cellplm.bench.report.zeroshot_plots import umap_plot

with job(snakemake):
    inp, p = snakemake.input, snakemake.params
    n = len(p.embeddings)
    for i, dataset in enumerate(p.datasets):
        files = slice(i * n, (i + 1) * n)  # this dataset's embeddings and records, in p.embeddings order
        arrays, unavailable, cells = read_embeddings(p.embeddings, inp.embeddings[files], inp.records[files])
        obs = read_h5ad(inp.datasets[i], layers=False).obs.loc[cells]
        panels = {e: (p.labels[e], arrays.get(e), unavailable.get(e, ("", ""))[1]) for e in p.embeddings}
        umap_plot(dataset, panels, obs, snakemake.output[i], max_cells=p.umap["max_cells"], seed=p.umap["seed"])
