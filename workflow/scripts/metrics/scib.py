"""scib-metrics scores of one dataset's embeddings (all its cells, or a seeded subsample), one long table."""

from cellplm.bench.embedding_metrics import score_embeddings
from cellplm.bench.embedding_results import read_embeddings
from cellplm.bench.embeddings.lognorm_pca import pca_embedding
from cellplm.bench.io import read_h5ad, write_tsv
from cellplm.bench.job import job
from cellplm.keys import BATCH, LABEL

with job(snakemake):
    inp, p = snakemake.input, snakemake.params
    dataset = read_h5ad(inp.dataset, layers=False)  # the counts are in X (the canonical file holds them twice)
    arrays, unavailable, cells = read_embeddings(p.embeddings, inp.embeddings, inp.records)
    dataset = dataset[cells].copy()
    scib = p.scib
    pre = pca_embedding(dataset, seed=scib["seed"]) if scib["batch"].get("pcr_comparison") else None
    scores = score_embeddings(
        arrays,
        dataset.obs[LABEL].astype(str).to_numpy(),
        dataset.obs[BATCH].astype(str).to_numpy(),
        bio=scib["bio"],
        batch=scib["batch"],
        max_cells=scib["max_cells"],
        seed=scib["seed"],
        neighbors=scib["neighbors"],
        pre_integrated=pre,
        unavailable=unavailable,
        n_jobs=snakemake.threads,
    )
    scores.insert(0, "dataset", snakemake.wildcards.dataset)
    print(scores.to_string())
    write_tsv(scores, snakemake.output[0])
