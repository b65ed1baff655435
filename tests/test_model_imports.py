"""One-way architecture: the CellPLM package never reaches the benchmark (cellplm.bench), nor scanpy, matplotlib
or celltypist, to embed or fine-tune; the benchmark may import the model, never the reverse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, forbidden_imports

FORBIDDEN = ("cellplm.bench", "scanpy", "matplotlib", "celltypist")

# Run in a fresh interpreter: import every model module, then embed and fine-tune (defaults) a tiny model on tiny
# data through the Python API and the command line, and list the forbidden modules that got imported.
SCRIPT = r"""
import sys, tempfile
from pathlib import Path

import cellplm, cellplm.model, cellplm.embed, cellplm.finetune, cellplm.pretrain, cellplm.cli, cellplm.data
import cellplm.genes, cellplm.errors, cellplm.io, cellplm.runtime, cellplm.hvg, cellplm.metrics, cellplm.memory
import cellplm.checksum
import cellplm.pretrain.options, cellplm.pretrain.loop, cellplm.pretrain.cli, cellplm.model.checkpoint

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from cellplm.embed import embed
from cellplm.finetune import CellTypeAnnotator
from cellplm.genes import gencode_id_to_symbol
from cellplm.model import CellPLM, config_for_shape, save_checkpoint

torch.manual_seed(0)
rng = np.random.default_rng(0)
vocab = config_for_shape("tiny").gene_list
to_symbol = gencode_id_to_symbol()
genes = [g for g in vocab[:400] if g in to_symbol][:200]
n = 90
types = rng.integers(0, 3, size=n)
programs = rng.gamma(0.5, 2.0, size=(3, len(genes)))
X = sp.csr_matrix(rng.poisson(programs[types] * 3 + 0.1).astype(np.float32))
obs = pd.DataFrame({"batch": np.repeat(["a", "b", "c"], n // 3), "cell_type": [f"t{t}" for t in types]},
                   index=[f"c{i}" for i in range(n)])
# half the genes as symbols (mapped with the shipped GENCODE table), half as Ensembl ids
names = [to_symbol[g] if k % 2 else g for k, g in enumerate(genes)]
adata = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=names))

model = CellPLM(config_for_shape("tiny"))
embed(adata, model, progress=False, device="cpu")
assert adata.obsm["X_cellplm"].shape == (n, 32)
train, test = adata[:60].copy(), adata[60:].copy()
clf = CellTypeAnnotator(None, shape="tiny", max_epochs=2, device="cpu", progress=False).fit(train, unlabelled=test)
assert len(clf.predict(test)) == test.n_obs

with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    save_checkpoint(model, tmp / "tiny")
    adata.write_h5ad(tmp / "data.h5ad")
    train.write_h5ad(tmp / "train.h5ad")
    test.write_h5ad(tmp / "test.h5ad")
    assert cellplm.cli.main(["embed", str(tmp / "data.h5ad"), "--checkpoint", str(tmp / "tiny"),
                             "--out", str(tmp / "emb.h5ad"), "--device", "cpu", "--no-progress"]) == 0
    assert cellplm.cli.main(["finetune", str(tmp / "train.h5ad"), "--test", str(tmp / "test.h5ad"), "--shape", "tiny",
                             "--max-epochs", "2", "--out", str(tmp / "pred.h5ad"), "--history", str(tmp / "h.json"),
                             "--device", "cpu", "--no-progress"]) == 0

loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("scanpy", "matplotlib", "celltypist")
                or m == "cellplm.bench" or m.startswith("cellplm.bench."))
print("FORBIDDEN:" + ",".join(loaded))
"""


def forbidden_after_embed_and_finetune(root: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("FORBIDDEN:")][-1]
    return [m for m in line.removeprefix("FORBIDDEN:").split(",") if m]


def test_embed_and_finetune_never_import_the_benchmark_or_its_dependencies():
    assert forbidden_after_embed_and_finetune(ROOT) == []


def bench_imports(package: Path) -> list[str]:
    """``file:line module`` for every import of cellplm.bench (absolute or relative, anywhere in the module) by a
    module of ``package`` (the cellplm folder) outside ``package/bench``."""
    return forbidden_imports(package, ("cellplm.bench",), selects=lambda rel: rel.parts[0] != "bench")


def test_no_model_module_imports_the_benchmark():
    assert bench_imports(ROOT / "cellplm") == []


def test_the_static_check_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "cellplm"
    (pkg / "model").mkdir(parents=True)
    (pkg / "bench").mkdir()
    (pkg / "bench" / "x.py").write_text("from ..model import y\n")  # the benchmark may import the model
    (pkg / "a.py").write_text("import cellplm.bench.io\n")
    (pkg / "b.py").write_text("def f():\n    from .bench.errors import InputError\n")
    (pkg / "c.py").write_text("from . import bench\n")
    (pkg / "model" / "d.py").write_text("from ..bench import genes\n")
    (pkg / "model" / "e.py").write_text("from .. import errors\nfrom ...elsewhere import bench\n")
    (pkg / "f.py").write_text("from cellplm import bench\n")
    assert [f.split()[0] for f in bench_imports(pkg)] == ["a.py:1", "b.py:2", "c.py:1", "f.py:1", "model/d.py:1"]
