# The zero-shot track: what the embeddings themselves are worth. Each embedding method (one folder each,
# cellplm/bench/embeddings/<id>/) embeds all cells of a dataset without labels (a control may get them: the split's
# solution file is an input of control embeddings only); scib-metrics scores the embeddings of a dataset in one job;
# a kNN on each embedding's train cells adds the zero-shot row <id>_zeroshot to the annotation tables; one UMAP
# figure per dataset, of the embeddings that are not controls. CPU and GPU embedding methods are separate rules, as
# for methods.
# Embedding, scoring and UMAP jobs have priority 1: they start as soon as their inputs exist and overlap the
# annotation methods, instead of trailing them at the end of a run.

# PYTHONSAFEPATH and OMP_NUM_THREADS: as METHOD_SHELL (rules/methods.smk).
EMBED_SHELL = (
    "PYTHONSAFEPATH=1 OMP_NUM_THREADS={threads} {params.python} {params.command} --train {input.train} --test {input.test}"
    " {params.solution} --embedding {output.embedding} --record {output.record} --dataset {wildcards.dataset}"
    " --split {params.split} --seed {params.seed} --param-set {params.param_set} --params {params.params:q}"
    " --on-error {params.on_error} > {log} 2>&1"
)


rule embed:
    input:
        unpack(embedding_inputs),
    output:
        embedding="results/embeddings/{dataset}/{embedding}/embedding.h5ad",
        record="results/embeddings/{dataset}/{embedding}/run.json",
    log:
        "logs/embeddings/{dataset}/{embedding}.log",
    benchmark:
        "results/benchmarks/embeddings/{dataset}/{embedding}.tsv"
    wildcard_constraints:
        embedding=alternatives(CPU_EMBEDDINGS),
    params:
        python=EMBEDDING_JOBS.python,
        command=EMBEDDING_JOBS.command,
        split=embedding_split,
        solution=solution_arg,
        seed=SEEDS[0],
        params=EMBEDDING_JOBS.params_json,
        param_set=RUN["param_set"],
        on_error=RUN["on_method_error"],
        code=EMBEDDING_JOBS.code_hash,
    threads: EMBEDDING_JOBS.threads
    priority: 1
    conda:
        EMBEDDING_JOBS.env
    shell:
        EMBED_SHELL


use rule embed as embed_gpu with:
    wildcard_constraints:
        embedding=alternatives(GPU_EMBEDDINGS),
    resources:
        gpu=1,


# Embedding batch jobs: the embedding methods with `batch: true` (light ones; the demo's), grouped as the methods' batch
# jobs are (interpreter, threads, and conda env with --use-conda), embed a dataset in one process
# (python -m cellplm.bench.embeddings batch), so that start-up and imports are paid once per dataset.
for batch, members in EMBEDDING_BATCHES.items():

    rule:
        name:
            f"embed_batch_{batch}"
        input:
            unpack(embedding_batch_inputs(members)),
        output:
            **embedding_batch_files(members),
        log:
            f"logs/embeddings/{{dataset}}/batch_{batch}.log",
        benchmark:
            f"results/benchmarks/embeddings/{{dataset}}/batch_{batch}.tsv"
        params:
            python=EMBEDDING_JOBS.python(EMBEDDING_JOBS.member(members[0])),
            runs=embedding_batch_runs(members),
            solution=solution_arg,
            split=embedding_split,
            seed=SEEDS[0],
            param_set=RUN["param_set"],
            on_error=RUN["on_method_error"],
            code=EMBEDDING_JOBS.batch_code_hash(members),
        threads: max(config["embeddings"][e]["threads"] for e in members)
        priority: 1
        conda:
            EMBEDDING_JOBS.env(EMBEDDING_JOBS.member(members[0]))
        shell:
            "PYTHONSAFEPATH=1 OMP_NUM_THREADS={threads} {params.python} -m cellplm.bench.embeddings batch"
            " --train {input.train} --test {input.test} {params.solution} --runs {params.runs:q}"
            " --dataset {wildcards.dataset} --split {params.split} --seed {params.seed}"
            " --param-set {params.param_set} --on-error {params.on_error} > {log} 2>&1"


rule scib:
    input:
        dataset="results/data/{dataset}/dataset.h5ad",
        embeddings=embedding_files("embedding.h5ad"),
        records=embedding_files("run.json"),
    output:
        "results/embeddings/{dataset}/scib.tsv",
    log:
        "logs/embeddings/{dataset}/scib.log",
    benchmark:
        "results/benchmarks/embeddings/{dataset}/scib.tsv"
    params:
        embeddings=EMBEDDINGS,
        scib=ZEROSHOT["scib"],
        code=code_hash("workflow/scripts/metrics/scib.py"),
    threads: ZEROSHOT["scib"]["threads"]
    priority: 1
    conda:
        "../workflow/envs/scib.yaml"
    script:
        "../workflow/scripts/metrics/scib.py"


# Every dataset's figure in one job: umap-learn's numba code is compiled once (about 20 s a process). The controls
# are left out (noise and one-hot cell types are no pictures of the data, and each panel costs a UMAP).
rule umap:
    input:
        datasets=expand("results/data/{dataset}/dataset.h5ad", dataset=DATASETS),
        embeddings=all_embedding_files("embedding.h5ad", UMAP_EMBEDDINGS),
        records=all_embedding_files("run.json", UMAP_EMBEDDINGS),
    output:
        [
            report(
                f"results/plots/umap/{d}.png",
                caption="../workflow/report/umap.rst",
                category="Zero-shot",
                labels={"dataset": d},
            )
            for d in DATASETS
        ],
    log:
        "logs/report/umap.log",
    params:
        datasets=DATASETS,
        embeddings=UMAP_EMBEDDINGS,
        labels={e: config["embeddings"][e]["label"] for e in UMAP_EMBEDDINGS},
        umap=ZEROSHOT["umap"],
        code=code_hash("workflow/scripts/report/umap.py"),
    priority: 1
    conda:
        "../workflow/envs/scib.yaml"
    script:
        "../workflow/scripts/report/umap.py"


if ZEROSHOT_METHODS:

    rule zeroshot_knn:
        input:
            unpack(zeroshot_split_inputs),
        output:
            predictions=zeroshot_files("prediction.h5ad"),
            records=zeroshot_files("run.json"),
        log:
            "logs/zeroshot/{dataset}/{split}.log",
        params:
            runs=zeroshot_runs(),
            methods={m: config["methods"][m] for m in ZEROSHOT_METHODS},
            embeddings=EMBEDDINGS,
            param_set=RUN["param_set"],
            on_error=RUN["on_method_error"],
            code=code_hash("workflow/scripts/zeroshot/knn.py"),
        conda:
            "../workflow/envs/classic.yaml"
        script:
            "../workflow/scripts/zeroshot/knn.py"
