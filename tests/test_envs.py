"""The conda env files (the `--use-conda` half of the user's command) pin what the tests run.

Every pinned package of every ``workflow/envs/*.yaml`` must have the same major.minor as the lock the tests install
(``requirements/lock.txt``; an env file may name another lock in its header, ``lock: requirements/scgpt.txt``), or
carry a ``lock-exception:`` comment that says why it differs. conda-forge names are mapped to their PyPI
names (pytorch and pytorch-cpu are torch, matplotlib-base is matplotlib).
"""

import re

import pytest
import yaml

from conftest import ROOT

ENVS = sorted((ROOT / "workflow" / "envs").glob("*.yaml"))
CONDA_TO_PYPI = {"pytorch": "torch", "pytorch-cpu": "torch", "pytorch-gpu": "torch", "matplotlib-base": "matplotlib"}
CPU_RULE_ENVS = {"actinn.yaml", "data.yaml"}  # used only by CPU rules (actinn: gpu false; download, score, ...)


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[norm(name)] = version.split("+")[0].strip()
    return pins


def pins(env_path) -> list[tuple[str, str, str]]:
    """(pypi name, pinned version, the line's comment) of every pinned dependency, conda and pip."""
    comments = {}
    for line in env_path.read_text().splitlines():
        m = re.match(r"\s*-\s*([A-Za-z0-9_.\-]+)\s*(==|=)\s*([0-9][^\s#]*)\s*(#.*)?$", line)
        if m:
            comments[norm(m.group(1))] = m.group(4) or ""
    out = []
    spec = yaml.safe_load(env_path.read_text())
    for dep in spec["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) else [dep]
        sep = "==" if isinstance(dep, dict) else "="
        for entry in entries:
            if sep not in entry:
                continue
            name, version = entry.split(sep, 1)
            if name in ("python",):
                continue
            out.append((norm(CONDA_TO_PYPI.get(name, name)), version, comments.get(norm(name), "")))
    return out


def major_minor(version: str) -> tuple:
    return tuple(version.split(".")[:2])


@pytest.mark.parametrize("env", ENVS, ids=[e.name for e in ENVS])
def test_env_file_pins_match_the_lock(env):
    header = re.search(r"lock: (requirements/[\w.-]+)", env.read_text())
    lock = read_lock(ROOT / (header.group(1) if header else "requirements/lock.txt"))
    found = pins(env)
    assert found, f"{env.name} pins nothing"
    problems = []
    for name, version, comment in found:
        if "lock-exception:" in comment:
            continue
        if name not in lock:
            problems.append(f"{name}={version} is not in the lock")
        elif major_minor(version) != major_minor(lock[name]):
            problems.append(f"{name}={version} but the lock has {lock[name]}")
    assert not problems, f"{env.name}: " + "; ".join(problems)


def test_cpu_rules_take_the_cpu_build_of_pytorch():
    for env in ENVS:
        text = env.read_text()
        if env.name in CPU_RULE_ENVS:
            assert "pytorch-cpu=" in text and re.search(r"-\s*pytorch=", text) is None, env.name
        elif re.search(r"-\s*pytorch(-cpu)?=", text):
            assert "pytorch-cpu" not in text, env.name


def test_env_checks_really_fail_on_a_drifted_pin(tmp_path):
    """The checks above can fail: a pin of another minor version, and a package the lock lacks."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("channels: [conda-forge]\ndependencies:\n  - numpy=1.26\n  - pip\n  - pip:\n      - notalib==1.0\n")
    lock = read_lock(ROOT / "requirements/lock.txt")
    found = {n: v for n, v, _ in pins(bad)}
    assert major_minor(found["numpy"]) != major_minor(lock["numpy"]) and "notalib" not in lock


def test_conda_post_deploy_imports_what_the_venv_build_checks():
    deploy = (ROOT / "workflow/envs/scgpt.post-deploy.sh").read_text()
    venv = (ROOT / "tools/scgpt_env.sh").read_text()

    def modules(text):  # the scgpt modules of the script's `python -c "import ..."` check
        checked = re.search(r'"import (scgpt[^"]*)"', text).group(1)
        return {m.strip() for m in checked.split(",") if m.strip().split(".")[0] == "scgpt"}

    wanted, imported = modules(venv), modules(deploy)
    assert wanted and wanted <= imported, wanted - imported


def test_every_method_env_has_what_the_runner_needs():
    """python -m cellplm.bench.methods reads the method's method.yaml: its env must install PyYAML."""
    from cellplm.bench.methods import metadata, method_ids

    for method in method_ids():
        env = ROOT / metadata(method)["env"]
        assert "pyyaml" in {name for name, _, _ in pins(env)}, env


def test_upstream_cellplm_env_is_the_venv_the_tests_run():
    """workflow/envs/cellplm_upstream.yaml (--use-conda) pins exactly the versions of .venv-upstream
    (requirements/upstream-cellplm.txt, whose scikit-misc is the project lock's), and its post-deploy script installs
    the same cellplm release --no-deps and checks the imports tools/upstream_env.sh checks."""
    env = ROOT / "workflow/envs/cellplm_upstream.yaml"
    lock = read_lock(ROOT / "requirements/upstream-cellplm.txt")
    found = {name: version for name, version, _ in pins(env)}
    assert "lock: requirements/upstream-cellplm.txt" in env.read_text()
    assert {"torch", "torchmetrics", "einops", "scanpy", "scikit-misc", "pyyaml"} <= set(found)
    assert {name: version for name, version in found.items() if lock.get(name) != version} == {}
    assert lock["scikit-misc"] == read_lock(ROOT / "requirements/lock.txt")["scikit-misc"]
    deploy = (ROOT / "workflow/envs/cellplm_upstream.post-deploy.sh").read_text()
    venv = (ROOT / "tools/upstream_env.sh").read_text()
    release = re.search(r"install --no-deps (cellplm==\S+)", venv).group(1)
    assert re.search(rf"pip install --no-deps --no-input {re.escape(release)}\n", deploy)

    def checked(text):  # the modules of the script's `python -c "import ..."` check
        return {m.strip() for m in re.search(r'"import (CellPLM[^"]*)"', text).group(1).split(",")}

    assert checked(venv) <= checked(deploy) and "skmisc" in checked(venv)


def _numba_cache_files(folder):
    return {p.relative_to(folder) for p in folder.rglob("*") if p.suffix in (".nbi", ".nbc")}


def _python(code_or_args, env):
    """A new interpreter of this environment running ``-c code`` (a string) or a script with arguments (a list)."""
    import subprocess
    import sys

    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    out = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out


def _warm_numba(env, step):
    out = _python([str(ROOT / "tools" / "warm_numba.py"), "--steps", step], env)
    assert f"warm_numba: {step}: compiled in" in out.stdout


def test_warm_numba_leaves_nothing_for_the_jobs_to_compile(tmp_path):
    """tools/warm_numba.py compiles scanpy's numba code once into the environment's cache (NUMBA_CACHE_DIR here):
    the highly variable genes of the demo's methods (cellplm.bench.normalise.select_hvg) in a new process then load all
    of it from there and compile nothing new; without the warm-up that process would fill the cache itself."""
    import os

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), PYTHONPATH=str(ROOT))
    job = (
        "import scanpy as sc, numpy as np, anndata as ad, scipy.sparse as sp;"
        "from cellplm.bench.normalise import select_hvg;"
        "x = sp.csr_matrix(np.random.default_rng(1).poisson(2.0, size=(90, 70)).astype(np.float32));"
        "select_hvg(ad.AnnData(x), 20)"
    )
    _python(job, dict(env, NUMBA_CACHE_DIR=str(tmp_path / "cold")))
    assert _numba_cache_files(tmp_path / "cold")  # the job compiles (and caches) scanpy code of its own
    _warm_numba(env, "scanpy")
    warmed = _numba_cache_files(tmp_path / "numba")
    assert _numba_cache_files(tmp_path / "cold") <= warmed
    _python(job, env)
    assert _numba_cache_files(tmp_path / "numba") == warmed  # nothing new compiled


