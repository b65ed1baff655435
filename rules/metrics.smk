# Metrics: score each prediction against its solution.


rule score:
    input:
        solution="results/data/{dataset}/{split}/solution.h5ad",
        prediction="results/runs/{dataset}/{split}/{method}/seed{seed}/prediction.h5ad",
    output:
        scores="results/runs/{dataset}/{split}/{method}/seed{seed}/scores.tsv",
        per_class="results/runs/{dataset}/{split}/{method}/seed{seed}/per_class.tsv",
        confusion="results/runs/{dataset}/{split}/{method}/seed{seed}/confusion.tsv",
    log:
        "logs/score/{dataset}/{split}/{method}/seed{seed}.log",
    params:
        code=CODE_HASH,
    conda:
        "../workflow/envs/data.yaml"
    script:
        "../workflow/scripts/metrics/score.py"
