"""Score one prediction: summary metrics, per-class scores, confusion matrix."""

from cellplm.bench.io import read_h5ad, write_tsv
from cellplm.bench.metrics import evaluate
from cellplm.bench.workflow import job

with job(snakemake):
    w = snakemake.wildcards
    ids = {"dataset": w.dataset, "split": w.split, "method": w.method, "seed": int(w.seed)}
    out = evaluate(read_h5ad(snakemake.input.solution), read_h5ad(snakemake.input.prediction), ids)
    print(out["scores"])
    write_tsv(out["scores"], snakemake.output.scores)
    write_tsv(out["per_class"], snakemake.output.per_class)
    write_tsv(out["confusion"], snakemake.output.confusion, index=True)
