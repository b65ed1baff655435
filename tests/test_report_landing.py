"""The HTML report's landing page: generated from the config (every method and zero-shot row of the run), with the
same wording about the published table's readings as benchmark.md, valid once Snakemake renders it (Jinja, then
reStructuredText), and written by the workflow's landing_page rule where the Snakefile's report: directive looks."""

import jinja2
from docutils.core import publish_parts

from cellplm.bench.report.landing import landing_rst
from cellplm.bench.report.readings import readings_text, rst
from conftest import workflow_config
from test_workflow import copy_workflow, snakemake


def zeroshot_rows(cfg: dict) -> list[str]:
    """The run's zero-shot rows, as rules/common.smk lists them (ZEROSHOT_METHODS)."""
    return [m for m, spec in cfg["methods"].items() if spec.get("zeroshot_of") in cfg["run"]["embeddings"]]


def rendered(text: str) -> str:
    """The page as Snakemake's report renders it: Jinja (with its settings), then reStructuredText to HTML."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return publish_parts(
        env.from_string(text).render(snakemake=None),
        writer_name="html",
        settings_overrides={"report_level": 2, "halt_level": 2},
    )["html_body"]


def test_landing_page_lists_the_configs_methods_and_zero_shot_rows():
    cfg = workflow_config("config/demo.yaml")
    text = landing_rst(cfg, zeroshot_rows(cfg))
    for method in cfg["run"]["methods"]:
        assert f"- {cfg['methods'][method]['label']} (``{method}``" in text
    assert "- CellPLM (zero-shot embedding + kNN) (``cellplm_zeroshot``)" in text
    assert "- Random embedding (control) (zero-shot embedding + kNN) (``random_embedding_zeroshot``)" in text
    assert f"The {len(zeroshot_rows(cfg))} zero-shot rows:" in text
    assert "- scVI (zero-shot embedding + kNN) (``scvi_zeroshot``)" in text
    assert "- CellPLM (fine-tuned) (``cellplm_finetune``, published as CellPLM)" in text
    assert (
        "``pbmc68k`` (beside the published PBMC12K column), splits ``published`` (random); ``synthetic`` (no "
        "published column), splits ``published`` (random), ``batch_holdout`` (batch_holdout)."
    ) in text
    assert "seeds 0, 1 and the ``test`` parameter set" in text
    # the readings: benchmark.md's wording, not the old claim that the published "accuracy" is balanced accuracy
    assert rst(readings_text("config/published_scores.tsv")) in text
    assert "balanced accuracy" not in text.lower()
    html = rendered(text)
    assert "CellPLM cell-type annotation benchmark</h1>" in html and "<!-- Written by the workflow" in html
    assert "cellplm_zeroshot</tt>" in html or "cellplm_zeroshot</span>" in html  # a literal (docutils versions differ)
    assert "<em>reading uncertain</em>" in html and "{%" not in html and "``" not in html


def test_an_embeddings_note_goes_on_its_zero_shot_row():
    """The demo's one note (embeddings.scgpt.note: an untrained network's embedding) is its zero-shot row's, and the
    landing page says it beside that row; the full config, with the released model, has none."""
    cfg = workflow_config("config/demo.yaml")
    notes = {m: spec["note"] for m, spec in cfg["methods"].items() if spec.get("note")}
    assert list(notes) == ["scgpt_zeroshot"] and notes["scgpt_zeroshot"].startswith("cannot learn by design: ")
    assert cfg["embeddings"]["scgpt"]["note"] == notes["scgpt_zeroshot"]
    text = landing_rst(cfg, zeroshot_rows(cfg))
    assert f"- scGPT (zero-shot embedding + kNN) (``scgpt_zeroshot``) — {notes['scgpt_zeroshot']}" in text
    assert "- scGPT (fine-tuned) (``scgpt``, published as scGPT)\n" in text  # the method itself learns: no note
    assert not any(spec.get("note") for spec in workflow_config()["methods"].values())


def test_landing_page_without_zero_shot_track_and_with_braces_in_a_label():
    cfg = workflow_config("config/demo.yaml")
    cfg["run"]["embeddings"] = []
    cfg["methods"]["knn_pca"]["label"] = "kNN {{ on PCA }}"
    text = landing_rst(cfg, zeroshot_rows(cfg))
    assert "No zero-shot rows in this run" in text and "_zeroshot" not in text
    assert "kNN {{ on PCA }}" in rendered(text)  # the raw block: Jinja leaves a label alone


def test_full_configs_landing_page_names_the_published_counterparts():
    cfg = workflow_config()
    text = landing_rst(cfg, zeroshot_rows(cfg))
    assert "``pbmc12k`` (beside the published PBMC12K column), splits ``published`` (random);" in text
    assert "- scGPT (fine-tuned) (``scgpt``, published as scGPT)" in text
    assert "seeds 0, 1, 2 and the ``default`` parameter set" in text
    assert "- Geneformer (zero-shot embedding + kNN) (``geneformer_zeroshot``)" in text


def test_the_workflow_writes_the_page_the_report_directive_reads(tmp_path):
    workdir = copy_workflow(tmp_path)
    out = snakemake(
        workdir, "results/report/workflow.rst", "--cores", "1", "--configfile", "config/demo.yaml", timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    page = (workdir / "results/report/workflow.rst").read_text()
    cfg = workflow_config("config/demo.yaml")
    assert page == landing_rst(cfg, zeroshot_rows(cfg))
    assert 'report: os.path.join(os.getcwd(), "results/report/workflow.rst")' in (workdir / "Snakefile").read_text()
