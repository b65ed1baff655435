"""Helpers the Snakefile imports at start-up (standard library only, so the DAG builds fast).

Config checks beyond the JSON schema, the table of remote files, per-job parameters, and the hash of the
``cellplm`` package that goes into ``params:`` so that code changes rerun the jobs they affect.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

from .errors import BenchError, ConfigError, OutputError, exit_after_output_error

# name: (package, path inside the package, what it is)
BUILTIN = {
    "pbmc68k_reduced": ("scanpy", "datasets/10x_pbmc68k_reduced.h5ad",
                        "700 PBMCs (10x), log-normalised .raw plus n_counts; 10 labels in bulk_labels"),
}


def package_file(package: str, relpath: str) -> Path:
    """Locate a data file inside an installed package without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed; it ships the demo data")
    return Path(list(spec.submodule_search_locations)[0]) / relpath


def builtin_path(name: str) -> Path:
    if name not in BUILTIN:
        raise KeyError(f"unknown builtin dataset {name!r}; choose from {sorted(BUILTIN)}")
    package, relpath, _ = BUILTIN[name]
    return package_file(package, relpath)


OUTPUT_FOLDERS = ("results", "logs", "resources")


def check_output_space(root: Path, min_free_gb: float, folders=OUTPUT_FOLDERS) -> None:
    """Before a run: every output folder is writable and results/ has ``min_free_gb`` free; else ConfigError.

    One line names the folder and the problem, so a run on a read-only or full disk stops before any job starts
    instead of failing job by job.
    """
    for name in folders:
        folder = Path(root) / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
                pass
        except OSError as e:
            raise ConfigError(f"{folder}/: not writable ({e.strerror}); run from a writable working directory "
                              "or fix its permissions") from None
    free_gb = shutil.disk_usage(Path(root) / folders[0]).free / 1e9
    if free_gb < min_free_gb:
        raise ConfigError(f"{Path(root) / folders[0]}/: only {free_gb:.2f} GB free on its filesystem, below "
                          f"run.min_free_gb ({min_free_gb:g}); free space or lower run.min_free_gb")


def check_config(config: dict, root: Path) -> None:
    """Cross-references the schema cannot express. Raises ConfigError with a one-line message."""
    run = config["run"]
    for kind, known in (("dataset", config["datasets"]), ("method", config["methods"]), ("split", config["splits"]),
                        ("embedding", config["embeddings"])):
        for name in run[f"{kind}s"]:
            if kind == "method" and name not in known and name.removesuffix(ZEROSHOT_SUFFIX) in config["embeddings"]:
                raise ConfigError(f"config: run.methods: {name} is the zero-shot row of embedding "
                                  f"'{name.removesuffix(ZEROSHOT_SUFFIX)}'; list that in run.embeddings instead "
                                  f"(zeroshot.knn adds the row)")
            if name not in known:
                raise ConfigError(f"config: unknown {kind} '{name}' in run.{kind}s (known: {', '.join(sorted(known))})")
    for name in run["datasets"]:
        ds = config["datasets"][name]
        for split in ds.get("splits") or []:
            if split not in config["splits"]:
                raise ConfigError(f"config: dataset '{name}' lists unknown split '{split}'")
        fr = ds["split_fractions"]
        if abs(fr["train"] + fr["valid"] + fr["test"] - 1) > 1e-9:
            raise ConfigError(f"config: datasets.{name}.split_fractions must sum to 1, got {fr}")
        src = ds["source"]
        if src["kind"] == "local" and not (root / src["path"]).exists() and not Path(src["path"]).exists():
            raise ConfigError(f"config: dataset '{name}': local file {src['path']} does not exist")
    check_zeroshot(config, root)
    for name in run["methods"]:
        _check_runnable("method", name, config["methods"][name], root)
    check_cellplm(config)
    speed = config["speed"]
    if speed["enabled"] and speed["dataset"] and speed["dataset"] not in run["datasets"]:
        raise ConfigError(f"config: speed.dataset '{speed['dataset']}' is not in run.datasets ({', '.join(run['datasets'])})")
    files = {}
    for name in run["datasets"]:
        for f in remote_files(config["datasets"][name]["source"]):
            old = files.setdefault(f["filename"], f)
            if old != f:
                what = "URLs" if old["url"] != f["url"] else "settings (sha256, mirrors, version_id or as_of)"
                raise ConfigError(f"config: download file name '{f['filename']}' is used with two different {what}")
    check_models(config)


