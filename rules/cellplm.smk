# CellPLM checkpoint, obtained as config key `cellplm.checkpoint.source` says:
#   release   the authors' file from their shared Dropbox folder (cellplm.releases) into <download dir>/cellplm/,
#             verified (sha256 pinned or recorded, whole zip, released architecture), linked as below
#   path      a checkpoint on disk, linked into results/cellplm/checkpoints/<kind>__<name>/model.*
#   url       downloaded (resumable, retried, sha256-verified) into <download dir>/cellplm/, then linked as above
#   pretrain  corpus (results/cellplm/corpus/<item>.h5ad) -> results/cellplm/pretrained/<shape>_e<N>_seed<S>_<hash>/
#   none      random initialisation (no rule runs)
# The CellPLM method jobs take the two checkpoint files as inputs and get their prefix and kind as params
# (rules/common.smk: method_inputs, method_params_json).


rule cellplm_download:
    output:
        f"{DL}/cellplm/{{ckpt_file}}",
    log:
        "logs/cellplm/download/{ckpt_file}.log",
    params:
        spec=lambda w: CKPT.url[f"{DL}/cellplm/{w.ckpt_file}"],
        settings=config["download"],
    retries: 2
    localrule: True
    conda:
        "../workflow/envs/data.yaml"
    script:
        "../workflow/scripts/data/download.py"


# Links the checkpoint and loads it once: config and weights must agree, and a `released` one must have the
# released architecture (cellplm/bench/checkpoints.py), so a wrong file stops here, not in every method job.
rule cellplm_link_checkpoint:
    input:
        unpack(checkpoint_link_inputs),
    output:
        config="results/cellplm/checkpoints/{ckpt}/model.config.json",
        weights="results/cellplm/checkpoints/{ckpt}/model.best.ckpt",
        provenance="results/cellplm/checkpoints/{ckpt}/provenance.json",
    log:
        "logs/cellplm/link_checkpoint/{ckpt}.log",
    params:
        source=CKPT.source,
        kind=CKPT.kind,
        url=CKPT.url,
        trusted_sha256=CKPT.trusted_sha256,
    localrule: True
    conda:
        "../workflow/envs/cellplm.yaml"
    script:
        "../workflow/scripts/cellplm/link_checkpoint.py"


rule cellplm_corpus:
    input:
        corpus_inputs,
    output:
        "results/cellplm/corpus/{item}.h5ad",
    log:
        "logs/cellplm/corpus/{item}.log",
    params:
        spec=corpus_spec,
        code=code_hash("workflow/scripts/cellplm/corpus.py"),
    priority: 2  # pretraining is on the critical path of every CellPLM row
    conda:
        "../workflow/envs/data.yaml"
    script:
        "../workflow/scripts/cellplm/corpus.py"


rule cellplm_pretrain:
    input:
        corpus_files(),
    output:
        config="results/cellplm/pretrained/{pretrained}/model.config.json",
        weights="results/cellplm/pretrained/{pretrained}/model.best.ckpt",
        loss="results/cellplm/pretrained/{pretrained}/loss.tsv",
        record="results/cellplm/pretrained/{pretrained}/pretraining.json",
    log:
        "logs/cellplm/pretrain/{pretrained}.log",
    benchmark:
        "results/benchmarks/cellplm/pretrain/{pretrained}.tsv"
    params:
        args=pretrain_args(),
        keep_last="true" if PRETRAIN["resume"] else "false",
        code=code_hash("cellplm.pretrain", "cellplm.pretrain.__main__"),
    threads: PRETRAIN["threads"]
    priority: 2
    resources:
        gpu=1 if PRETRAIN["gpu"] else 0,
    conda:
        "../workflow/envs/cellplm.yaml"
    shell:
        # Without resume, a stale training checkpoint (last.*) from an earlier run must not be continued.
        "out=$(dirname {output.weights}); {params.keep_last} || rm -f $out/last.config.json $out/last.best.ckpt;"
        " OMP_NUM_THREADS={threads} python -m cellplm.pretrain {input} --out $out {params.args} > {log} 2>&1"


rule cellplm_loss_plot:
    input:
        lambda w: f"{CKPT.dir}/loss.tsv",
    output:
        report(
            "results/plots/cellplm_pretraining_loss.png",
            caption="../workflow/report/pretraining_loss.rst",
            category="CellPLM pretraining",
        ),
    log:
        "logs/report/cellplm_pretraining_loss.log",
    params:
        title=lambda w: f"CellPLM pretrained here: {Path(CKPT.dir).name}",
        code=code_hash("workflow/scripts/report/pretraining_loss.py"),
    localrule: True
    conda:
        "../workflow/envs/report.yaml"
    script:
        "../workflow/scripts/report/pretraining_loss.py"