def test_umap_numba_code_is_compiled_once_for_every_job(tmp_path):
    """umap-learn declares its numba functions without cache=True; cellplm.bench.compile_cache turns numba's cache on
    for them, so tools/warm_numba.py (its scib step) stores their code (with numba's default nothing of umap-learn
    would be stored) and a scib job's neighbour graph (scib-metrics' knn_graph_connectivities -> umap-learn's
    fuzzy_simplicial_set) then compiles nothing new."""
    import os

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), PYTHONPATH=str(ROOT))
    _warm_numba(env, "scib")
    warmed = _numba_cache_files(tmp_path / "numba")
    assert {p.name.split("-")[0] for p in warmed if p.parts[0].startswith("umap")} >= {
        "umap_.smooth_knn_dist",
        "umap_.compute_membership_strengths",
    }
    job = (
        "import numpy as np;"
        "from cellplm.bench.embedding_metrics import _scib_metrics, _exact_neighbors;"
        "_scib_metrics();"
        "x = np.random.default_rng(1).normal(size=(120, 8)).astype(np.float32);"
        "_exact_neighbors(1)(x, 15).knn_graph_connectivities"
    )
    _python(job, env)
    assert _numba_cache_files(tmp_path / "numba") == warmed  # nothing new compiled


def test_scib_jobs_keep_jax_compilations(tmp_path):
    """scib-metrics' jax functions are compiled once per shape and kept: a scoring process writes its compilations to
    jax's persistent cache (JAX_COMPILATION_CACHE_DIR here; by default <environment>/jax-cache), however short."""
    import os
    import sys

    job = (
        "import sys, jax.numpy as jnp;"
        "from cellplm.bench.embedding_metrics import _scib_metrics;"
        "from cellplm.bench.compile_cache import cache_jax;"
        "_scib_metrics();"
        "from scib_metrics.utils import silhouette_samples;"
        "import numpy as np;"
        "x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32);"
        "silhouette_samples(x, np.arange(40) % 2);"
        "print(cache_jax())"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax"))
    assert _python(job, env).stdout.strip().splitlines()[-1] == str(tmp_path / "jax")
    assert any((tmp_path / "jax").iterdir())
    env.pop("JAX_COMPILATION_CACHE_DIR")
    default = _python("from cellplm.bench.compile_cache import cache_jax; print(cache_jax())", env)
    assert default.stdout.strip() == os.path.join(sys.prefix, "jax-cache")
