"""Zero-shot annotation rows of one dataset split: a kNN on each embedding's train cells, for every seed."""

from cellplm.bench.job import job
from cellplm.bench.methods.base import RunIds, run
from cellplm.bench.methods.zeroshot import EmbeddingKNN

with job(snakemake):
    w, inp, out, p = snakemake.wildcards, snakemake.input, snakemake.output, snakemake.params
    for i, (method, seed) in enumerate(p.runs):
        emb = p.methods[method]["zeroshot_of"]
        j = p.embeddings.index(emb)
        run(
            EmbeddingKNN.of(method, p.methods[method]),
            RunIds(w.dataset, w.split, method, seed, p.param_set),
            inp.train,
            inp.test,
            out.predictions[i],
            out.records[i],
            params={"embedding": inp.embeddings[j], "record": inp.embedding_records[j], **p.methods[method]["params"]},
            on_error=p.on_error,
        )