# ---- CellPLM checkpoint -----------------------------------------------------------------------------------------

RELEASED_CONFIG = "cellplm/resources/20230926_85M.config.json"  # shipped with the package (from the workflow root)
RELEASES = ("20230926_85M", "20231027_85M")  # in the authors' Dropbox folder, subfolder ckpt/
CKPT_CONFIG, CKPT_WEIGHTS = ".config.json", ".best.ckpt"
# Settings that do not change the weights; left out of the pretraining folder's hash.
_PRETRAIN_UNHASHED = ("gpu", "threads", "device", "resume")


def check_zeroshot(config: dict, root: Path) -> None:
    """The zero-shot track: embedding methods runnable, the embedded split run on every dataset."""
    run = config["run"]
    for name in run["embeddings"]:
        _check_runnable("embedding", name, config["embeddings"][name], root)
    split = config["zeroshot"]["split"]
    if run["embeddings"] and split:
        for name in run["datasets"]:
            if split not in dataset_splits(config, name):
                raise ConfigError(f"config: zeroshot.split '{split}' is not a split of dataset '{name}' "
                                  f"({', '.join(dataset_splits(config, name))})")


def _check_runnable(kind: str, name: str, spec: dict, root: Path) -> None:
    """A method or embedding method names its code (a folder's class or a script) and files that exist."""
    if not spec.get("entry") and not spec.get("script"):
        raise ConfigError(f"config: {kind} '{name}' has neither an `entry` (a {kind} folder's class) nor a `script`")
    for key in ("script", "env"):
        if spec.get(key) and not (root / spec[key]).exists():
            raise ConfigError(f"config: {kind} '{name}': {key} file {spec[key]} does not exist")


def embedding_split(config: dict, dataset: str) -> str:
    """The split whose train + test files (all of the dataset's cells) the embedding methods embed."""
    return config["zeroshot"]["split"] or dataset_splits(config, dataset)[0]


def check_cellplm(config: dict) -> None:
    """The ``cellplm`` section: the keys each checkpoint source needs (one-line ConfigError otherwise)."""
    ck = config.get("cellplm", {}).get("checkpoint", {})
    source = ck.get("source", "release")
    where = "cellplm.checkpoint"
    if source == "path" and not ck.get("prefix"):
        raise ConfigError(f"config: {where}.source is 'path' but {where}.prefix is not set (the checkpoint files are "
                          f"<prefix>.config.json and <prefix>.best.ckpt)")
    if source == "url":
        url = ck.get("weights_url") or ""
        if not url:
            raise ConfigError(f"config: {where}.source is 'url' but {where}.weights_url is not set")
        for key in ("weights_url", "config_url"):
            value = ck.get(key)
            if value and not value.startswith(("http://", "https://")):
                raise ConfigError(f"config: {where}.{key} must be an http(s) URL, got {value!r}")
        if not ck.get("name") and not _url_name(url):
            raise ConfigError(f"config: {where}: cannot derive a file name from weights_url {url!r}; set {where}.name")
    if source != "url":
        for key in ("weights_url", "config_url", "sha256"):
            if ck.get(key):
                raise ConfigError(f"config: {where}.{key} is only used with source 'url' (source is {source!r})")
    if source == "release" and ck.get("release") not in RELEASES:
        raise ConfigError(f"config: {where}.release {ck.get('release')!r} is not a released checkpoint "
                          f"({', '.join(RELEASES)})")
    if source == "pretrain" and not cellplm_corpus_items(config):
        raise ConfigError("config: cellplm.pretrain.corpus: every corpus item is off; turn at least one on")


def _url_name(url: str) -> str:
    name = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    for suffix in (CKPT_WEIGHTS, ".ckpt"):
        name = name.removesuffix(suffix)
    return "".join(c for c in name if c.isalnum() or c in "._-")


def _slug(text: str) -> str:
    return text.replace(" ", "-")


def cellplm_corpus_items(config: dict) -> list[str]:
    """Names of the pretraining corpus items (``results/cellplm/corpus/<name>.h5ad``)."""
    corpus = config.get("cellplm", {}).get("pretrain", {}).get("corpus", {})
    items = []
    if corpus.get("celltypist_sample", True):
        items.append("celltypist_sample")
    if corpus.get("train_cells", True):
        items += [f"train__{d}" for d in config["run"]["datasets"]]
    if corpus.get("synthetic_spatial", {}).get("enabled", True):
        items.append("synthetic_spatial")
    return items


