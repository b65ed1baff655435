# Data: download -> (extract | assemble) -> canonical dataset -> train/test/solution per split variant.


# A file that a download could not get can be put at its place by hand (the error names it); it is then used as is,
# and its sha256 is recorded in the dataset table (results/tables/datasets.tsv) beside the pinned or recorded one.
rule download:
    output:
        f"{DL}/{{file}}",
    log:
        "logs/download/{file}.log",
    params:
        spec=lambda w: REMOTE[w.file],
        settings=config["download"],
    retries: 2
    localrule: True
    conda:
        "../workflow/envs/data.yaml"
    script:
        "../workflow/scripts/data/download.py"


rule extract_archive:
    input:
        f"{DL}/{{archive}}",
    output:
        directory("resources/extracted/{archive}"),
    log:
        "logs/extract/{archive}.log",
    params:
        members=lambda w: ARCHIVES[w.archive],
    conda:
        "../workflow/envs/data.yaml"
    script:
        "../workflow/scripts/data/extract_archive.py"


rule build_source:
    input:
        unpack(source_downloads),
    output:
        "resources/sources/{dataset}.h5ad",
    log:
        "logs/build_source/{dataset}.log",
    params:
        source=source,
        code=code_hash("workflow/scripts/data/build_source.py"),
    conda:
        build_source_env
    script:
        "../workflow/scripts/data/build_source.py"


rule preprocess:
    input:
        source_h5ad,
    output:
        h5ad="results/data/{dataset}/dataset.h5ad",
        qc="results/data/{dataset}/qc.json",
    log:
        "logs/preprocess/{dataset}.log",
    benchmark:
        "results/benchmarks/preprocess/{dataset}.tsv"
    params:
        spec=lambda w: config["datasets"][w.dataset],
        member=source_member,
        manifest=config["download"]["manifest"],
        code=code_hash("workflow/scripts/data/preprocess.py"),
    resources:
        mem_mb=lambda w, input, attempt: max(4000, int(input.size_mb * 4 * attempt)),
    conda:
        "../workflow/envs/data.yaml"
    script:
        "../workflow/scripts/data/preprocess.py"


rule split:
    input:
        "results/data/{dataset}/dataset.h5ad",
    output:
        train="results/data/{dataset}/{split}/train.h5ad",
        test="results/data/{dataset}/{split}/test.h5ad",
        solution="results/data/{dataset}/{split}/solution.h5ad",
    log:
        "logs/split/{dataset}/{split}.log",
    params:
        spec=split_spec,
        fractions=lambda w: config["datasets"][w.dataset]["split_fractions"],
        code=code_hash("workflow/scripts/data/split.py"),
    priority: 2  # seconds each, and every method, embedding and the pretraining corpus wait for them
    conda:
        "../workflow/envs/data.yaml"
    script:
        "../workflow/scripts/data/split.py"
