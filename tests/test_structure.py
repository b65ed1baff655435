"""The benchmark library's layers: the workflow's glue (what the Snakefile and the workflow scripts import) sits on
top of the libraries, never below them, and the annotation methods and the embedding methods share code only
through modules below both (cellplm/bench/models/, normalise.py, embedding_results.py), never through each other.
Read statically, as test_model_imports.py reads the model package's imports (lazy imports count)."""

from __future__ import annotations

import ast
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
    return [
        found
        for kind, other in (("methods", "embeddings"), ("embeddings", "methods"))
        for found in forbidden_imports(
            package, (f"cellplm.bench.{other}",), selects=lambda rel, kind=kind: rel.parts[:2] == ("bench", kind)
        )
    ]


def params_read_around_param(folder: Path) -> list[str]:
    """``file:line`` of every read of a component's ``params`` that bypasses :meth:`Parameterised.param` (whose
    defaults are the component's metadata file, the one place for them): ``self.params.get(...)``,
    ``self.params[...]`` or an alias ``p = self.params``. ``key in self.params`` (was it given?) is allowed."""

    def is_params(node) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "params" and getattr(node.value, "id", "") == "self"

    found = []
    for path in sorted(folder.rglob("*.py")):
        lines = sorted(
            node.lineno
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and is_params(node.func.value)
            )
            or (isinstance(node, ast.Subscript) and is_params(node.value))
            or (isinstance(node, ast.Assign) and is_params(node.value))
        )
        found += [f"{path.relative_to(folder)}:{line}" for line in lines]
    return found


def test_no_library_module_imports_the_workflow_glue():
    found = glue_imports(ROOT / "cellplm")
    assert not [f for f in found if f.startswith(("bench/data/", "bench/report/"))], found
    assert found == []


def test_methods_and_embeddings_do_not_import_each_other():
    assert crossing_imports(ROOT / "cellplm") == []


def test_methods_and_embeddings_read_their_params_with_param():
    """Every default of a method or embedding method is in its method.yaml / embedding.yaml, none in its code."""
    for kind in ("methods", "embeddings"):
        assert params_read_around_param(ROOT / "cellplm" / "bench" / kind) == [], kind


def test_the_params_check_sees_every_bypass(tmp_path):
    (tmp_path / "m.py").write_text(
        "class M:\n"
        "    def fit(self):\n"
        "        a = self.params.get('k', 15)\n"
        "        b = self.params['n']\n"
        "        p = self.params\n"
        "        c = self.param('k') if 'k' in self.params else None\n"
    )
    assert params_read_around_param(tmp_path) == ["m.py:3", "m.py:4", "m.py:5"]


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
    (bench / "embeddings" / "base.py").write_text("from ..embedding_results import read_embedding\n")
    assert glue_imports(tmp_path / "cellplm") == [
        "bench/data/sources.py:1 cellplm.bench.workflow",
        "bench/data/split.py:2 cellplm.bench.job",
        "bench/report/landing.py:1 cellplm.bench.workflow",
        "bench/report/plots.py:1 cellplm.bench.codehash",
    ]
    assert crossing_imports(tmp_path / "cellplm") == [
        "bench/methods/knn/method.py:1 cellplm.bench.embeddings",
        "bench/methods/zeroshot.py:1 cellplm.bench.embeddings.results",
        "bench/embeddings/pca/embedder.py:2 cellplm.bench.methods.normalise",
    ]


def test_python_is_ruff_clean():
    """`make lint`'s Python half: ruff check and ruff format --check (pyproject.toml's [tool.ruff]) pass."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed (requirements/lock.txt)"
    for args in (["check", "."], ["format", "--check", "."]):
        out = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
