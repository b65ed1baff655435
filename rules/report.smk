# Report: tidy tables, plots, and report() outputs for `snakemake --report results/report.html`.
from cellplm.bench.report.landing import landing_rst


rule aggregate:
    input:
        scores=all_scores(),
        records=all_records(),
        benchmarks=all_benchmarks(),
        qc=expand("results/data/{dataset}/qc.json", dataset=DATASETS),
        published=config["published"],
        published_datasets=config["published_datasets"],
        pretraining=pretraining_records(),
        speed_embedding=speed_outputs(),
        scib=all_scib_scores(),
        embedding_records=all_embedding_files("run.json"),
        context_stability="results/tables/context_stability.tsv",
    output:
        datasets=report("results/tables/datasets.tsv", caption="../workflow/report/datasets.rst", category="Tables"),
        scores=report("results/tables/scores.tsv", caption="../workflow/report/scores.rst", category="Tables"),
        summary=report("results/tables/summary.tsv", caption="../workflow/report/summary.rst", category="Tables"),
        comparison=report(
            "results/tables/comparison.tsv", caption="../workflow/report/comparison.rst", category="Tables"
        ),
        runs=report("results/tables/runs.tsv", caption="../workflow/report/runs.rst", category="Tables"),
        speed=report("results/tables/speed.tsv", caption="../workflow/report/speed.rst", category="Speed"),
        zeroshot=report("results/tables/zeroshot.tsv", caption="../workflow/report/zeroshot.rst", category="Zero-shot"),
        embedding_speed=report(
            "results/tables/embedding_speed.tsv", caption="../workflow/report/embedding_speed.rst", category="Speed"
        ),
        fidelity=report("results/tables/fidelity.tsv", caption="../workflow/report/fidelity.rst", category="Tables"),
        context_curve=report(
            "results/tables/context_curve.tsv", caption="../workflow/report/context_curve.rst", category="Tissue context"
        ),
        markdown=report("results/tables/benchmark.md", caption="../workflow/report/markdown.rst", category="Tables"),
    log:
        "logs/report/aggregate.log",
    params:
        runs=method_runs(),
        datasets=DATASETS,
        embeddings={e: config["embeddings"][e]["label"] for e in EMBEDDINGS},
        control_embeddings=CONTROL_EMBEDDINGS,
        notes={m: config["methods"][m]["note"] for m in METHODS if config["methods"][m].get("note")},
        code=code_hash("workflow/scripts/report/aggregate.py"),
    localrule: True
    conda:
        "../workflow/envs/report.yaml"
    script:
        "../workflow/scripts/report/aggregate.py"


rule context_stability:
    """The tissue-context track: every run of a method with context predictions (cellplm_finetune's
    context_policies) scored under each sentence policy, with the share of test cells whose label changes."""
    input:
        unpack(context_stability_inputs),
    output:
        report("results/tables/context_stability.tsv", caption="../workflow/report/context_stability.rst",
               category="Tissue context"),
    log:
        "logs/report/context_stability.log",
    params:
        code=code_hash("workflow/scripts/report/context_stability.py"),
    localrule: True
    conda:
        "../workflow/envs/report.yaml"
    script:
        "../workflow/scripts/report/context_stability.py"


rule landing_page:
    """The HTML report's landing page (the Snakefile's report: directive): datasets, methods and zero-shot rows
    of the config, and the wording about the published table's readings that benchmark.md uses."""
    output:
        "results/report/workflow.rst",
    log:
        "logs/report/landing_page.log",
    params:
        text=landing_rst(config, ZEROSHOT_METHODS),  # the page itself: rewritten whenever it changes
    localrule: True
    conda:
        "../workflow/envs/report.yaml"
    script:
        "../workflow/scripts/report/landing.py"


rule plots:
    input:
        summary="results/tables/summary.tsv",
        comparison="results/tables/comparison.tsv",
        speed="results/tables/speed.tsv",
        zeroshot="results/tables/zeroshot.tsv",
        context_curve="results/tables/context_curve.tsv",
        context_stability="results/tables/context_stability.tsv",
    output:
        heatmap=report("results/plots/score_heatmap.png", caption="../workflow/report/heatmap.rst", category="Accuracy"),
        published=report(
            "results/plots/published_comparison.png", caption="../workflow/report/published.rst", category="Accuracy"
        ),
        speed=report("results/plots/speed.png", caption="../workflow/report/speed_plot.rst", category="Speed"),
        zeroshot=report(
            "results/plots/zeroshot_scib.png", caption="../workflow/report/zeroshot_plot.rst", category="Zero-shot"
        ),
        context_curve=report(
            "results/plots/context/curve.png", caption="../workflow/report/context_curve_plot.rst",
            category="Tissue context"
        ),
        context_stability=report(
            "results/plots/context/stability.png", caption="../workflow/report/context_stability_plot.rst",
            category="Tissue context"
        ),
        context_cost=report(
            "results/plots/context/cost.png", caption="../workflow/report/context_cost.rst", category="Tissue context"
        ),
    log:
        "logs/report/plots.log",
    params:
        code=code_hash("workflow/scripts/report/plots.py"),
    localrule: True
    conda:
        "../workflow/envs/report.yaml"
    script:
        "../workflow/scripts/report/plots.py"


rule confusion_plot:
    input:
        confusion_inputs,
    output:
        report(
            "results/plots/confusion/{dataset}__{split}.png",
            caption="../workflow/report/confusion.rst",
            category="Confusion matrices",
            labels={"dataset": "{dataset}", "split": "{split}"},
        ),
    log:
        "logs/report/confusion/{dataset}__{split}.log",
    params:
        methods=METHODS,
        seed=confusion_seed(),
        code=code_hash("workflow/scripts/report/confusion.py"),
    localrule: True
    conda:
        "../workflow/envs/report.yaml"
    script:
        "../workflow/scripts/report/confusion.py"