@dataclasses.dataclass
class CheckpointPlan:
    """How this config obtains the CellPLM checkpoint, as plain paths (relative to the workflow root)."""

    source: str  # cellplm.checkpoint.source: release, path, url, pretrain or none
    kind: str = ""  # provenance shown in the tables ("released", "pretrained here", ...)
    # What the methods get: the provenance-named link folder's ``model``, the configured prefix when its files are
    # missing, or "" for random initialisation.
    prefix: str = ""
    dir: str = ""  # provenance-named folder of model.config.json + model.best.ckpt
    files: list = dataclasses.field(default_factory=list)  # the two files method jobs take as inputs (none: [])
    config_src: str = ""  # what the link rule links (path, url and release sources)
    weights_src: str = ""
    missing: list = dataclasses.field(default_factory=list)  # files of a path source that do not exist
    url: dict = dataclasses.field(default_factory=dict)  # download target -> {"url", "sha256"}
    trusted_sha256: list = dataclasses.field(default_factory=list)  # digests that may be fully unpickled


def cellplm_checkpoint(config: dict, root: Path, download_dir: str = "resources/downloads") -> CheckpointPlan:
    """The :class:`CheckpointPlan` of this config (its ``cellplm.checkpoint`` section)."""
    cp = config.get("cellplm", {})
    ck = cp.get("checkpoint", {})
    source = ck.get("source", "release")
    out = CheckpointPlan(source=source, trusted_sha256=[d.lower() for d in ck.get("trusted_sha256") or []])
    if source == "none":
        out.kind = "random initialisation"
        return out
    if source == "pretrain":
        pt = cp.get("pretrain", {})
        settings = {k: v for k, v in sorted(pt.items()) if k not in _PRETRAIN_UNHASHED}
        settings["corpus_items"] = cellplm_corpus_items(config)
        settings["splits"] = {d: dataset_splits(config, d) for d in config["run"]["datasets"]}
        tag = hashlib.sha256(to_json(settings).encode()).hexdigest()[:8]
        folder = f"results/cellplm/pretrained/{pt.get('shape', 'small')}_e{pt.get('epochs', 10)}_seed{pt.get('seed', 0)}_{tag}"
        out.kind, out.dir, out.prefix = "pretrained here", folder, f"{folder}/model"
        out.files = [f"{folder}/model{CKPT_CONFIG}", f"{folder}/model{CKPT_WEIGHTS}"]
        return out
    if source == "path":
        prefix = str(ck["prefix"])
        for suffix in (CKPT_WEIGHTS, CKPT_CONFIG):
            prefix = prefix.removesuffix(suffix)
        kind = ck.get("kind") or ""  # empty: the method infers it ("pretrained here" from our metadata, else user-supplied)
        name = ck.get("name") or Path(prefix).name
        config_src, weights_src = prefix + CKPT_CONFIG, prefix + CKPT_WEIGHTS
        missing = [p for p in (config_src, weights_src) if not (Path(p) if Path(p).is_absolute() else root / p).exists()]
        if config_src in missing and kind == "released":  # the released config ships with the package
            config_src = RELEASED_CONFIG
            missing.remove(prefix + CKPT_CONFIG)
        out.missing = missing
    else:  # url, or release: the authors' file in their shared Dropbox folder
        if source == "release":
            ck = {**ck, **release_urls(cp.get("releases", {}), ck["release"])}
        name = ck.get("name") or _url_name(ck["weights_url"])
        kind = ck.get("kind") or "released"
        weights_src = f"{download_dir}/cellplm/{name}{CKPT_WEIGHTS}"
        config_src = f"{download_dir}/cellplm/{name}{CKPT_CONFIG}" if ck.get("config_url") else RELEASED_CONFIG
        out.url = {weights_src: {"url": ck["weights_url"], "sha256": ck.get("sha256")}}
        if ck.get("config_url"):
            out.url[config_src] = {"url": ck["config_url"], "sha256": ck.get("config_sha256")}
        if ck.get("sha256") and source == "release":  # a pinned, known release may be fully unpickled if it must
            out.trusted_sha256.append(ck["sha256"].lower())
    folder = f"results/cellplm/checkpoints/{_slug(kind or 'local')}__{name}"
    out.kind, out.dir, out.config_src, out.weights_src = kind, folder, config_src, weights_src
    if out.missing:
        out.prefix = prefix  # the methods fail with "checkpoint file not found" naming the expected file
    else:
        out.prefix = f"{folder}/model"
        out.files = [f"{folder}/model{CKPT_CONFIG}", f"{folder}/model{CKPT_WEIGHTS}"]
    return out


