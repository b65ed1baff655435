"""The landing page of the HTML report (``snakemake --report``), written from the config by the ``landing_page`` rule.

Generated rather than templated: the methods it lists are the run's (every method of the config's run and every
zero-shot row of its embeddings), and its text about the published "accuracy" is :func:`.readings.readings_text`,
the same wording as benchmark.md, which a Jinja template (it sees only ``snakemake.config``) could not share.
Standard library only: the Snakefile calls it at start-up.
"""

from __future__ import annotations

from ..config import dataset_splits
from .readings import readings_text, rst

TITLE = "CellPLM cell-type annotation benchmark"


def _method_line(method: str, spec: dict) -> str:
    published = f", published as {spec['published_as']}" if spec.get("published_as") else ""
    note = f" — {spec['note']}" if spec.get("note") else ""
    return f"- {spec['label']} (``{method}``{published}){note}"


def landing_rst(config: dict, zeroshot: list[str]) -> str:
    """The landing page in reStructuredText, for a config as the workflow holds it (the method registry, with the
    entries of the zero-shot rows ``zeroshot`` of the run: rules/common.smk's ZEROSHOT_METHODS). Snakemake renders
    the page with Jinja before reStructuredText, so the body is a raw block: a label with braces stays text."""
    run = config["run"]
    methods = run["methods"]
    datasets = "; ".join(
        f"``{d}``"
        + (
            f" (beside the published {config['datasets'][d]['published_as']} column)"
            if config["datasets"][d].get("published_as")
            else " (no published column)"
        )
        + ", splits "
        + ", ".join(f"``{s}`` ({config['splits'][s]['strategy']})" for s in dataset_splits(config, d))
        for d in run["datasets"]
    )
    lines = [
        ".. Written by the workflow's landing_page rule from the config (cellplm/bench/report/landing.py).",
        "",
        "{% raw %}",
        TITLE,
        "=" * len(TITLE),
        "",
        f"Datasets: {datasets}. Each split is a set of train / test / solution files (OpenProblems contract); a"
        " split of strategy ``random`` follows the published protocol, any other does not.",
        "",
        f"Every method is fitted on the train cells and predicts the unlabelled test cells, with seeds"
        f" {', '.join(map(str, run['seeds']))} and the ``{run['param_set']}`` parameter set. Control methods bound"
        f" each metric. The {len(methods)} annotation methods of this run:",
        "",
        *(_method_line(m, config["methods"][m]) for m in methods),
        "",
    ]
    if zeroshot:
        lines += [
            f"The {len(zeroshot)} zero-shot rows: a kNN on the train cells' embedding of each model of the"
            " zero-shot track, which embeds all cells without labels (but for the controls, which bound each score:"
            " the jittered cell types are the labels themselves):",
            "",
            *(_method_line(m, config["methods"][m]) for m in zeroshot),
            "",
        ]
    else:
        lines += ["No zero-shot rows in this run (``run.embeddings`` is empty, or ``zeroshot.knn`` is off).", ""]
    lines += [
        f"Published values are copied from ``{config['published']}`` with their source and are never computed here."
        f" {rst(readings_text(config['published']))}",
        "{% endraw %}",
    ]
    return "\n".join(lines) + "\n"
