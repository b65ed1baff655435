"""The cellplm-bench command line: help texts and a synthetic -> preprocess -> split round trip."""

import pytest

from cellplm.bench.cli import main
from cellplm.bench.io import read_h5ad


@pytest.mark.parametrize("command", [[], ["download"], ["preprocess"], ["split"], ["synthetic"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main(command + ["--help"])
    assert e.value.code == 0 and "usage: cellplm-bench" in capsys.readouterr().out


def test_round_trip(tmp_path, capsys):
    assert main(["synthetic", str(tmp_path / "s.h5ad"), "--n-cells", "300", "--n-genes", "200", "--seed", "1"]) == 0
    assert main(["preprocess", str(tmp_path / "s.h5ad"), str(tmp_path / "c.h5ad"), "--batch-key", "batch"]) == 0
    assert main(["split", str(tmp_path / "c.h5ad"), str(tmp_path / "split"), "--fractions", "0.9", "0", "0.1"]) == 0
    assert read_h5ad(tmp_path / "split" / "test.h5ad").n_obs == 30
    assert main(["preprocess", str(tmp_path / "missing.h5ad"), str(tmp_path / "x.h5ad")]) == 1
    assert capsys.readouterr().err.strip().endswith("missing.h5ad: file does not exist")
    assert not (tmp_path / "x.h5ad").exists()
