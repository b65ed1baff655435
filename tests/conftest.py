import sys
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYMBOLS = ["CD3E", "CD4", "CD8A", "MS4A1", "CD14", "LYZ", "NKG7", "GNLY", "PPBP", "FCGR3A", "IL7R", "CCR7"]


def forbidden_imports(package: Path, forbidden, selects=lambda rel: True) -> list[str]:
    """``file:line name`` for every import of a module in ``forbidden`` (dotted names; their submodules count too) by
    a module of ``package`` (a package folder) that ``selects`` (its path relative to the folder) accepts.

    Read statically, as the workflow's code hash reads imports (:func:`cellplm.bench.codehash.imported_names`):
    absolute and relative imports, anywhere in a module (lazy imports inside functions too), ``from a import b``
    as ``a`` and ``a.b``. One entry per import statement.
    """
    from cellplm.bench.codehash import imported_names, module_name

    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if not selects(rel):
            continue
        lines = set()
        for line, name in imported_names(path, module_name(package.parent, path)):
            if line not in lines and any(name == f or name.startswith(f + ".") for f in forbidden):
                lines.add(line)
                found.append(f"{rel}:{line} {name}")
    return found


def make_counts_adata(n_cells=60, n_types=3, seed=0, genes=SYMBOLS, batches=2) -> ad.AnnData:
    """A small count matrix with cell types that differ in expression."""
    rng = np.random.default_rng(seed)
    types = np.array([f"type{i % n_types}" for i in range(n_cells)])
    rates = rng.gamma(1.0, 2.0, size=(n_types, len(genes)))
    X = rng.poisson(rates[[int(t[-1]) for t in types]] * 3).astype(np.float32)
    obs = pd.DataFrame(
        {"cell_type": types, "batch": [f"b{i % batches}" for i in range(n_cells)]},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    return ad.AnnData(sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=list(genes)))


def write_split_files(adata, folder) -> dict:
    """train/test/solution h5ad files of ``adata`` under the published protocol (80/10/10), as the workflow writes
    them."""
    from cellplm.bench.io import write_h5ad
    from cellplm.bench.data.split import SplitSpec, make_split

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in make_split(adata, SplitSpec("published"), {"train": 0.8, "valid": 0.1, "test": 0.1}).items():
        paths[name] = folder / f"{name}.h5ad"
        write_h5ad(part, paths[name])
    return paths


def released_shaped_state() -> dict:
    """A state dict of the released 85M architecture (every name and shape of the key table) at almost no size:
    zero tensors expanded from one element, which torch.save stores as that one element."""
    import torch

    from cellplm.bench.checkpoints import released_architecture

    return {k: torch.zeros(()).expand(shape) for k, shape in released_architecture().items()}


@pytest.fixture
def counts_adata():
    return make_counts_adata()


@pytest.fixture
def write(tmp_path):
    def _write(adata, name="input.h5ad"):
        path = tmp_path / name
        adata.write_h5ad(path)
        return path

    return _write


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised CellPLM of the 'tiny' shape over the released vocabulary, saved as a checkpoint."""
    import torch

    from cellplm.model import CellPLM, config_for_shape, save_checkpoint

    torch.manual_seed(0)
    prefix = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(CellPLM(config_for_shape("tiny")), prefix)
    return prefix


@pytest.fixture
def small_disk(tmp_path):
    """``.path``: a folder on its own tmpfs of 1 MiB (needs root); ``.resize(bytes)`` gives it more room."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    opts = ["-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)]
    if subprocess.run(["mount", *opts], capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")

    def resize(size: int):
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)

    yield SimpleNamespace(path=mount, resize=resize)
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def read_only():
    """``read_only(folder)`` makes an existing folder read-only (a read-only bind mount; needs root)."""
    import subprocess

    mounted = []

    def make(folder):
        out = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True)
        if out.returncode != 0:
            pytest.skip("a read-only bind mount needs root (CAP_SYS_ADMIN)")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def workflow_config(*overlays: str) -> dict:
    """config/config.yaml with ``overlays`` (config files) merged in, completed as rules/common.smk completes it
    (the method and embedding registries, the schema's defaults and the zero-shot rows)."""
    import yaml

    from cellplm.bench.config import deep_update
    from cellplm.bench.workflow import complete_config

    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    for overlay in overlays:
        cfg = deep_update(cfg, yaml.safe_load((ROOT / overlay).read_text()))
    return complete_config(cfg, ROOT)
