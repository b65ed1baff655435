"""The benchmark library's layers: the workflow's glue (what the Snakefile and the workflow scripts import) sits on
top of the libraries, never below them, and the annotation methods and the embedding methods share code only
through modules below both (cellplm/bench/models/, normalise.py, embedding_results.py), never through each other.
Read statically, as test_model_imports.py reads the model package's imports (lazy imports count)."""

from __future__ import annotations

from pathlib import Path

from conftest import ROOT, forbidden_imports

# What the Snakefile needs on top of the libraries, and the wrapper of the workflow scripts.
GLUE = ("cellplm.bench.workflow", "cellplm.bench.checkpoint_plan", "cellplm.bench.codehash", "cellplm.bench.job")
GLUE_FILES = {Path("bench", *name.split(".")[2:]).with_suffix(".py") for name in GLUE}


def glue_imports(package: Path) -> list[str]:
    """Imports of the glue by a module of ``package`` (the cellplm folder) other than the glue itself."""
    return forbidden_imports(package, GLUE, selects=lambda rel: rel not in GLUE_FILES)


def crossing_imports(package: Path) -> list[str]:
    """Imports of cellplm.bench.embeddings by a module of cellplm/bench/methods/, and the reverse."""
    return [found for kind, other in (("methods", "embeddings"), ("embeddings", "methods"))
            for found in forbidden_imports(package, (f"cellplm.bench.{other}",),
                                           selects=lambda rel, kind=kind: rel.parts[:2] == ("bench", kind))]


def test_no_library_module_imports_the_workflow_glue():
    found = glue_imports(ROOT / "cellplm")
    assert not [f for f in found if f.startswith(("bench/data/", "bench/report/"))], found
    assert found == []


def test_methods_and_embeddings_do_not_import_each_other():
    assert crossing_imports(ROOT / "cellplm") == []


def test_the_static_checks_see_every_kind_of_import(tmp_path):
    bench = tmp_path / "cellplm" / "bench"
    for folder in ("data", "report", "methods/knn", "embeddings/pca"):
        (bench / folder).mkdir(parents=True)
    (bench / "workflow.py").write_text("from .config import dataset_splits\n")  # the glue may import the libraries
    (bench / "data" / "sources.py").write_text("from ..workflow import package_file\n")
    (bench / "data" / "split.py").write_text("def f():\n    from cellplm.bench.job import job\n")
    (bench / "report" / "landing.py").write_text("from .. import workflow\nfrom ..config import dataset_splits\n")
    (bench / "report" / "plots.py").write_text("import cellplm.bench.codehash\n")
    (bench / "methods" / "zeroshot.py").write_text("from ..embeddings.results import read_embedding\n")
    (bench / "methods" / "knn" / "method.py").write_text("from ... import embeddings\nfrom ...normalise import x\n")
    (bench / "embeddings" / "pca" / "embedder.py").write_text("def f():\n    from ...methods.normalise import x\n")
    (bench / "embeddings" / "base.py").write_text("from ..embedding_results import EMBEDDING_KEY\n")
    assert glue_imports(tmp_path / "cellplm") == [
        "bench/data/sources.py:1 cellplm.bench.workflow", "bench/data/split.py:2 cellplm.bench.job",
        "bench/report/landing.py:1 cellplm.bench.workflow", "bench/report/plots.py:1 cellplm.bench.codehash"]
    assert crossing_imports(tmp_path / "cellplm") == [
        "bench/methods/knn/method.py:1 cellplm.bench.embeddings",
        "bench/methods/zeroshot.py:1 cellplm.bench.embeddings.results",
        "bench/embeddings/pca/embedder.py:2 cellplm.bench.methods.normalise"]