def release_urls(releases: dict, name: str) -> dict:
    """Download URLs (and pinned sha256) of a released CellPLM checkpoint in the authors' shared Dropbox folder.

    A single file inside a Dropbox shared folder is ``<folder>/<path>?rlkey=<key>&dl=1`` (``dl=1`` forces the
    download; the ``rlkey`` must be kept; the pattern BiomedSciAI/gene-benchmark uses). 20230926_85M's config ships
    with this package (it is committed in OmicsML/CellPLM), so only its weights are fetched; every other release's
    config is read from the same folder.
    """
    base = f"{releases['folder_url'].rstrip('/')}/ckpt/{name}"
    query = f"?rlkey={releases['rlkey']}&dl=1"
    pins = releases.get("sha256") or {}
    out = {"weights_url": f"{base}{CKPT_WEIGHTS}{query}", "sha256": pins.get(f"{name}{CKPT_WEIGHTS}"), "name": name}
    if name != "20230926_85M":
        out.update(config_url=f"{base}{CKPT_CONFIG}{query}", config_sha256=pins.get(f"{name}{CKPT_CONFIG}"))
    return out


def with_checkpoint(params: dict, ckpt: CheckpointPlan) -> dict:
    """A CellPLM method's params with the workflow's checkpoint prefix, provenance kind and trusted digests."""
    out = {**params, "checkpoint": ckpt.prefix, "checkpoint_kind": ckpt.kind if ckpt.prefix else ""}
    if ckpt.trusted_sha256:
        out["trusted_sha256"] = ckpt.trusted_sha256
    return out


# ---- pretrained foundation models fetched by the workflow (config `models`) --------------------------------------

MODELS_DIR = "resources/models"


def check_models(config: dict) -> None:
    """Every method of the run that names a ``models`` entry names one that exists (one-line ConfigError)."""
    for name in config["run"]["methods"]:
        model = config["methods"][name].get("model")
        if model and model not in config.get("models", {}):
            raise ConfigError(f"config: method '{name}' uses model '{model}', which is not in `models` "
                              f"(known: {', '.join(sorted(config.get('models', {}))) or 'none'})")


def model_dir(model: str) -> str:
    return f"{MODELS_DIR}/{model}"


def fetched_model_params(config: dict, spec: dict) -> dict:
    """Params a method (or embedding method) of registry entry ``spec`` gets from the fetched model it names (paths
    inside its folder), plus its provenance kind."""
    model = spec.get("model")
    if not model:
        return {}
    entry = config["models"][model]
    folder = model_dir(model)
    out = {key: folder if rel in (".", "") else f"{folder}/{rel}" for key, rel in (entry.get("params") or {}).items()}
    return {**out, "checkpoint_kind": "released"}


def speed_models(config: dict, ckpt: CheckpointPlan) -> dict:
    """The models of the embedding-speed job: ``{model: {"method", "options", "reason", "fetched"}}``.

    Each model runs in the environment of the method it names (``speed.models.<model>.method``); ``reason`` is
    set (and the model becomes a not-applicable row) when that method is not in the registry. With
    ``weights: checkpoint`` the options carry the checkpoint the workflow uses for that method, and ``fetched``
    names the ``models`` entry the job then needs (or is None).
    """
    out = {}
    for name, spec in config["speed"]["models"].items():
        spec = dict(spec)
        method = spec.pop("method")
        reason = "" if method in config["methods"] else f"method {method!r} is not in the method registry (config methods)"
        fetched = None
        if spec.get("weights") == "checkpoint":
            if name == "cellplm":
                spec["checkpoint"] = ckpt.prefix
            elif method in config["methods"]:
                fetched = config["methods"][method].get("model")
                spec_ = config["methods"][method]
                params = {**(spec_.get("params") or {}), **fetched_model_params(config, spec_)}
                for key in ("model_dir", "token_dictionary", "gene_median_dictionary"):
                    if params.get(key):
                        spec.setdefault(key, params[key])
        out[name] = {"method": method, "options": spec, "reason": reason, "fetched": fetched}
    return out


def speed_dataset(config: dict) -> str:
    return config["speed"]["dataset"] or config["run"]["datasets"][0]


