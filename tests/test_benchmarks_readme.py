"""The measured tables of README.md and docs/ are what benchmarks/readme_tables.py makes of the committed result
files, and a tiny run of each benchmark writes a well-formed result file that renders (benchmarks/scale.py:
tests/test_scale.py)."""

import json
import subprocess
import sys

import pytest

from benchmarks import readme_tables
from conftest import ROOT

UPSTREAM_PY = ROOT / ".venv-upstream" / "bin" / "python"
PROVENANCE = ("date", "machine", "versions", "git_commit", "command", "options")


def well_formed(path, benchmark):
    result = json.loads(path.read_text())
    assert result["benchmark"] == benchmark
    prov = result["provenance"]
    for key in PROVENANCE:
        assert prov[key], key
    assert {"cpu", "cores", "ram_gib", "gpu", "os"} <= set(prov["machine"])
    assert prov["versions"]["python"] and prov["versions"]["torch"]
    assert result["rows"]
    assert not list(path.parent.glob(".*partial*"))  # atomic write: no temporary left beside it
    text = readme_tables.RENDERERS[benchmark](result)  # the table renderer accepts it
    assert text.startswith("|")
    return result


def marked_texts():
    """{file: text} of every markdown file readme_tables processes by default (README.md, docs/)."""
    files = readme_tables.marked_files()
    assert files, "no markdown file holds benchmark markers"
    return {path: path.read_text() for path in files}


def test_readme_tables_equal_the_committed_result_files():
    texts = marked_texts()
    blocks = {rel for text in texts.values() for rel, _ in readme_tables.MARKER.findall(text)}
    committed = [
        "speed_cpu.json",
        "scale.json",
        "finetune_accuracy.json",
        "finetune_trajectory.json",
        "demo_first_run.json",
    ]
    for name in committed:
        rel = f"benchmarks/results/{name}"
        assert rel in blocks, f"neither README.md nor docs/ has a table for {rel}"
        assert (ROOT / rel).exists(), f"{rel} is not committed"
    for gpu in ("speed_cuda.json", "embedding_speed_cuda.json"):
        assert f"benchmarks/results/{gpu}" in blocks
    for path, text in texts.items():
        assert readme_tables.regenerate(text) == text, (
            f"{path.relative_to(ROOT)}'s tables differ: run .venv/bin/python benchmarks/readme_tables.py"
        )
    assert readme_tables.main(["--check"]) == 0


def test_marked_files_are_readme_and_docs_with_markers(tmp_path):
    marker = "<!-- benchmarks/results/speed_cuda.json: start -->\nx\n<!-- benchmarks/results/speed_cuda.json: end -->\n"
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "README.md").write_text("# r\n" + marker)
    (tmp_path / "docs" / "b.md").write_text(marker)
    (tmp_path / "docs" / "sub" / "a.md").write_text(marker)
    (tmp_path / "docs" / "plain.md").write_text("no tables here\n")
    assert readme_tables.marked_files(tmp_path) == [
        tmp_path / "README.md",
        tmp_path / "docs" / "b.md",
        tmp_path / "docs" / "sub" / "a.md",
    ]


def test_check_fails_on_a_hand_edited_figure(tmp_path, capsys):
    holder = next(
        path for path, text in marked_texts().items() if "<!-- benchmarks/results/speed_cpu.json: start -->" in text
    )
    text = holder.read_text()
    start = text.index("<!-- benchmarks/results/speed_cpu.json: start -->")
    row = text.index("| zero-shot embedding", start)
    cell = text.index("| ", row + 2)  # upstream's cells/s
    edited = text[:cell] + "| 9" + text[cell + 2 :]
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text(text)
    bad.write_text(edited)
    assert readme_tables.main(["--check", "--files", str(good), str(bad)]) == 1
    assert bad.read_text() == edited  # --check changes nothing
    err = capsys.readouterr().err
    assert str(bad) in err and str(good) not in err  # the stale file is named, the current one is not
    assert readme_tables.main(["--files", str(good), str(bad)]) == 0  # rewrites the stale one
    assert bad.read_text() == text
    assert readme_tables.main(["--check", "--files", str(good), str(bad)]) == 0


