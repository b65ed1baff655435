"""Score the predictions of one dataset split: summary metrics, per-class scores, confusion matrix of each run."""

from cellplm.bench.io import read_h5ad, write_tsv
from cellplm.bench.job import job
from cellplm.bench.metrics import evaluate

with job(snakemake):
    w = snakemake.wildcards
    solution = read_h5ad(snakemake.input.solution)
    out = snakemake.output
    for i, run in enumerate(snakemake.params.runs):
        ids = {"dataset": w.dataset, "split": w.split, **run}
        scored = evaluate(solution, read_h5ad(snakemake.input.predictions[i]), ids)
        print(scored["scores"])
        write_tsv(scored["scores"], out.scores[i])
        write_tsv(scored["per_class"], out.per_class[i])
        write_tsv(scored["confusion"], out.confusion[i], index=True)
