# Methods: one folder each (cellplm/bench/methods/<id>/), run by one command in the method's own env. CPU and GPU
# methods are separate rules so that profiles can request a GPU for the latter only (resources: gpu=1).

# PYTHONSAFEPATH: no folder of the working directory shadows a package a method imports.
# OMP_NUM_THREADS: numpy, scikit-learn and torch use the threads the job was given, not every core.
METHOD_SHELL = (
    "PYTHONSAFEPATH=1 OMP_NUM_THREADS={threads} {params.python} {params.command} --train {input.train} --test {input.test} {params.solution}"
    " --prediction {output.prediction} --record {output.record}"
    " --dataset {wildcards.dataset} --split {wildcards.split} --seed {wildcards.seed}"
    " --param-set {params.param_set} --params {params.params:q} --on-error {params.on_error} > {log} 2>&1"
)


rule run_method:
    input:
        unpack(method_inputs),
    output:
        prediction="results/runs/{dataset}/{split}/{method}/seed{seed}/prediction.h5ad",
        record="results/runs/{dataset}/{split}/{method}/seed{seed}/run.json",
    log:
        "logs/methods/{dataset}/{split}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/methods/{dataset}/{split}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method=alternatives(CPU_METHODS),
    params:
        python=METHOD_JOBS.python,
        command=METHOD_JOBS.command,
        solution=solution_arg,
        params=METHOD_JOBS.params_json,
        param_set=RUN["param_set"],
        on_error=RUN["on_method_error"],
        code=METHOD_JOBS.code_hash,
    threads: METHOD_JOBS.threads
    conda:
        METHOD_JOBS.env
    shell:
        METHOD_SHELL


use rule run_method as run_method_gpu with:
    wildcard_constraints:
        method=alternatives(GPU_METHODS),
    resources:
        gpu=1,


# Batch jobs: the CPU methods with `batch: true` (light ones), grouped by env, run all their seeds on a dataset split in one
# process (python -m cellplm.bench.methods batch), so that start-up and imports are paid once per dataset split.
for batch, members in BATCHES.items():

    rule:
        name:
            f"run_batch_{batch}"
        input:
            unpack(batch_inputs(members)),
        output:
            **batch_files(members),
        log:
            f"logs/methods/{{dataset}}/{{split}}/batch_{batch}.log",
        benchmark:
            f"results/benchmarks/methods/{{dataset}}/{{split}}/batch_{batch}.tsv"
        params:
            python=METHOD_JOBS.python(METHOD_JOBS.member(members[0])),
            runs=batch_runs(members),
            solution=solution_arg,
            param_set=RUN["param_set"],
            on_error=RUN["on_method_error"],
            code=METHOD_JOBS.batch_code_hash(members),
        threads: max(config["methods"][m]["threads"] for m in members)
        conda:
            METHOD_JOBS.env(METHOD_JOBS.member(members[0]))
        shell:
            "PYTHONSAFEPATH=1 OMP_NUM_THREADS={threads} {params.python} -m cellplm.bench.methods batch"
            " --train {input.train} --test {input.test} {params.solution} --runs {params.runs:q}"
            " --dataset {wildcards.dataset} --split {wildcards.split}"
            " --param-set {params.param_set} --on-error {params.on_error} > {log} 2>&1"
