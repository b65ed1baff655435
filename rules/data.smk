# Data: download -> (extract | assemble) -> canonical dataset -> train/test/solution per split variant.


rule download:
    output:
        f"{DL}/{{file}}",
    log:
        "logs/download/{file}.log",
    params:
        url=lambda w: REMOTE[w.file]["url"],
        sha256=lambda w: REMOTE[w.file]["sha256"],
        settings=config["download"],
    retries: 2
    localrule: True
    conda:
        "../workflow/envs/data.yaml"
    script:
        "../workflow/scripts/data/download.py"


rule extract_archive:
    input:
        archive_download,
    output:
        "resources/extracted/{dataset}.h5ad",
    log:
        "logs/extract/{dataset}.log",
    params:
        member=lambda w: source(w)["member"],
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
        code=CODE_HASH,
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
        "benchmarks/preprocess/{dataset}.tsv"
    params:
        spec=lambda w: config["datasets"][w.dataset],
        code=CODE_HASH,
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
        code=CODE_HASH,
    conda:
        "../workflow/envs/data.yaml"
    script:
        "../workflow/scripts/data/split.py"