def remote_files(source: dict) -> list[dict]:
    """The files a dataset source downloads: [{url, filename, sha256, mirrors, version_id, as_of}]."""
    def entry(spec: dict, url: str | None = None, filename: str | None = None) -> dict:
        return {"url": url or spec["url"], "filename": filename or spec["filename"], "sha256": spec.get("sha256"),
                "mirrors": list(spec.get("mirrors") or []), "version_id": spec.get("version_id"),
                "as_of": str(spec["as_of"]) if spec.get("as_of") else None}

    kind = source["kind"]
    if kind in ("download", "archive"):
        return [entry(source)]
    if kind == "cellxgene":  # a dataset id (with an optional version pin or date), or a dataset version id alone
        ident = source.get("dataset_id") or source["version_id"]
        spec = source if source.get("dataset_id") else {**source, "version_id": None}
        return [entry(spec, url=f"cellxgene://{ident}", filename=f"cellxgene_{ident}.h5ad")]
    if kind == "pbmc12k":
        return [entry(f) for f in source["files"]]
    return []


def archive_members(config: dict) -> dict[str, list[str]]:
    """Archive file name -> the members that the datasets of this run extract from it (one pass per archive)."""
    out: dict[str, set] = {}
    for name in config["run"]["datasets"]:
        src = config["datasets"][name]["source"]
        if src["kind"] == "archive":
            out.setdefault(src["filename"], set()).add(src["member"])
    return {k: sorted(v) for k, v in out.items()}


def dataset_splits(config: dict, dataset: str) -> list[str]:
    """Split variants run on a dataset: its own ``splits`` list, else ``run.splits``."""
    return config["datasets"][dataset].get("splits") or config["run"]["splits"]


def method_labels(config: dict) -> dict[str, str]:
    """Method id -> the name shown in tables and plots."""
    return {m: c["label"] for m, c in config["methods"].items()}


def method_registry(overrides: dict | None) -> dict:
    """Every method folder's metadata (cellplm/bench/methods/<id>/method.yaml) updated key by key with the
    config's ``methods`` section (which may also define methods of its own, with a ``script``)."""
    from . import methods

    return _with_overrides(methods.metadata, methods.method_ids(), overrides)


def embedding_registry(overrides: dict | None) -> dict:
    """The same for the embedding methods of the zero-shot track (cellplm/bench/embeddings/<id>/embedding.yaml and
    the config's ``embeddings`` section)."""
    from . import embeddings

    return _with_overrides(embeddings.metadata, embeddings.embedding_ids(), overrides)


def _with_overrides(metadata, ids, overrides: dict | None) -> dict:
    overrides = overrides or {}
    registry = {m: deep_update(metadata(m), overrides.get(m) or {}) for m in ids}
    return {**{m: spec for m, spec in overrides.items() if m not in registry}, **registry}


ZEROSHOT_SUFFIX = "_zeroshot"


def zeroshot_methods(config: dict) -> dict:
    """Registry entries of the zero-shot annotation rows, ``<embedding>_zeroshot`` for every embedding of the run
    (none when zeroshot.knn is off): a kNN on the train cells' embedding, run by the workflow's zero-shot job."""
    knn = config["zeroshot"]["knn"]
    if not knn["enabled"]:
        return {}
    out = {}
    for emb in config["run"]["embeddings"]:
        spec = config["embeddings"][emb]
        out[emb + ZEROSHOT_SUFFIX] = {
            "label": f"{spec['label']} (zero-shot embedding + kNN)",
            "implementation": f"scikit-learn KNeighborsClassifier (k={knn['k']}) on the train cells' {spec['label']} "
                              f"({spec.get('implementation', '')})",
            "env": "workflow/envs/classic.yaml", "gpu": False, "control": False, "published_as": None,
            "params": {"k": knn["k"]}, "zeroshot_of": emb, "cellplm_checkpoint": False, "model": None,
        }
    return out


