# Embedding speed: the same cells embedded by CellPLM, scGPT and Geneformer on the same device, one model after
# the other in ONE job (speed_embedding), each model with the interpreter of its own method environment.
# Fine-tuning wall times come from the run records; aggregate joins both into results/tables/speed.tsv.


rule speed_cells:
    input:
        speed_cells_input,
    output:
        "results/speed/cells.h5ad",
    log:
        "logs/speed/cells.log",
    params:
        n_cells=SPEED["n_cells"],
        n_genes=SPEED["n_genes"],
        seed=SPEED["seed"],
        code=code_hash("workflow/scripts/speed/cells.py"),
    conda:
        "../workflow/envs/data.yaml"
    script:
        "../workflow/scripts/speed/cells.py"


# Which interpreter runs a model: the conda env's of its method (with --use-conda) or the method's `python` key.
rule speed_interpreter:
    output:
        "results/speed/interpreters/{model}.txt",
    log:
        "logs/speed/interpreters/{model}.log",
    wildcard_constraints:
        model=alternatives(SPEED_MODELS),
    params:
        python=speed_model_python,
    localrule: True
    conda:
        speed_model_env
    shell:
        "{params.python} -c 'import sys; print(sys.executable)' > {output} 2> {log}"


rule speed_embedding:
    input:
        unpack(speed_embedding_inputs),
    output:
        "results/speed/embedding.tsv",
    log:
        "logs/speed/embedding.log",
    params:
        models=SPEED_MODELS,
        device=SPEED["device"],
        repeats=SPEED["repeats"],
        timeout_s=SPEED["timeout_s"],
        code=code_hash("workflow/scripts/speed/embedding.py"),
    threads: SPEED["threads"]
    resources:
        gpu=1 if SPEED["gpu"] else 0,
    conda:
        "../workflow/envs/cellplm.yaml"
    script:
        "../workflow/scripts/speed/embedding.py"