def test_a_file_without_markers_is_an_error(tmp_path, capsys):
    plain = tmp_path / "plain.md"
    plain.write_text("no tables\n")
    assert readme_tables.main(["--check", "--files", str(plain)]) == 1
    assert f"{plain}: no benchmark markers" in capsys.readouterr().err


def test_missing_result_file_says_not_measured_and_how(tmp_path):
    text = (
        "x\n<!-- benchmarks/results/speed_cuda.json: start -->\nold\n<!-- benchmarks/results/speed_cuda.json: end -->\n"
    )
    out = readme_tables.regenerate(text, root=tmp_path)
    assert "Not measured yet" in out and "bash benchmarks/gpu.sh" in out and "old" not in out


def run(cmd, python=sys.executable, timeout=240):
    proc = subprocess.run(
        [str(python), *map(str, cmd)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def upstream():
    if not UPSTREAM_PY.exists():
        pytest.fail("the upstream environment is missing: run `bash tools/upstream_env.sh` (make test does)")
    return UPSTREAM_PY


def test_speed_tiny_run_writes_a_result_file(tmp_path):
    out = tmp_path / "speed_cpu.json"
    run(
        [
            "benchmarks/speed.py",
            "--cells",
            "64",
            "--genes",
            "300",
            "--repeats",
            "1",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--finetune-data",
            "synthetic",
            "--finetune-cells",
            "80",
            "--finetune-genes",
            "100",
            "--out",
            out,
        ],
        python=upstream(),
    )
    result = well_formed(out, "speed")
    impls = {(r["section"], r["implementation"]) for r in result["rows"]}
    assert {("embed", "upstream"), ("embed", "ours"), ("finetune", "upstream"), ("finetune", "ours")} <= impls
    assert result["provenance"]["versions"]["upstream_cellplm"] and len(result["verdicts"]) == 4


def test_finetune_accuracy_tiny_run_writes_a_result_file(tmp_path):
    out = tmp_path / "finetune_accuracy.json"
    run(
        [
            "benchmarks/finetune_accuracy.py",
            "seeds",
            "--shape",
            "tiny",
            "--epochs",
            "2",
            "--seeds",
            "0-1",
            "--cells",
            "120",
            "--genes",
            "100",
            "--out",
            out,
        ],
        python=upstream(),
    )
    result = well_formed(out, "finetune_accuracy")
    assert result["complete"] and {(r["seed"], r["variant"]) for r in result["rows"]} == {
        (s, v) for s in (0, 1) for v in ("upstream", "ours_fp32", "ours_bf16")
    }


def test_workflow_speed_copies_the_speed_rows(tmp_path):
    table = tmp_path / "speed.tsv"
    table.write_text(
        "measure\tmethod\tn_cells\tn_genes\tvalue\tunit\tspeedup_vs_scgpt\tstatus\treason\tdevice\tprecision\tweights\n"
        "embedding_throughput\tcellplm\t100\t300\t5000\tcells/s\t250\tok\t\tNVIDIA H200\tbf16\trandom weights, 85M "
        "shape\n"
        "embedding_throughput\tscgpt\t100\t300\t20\tcells/s\t1\tok\t\tNVIDIA H200\tfp16 autocast\trandom weights\n"
        "fit_wall\tscgpt\t100\t\t3\ts\t1\tok\t\t\t\t\n"
    )
    out = tmp_path / "embedding_speed_cuda.json"
    proc = run(["benchmarks/workflow_speed.py", table, "--out", out])
    result = well_formed(out, "embedding_speed")
    assert [r["method"] for r in result["rows"]] == ["cellplm", "scgpt"]
    assert "250.0x" in proc.stdout and "MET" in result["verdicts"][0]


def test_timed_writes_its_result_without_the_project_env(tmp_path):
    """timed.py times the environment builds (`timed.py envs -- make venv ...`) with the system's python, before
    any venv exists: its result file is written by the standard library alone (no numpy, h5py or torch import)."""
    code = (
        "import sys; from benchmarks import common; "
        f"common.write_result({str(tmp_path / 'r.json')!r}, 'timed', {{'date': 'd'}}, [{{'wall_s': 1.0}}]); "
        "loaded = [m for m in ('numpy', 'h5py', 'torch', 'anndata') if m in sys.modules]; "
        "sys.exit(f'imported {loaded}' if loaded else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == [{"wall_s": 1.0}]