def deep_update(base: dict, update: dict) -> dict:
    """A copy of ``base`` with ``update`` merged in, mappings recursively (as Snakemake merges config files)."""
    out = dict(base)
    for key, value in update.items():
        out[key] = deep_update(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def method_command(method_id: str, method: dict, package: str = "methods") -> str:
    """What follows the interpreter on a method (or, with ``package="embeddings"``, embedding method) job's command
    line: its own ``script``, or the package's runner."""
    return method["script"] if method.get("script") else f"-m cellplm.bench.{package} {method_id}"


def method_params(method: dict, param_set: str) -> dict:
    params = dict(method.get("params") or {})
    if param_set == "test":
        params.update(method.get("test_params") or {})
    return params


def method_python(python: str | None, root: Path) -> str:
    """Interpreter of a method script: the method's ``python`` key, or ``python`` on PATH when it is null.

    A relative path (``.venv-scgpt/bin/python``) is taken from the workflow root; a bare name is looked up on
    PATH. A path that does not exist falls back to ``python`` on PATH, with one warning: the method's script
    then records a failed row saying which environment to build, and the rest of the workflow runs.
    """
    if not python:
        return "python"
    path = Path(python)
    if not path.is_absolute():
        if len(path.parts) == 1:
            return python
        path = Path(root) / path
    if path.exists():
        return str(path)
    if str(path) not in _MISSING_PYTHON:
        _MISSING_PYTHON.add(str(path))
        print(f"WARNING: interpreter {path} not found (a method's `python` key); its jobs use `python` on PATH",
              file=sys.stderr)
    return "python"


_MISSING_PYTHON: set[str] = set()


def code_hash(root: Path, *entries: str) -> str:
    """sha256 (first 16 hex digits) of the code one job runs, so that Snakemake reruns a job only when that code
    changed (``params: code=...``).

    ``entries`` are scripts (paths from the workflow root) or modules (``cellplm.bench.methods.__main__``). Their
    code is every ``cellplm`` module they import, directly or through others (read from the import statements,
    including those inside functions, so lazy imports count, and from the ``_EXPORTS`` of packages whose names are
    imported on first use), the ``__init__`` of each package on the way, the
    method (and embedding) folders' ``method.yaml`` (``embedding.yaml``) beside any of their modules, and ``cellplm/resources`` when the model package
    is among them. A module imported by name at run time (the method registry's) is not followed: a method's
    jobs name their method's module themselves.
    """
    root = Path(root)
    files = set()
    for entry in entries:
        if entry.endswith(".py"):
            files.add(root / entry)
            files |= _imported_files(root, root / entry, None)
        else:
            files |= _module_files(root, entry)
    for path in list(files):
        for metadata in ("method.yaml", "embedding.yaml"):
            if (path.parent / metadata).exists():
                files.add(path.parent / metadata)
    if any(_is_model_file(root, path) for path in files):
        files |= {p for p in (root / "cellplm" / "resources").iterdir() if p.suffix != ".md"}
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _is_model_file(root: Path, path: Path) -> bool:
    rel = path.relative_to(root).parts
    return rel[0] == "cellplm" and (len(rel) < 2 or rel[1] != "bench")


def _module_path(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=None)
def _module_files(root: Path, name: str) -> frozenset:
    """The file of module ``name``, the __init__ of its packages, and every cellplm module it imports (transitively)."""
    seen: dict[str, Path] = {}
    todo = [name]
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__, then a/b/c
            parent = ".".join(parts[:i])
            path = _module_path(root, parent)
            if path is None or parent in seen:
                continue
            seen[parent] = path
            todo += _imports(root, path, parent)
    return frozenset(seen.values())


def _imported_files(root: Path, script: Path, package: str | None) -> set:
    out = set()
    for module in _imports(root, script, package):
        out |= _module_files(root, module)
    return out


def _imports(root: Path, path: Path, module: str | None) -> list[str]:
    """cellplm modules that ``path`` (module ``module``, or a script when None) imports, anywhere in the file."""
    package = None
    if module is not None:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append(target)
            found += [f"{target}.{alias.name}" for alias in node.names if _module_path(root, f"{target}.{alias.name}")]
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_EXPORTS" for t in node.targets):
            # a package's names imported on first use (cellplm._lazy): {"name": ".submodule"}
            found += [f"{package}{v.value}" for v in getattr(node.value, "values", [])
                      if isinstance(v, ast.Constant) and str(v.value).startswith(".")]
    return [m for m in found if m == "cellplm" or m.startswith("cellplm.")]


def to_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@contextlib.contextmanager
def job(snakemake):
    """Run a workflow script's body with stdout/stderr going to its log.

    A :class:`BenchError` (bad input, failed download, ...) ends the job with its one-line message on the
    console and in the log, without a traceback; anything else logs the full traceback.
    """
    console = sys.stderr
    log_path = snakemake.log[0] if len(snakemake.log) else None
    log = open(log_path, "w", buffering=1) if log_path else console
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = log
    try:
        yield log
    except BenchError as e:
        print(f"ERROR: {e}", file=log)
        print(f"ERROR: {e}", file=console)
        if isinstance(e, OutputError):
            if log is not console:
                log.close()
            exit_after_output_error()
        raise SystemExit(1) from None
    except Exception:
        traceback.print_exc(file=log)
        raise
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        if log is not console:
            log.close()
