"""Faults below the workflow: full disk, read-only folder, files left by killed writers, the pre-run check.

The full-disk and read-only cases use a real tmpfs and a read-only bind mount (root only; skipped otherwise).
The workflow-level fault runs (killed jobs, full disk mid-run) are in tests/test_workflow.py.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cellplm.bench.errors import ConfigError, OutputError
from cellplm.bench.io import write_h5ad, write_json
from cellplm.bench.workflow import check_output_space
from conftest import ROOT, make_counts_adata

# A workflow script as snakemake runs it: job() around a write of 3.2 MB of incompressible values.
SCRIPT = textwrap.dedent("""
    import sys, types
    import anndata as ad, numpy as np
    from cellplm.bench.io import write_h5ad
    from cellplm.bench.job import job
    snakemake = types.SimpleNamespace(log=[sys.argv[2]])
    with job(snakemake):
        x = np.random.default_rng(0).random((2000, 400), dtype="float32")  # incompressible
        write_h5ad(ad.AnnData(x), sys.argv[1])
""")


def test_full_disk_ends_the_job_with_one_line_and_leaves_nothing(small_disk, tmp_path):
    dest, log = small_disk.path / "out" / "big.h5ad", tmp_path / "job.log"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(dest), str(log)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    # exit code 1, not a SIGSEGV from HDF5 flushing the file it could not write at interpreter exit
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip() == f"ERROR: {dest}: no space left on device while writing (nothing was written)"
    assert list(dest.parent.iterdir()) == []
    assert "Exception ignored" not in log.read_text()  # h5py's close errors for the failed file are held back
    small_disk.resize(16 << 20)  # space freed: the same job now succeeds
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(dest), str(log)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode == 0 and [p.name for p in dest.parent.iterdir()] == ["big.h5ad"]


def test_read_only_folder_is_one_line_error(read_only, tmp_path):
    folder = read_only(tmp_path)
    with pytest.raises(OutputError, match=r"out.json: output folder is not writable \(Read-only file system\)$"):
        write_json({"a": 1}, folder / "out.json")
    with pytest.raises(OutputError, match=r"sub: cannot create output folder \(Read-only file system\)$"):
        write_json({"a": 1}, folder / "sub" / "out.json")


def test_files_left_by_a_killed_writer_are_removed(tmp_path):
    (tmp_path / ".x.partial-12345.h5ad").write_bytes(b"half")  # a writer SIGKILLed mid-write
    (tmp_path / ".y.partial-12345.h5ad").write_bytes(b"other output: kept")
    write_h5ad(make_counts_adata(), tmp_path / "x.h5ad")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".y.partial-12345.h5ad", "x.h5ad"]


def test_pre_run_check_names_the_folder(read_only, tmp_path):
    check_output_space(tmp_path, min_free_gb=0)
    assert {p.name for p in tmp_path.iterdir()} == {"results", "logs", "resources"}
    assert not any((tmp_path / "results").iterdir())  # the probe file is gone
    with pytest.raises(ConfigError, match=r"only [0-9.]+ GB free on its filesystem, below run.min_free_gb \(1e\+09\)"):
        check_output_space(tmp_path, min_free_gb=1e9)
    read_only(tmp_path / "logs")
    with pytest.raises(ConfigError, match=r"logs/: not writable \(Read-only file system\); run from a writable"):
        check_output_space(tmp_path, min_free_gb=0)


def test_json_write_of_numpy_values_unchanged(tmp_path):
    """The atomic writer still writes what it always did (guard for the error handling around it)."""
    write_json({"a": np.float32(0.5), "b": np.arange(3)}, tmp_path / "v.json")
    assert json.loads((tmp_path / "v.json").read_text()) == {"a": 0.5, "b": [0, 1, 2]}
