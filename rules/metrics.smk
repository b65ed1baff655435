# Metrics: score every prediction of a dataset's split against its solution, in one job per (dataset, split)
# (scoring takes milliseconds; a job per prediction would spend its time importing torch).


rule score:
    input:
        solution="results/data/{dataset}/{split}/solution.h5ad",
        predictions=run_files("prediction.h5ad"),
    output:
        scores=run_files("scores.tsv"),
        per_class=run_files("per_class.tsv"),
        confusion=run_files("confusion.tsv"),
    log:
        "logs/score/{dataset}/{split}.log",
    params:
        runs=[{"method": m, "seed": seed} for m in METHODS for seed in SEEDS],
        code=code_hash("workflow/scripts/metrics/score.py"),
    conda:
        "../workflow/envs/data.yaml"
    script:
        "../workflow/scripts/metrics/score.py"
