"""Helpers the Snakefile imports at start-up (standard library only, so the DAG builds fast).

Config checks beyond the JSON schema, the table of remote files, per-job parameters, and the hash of the
``cellplm`` package that goes into ``params:`` so that code changes rerun the jobs they affect.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

from ..checksum import sha256_file
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


OUTPUT_FOLDERS = ("results", "logs", "benchmarks", "resources")


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
    for kind, known in (("dataset", config["datasets"]), ("method", config["methods"]), ("split", config["splits"])):
        for name in run[f"{kind}s"]:
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
    for name in run["methods"]:
        m = config["methods"][name]
        for key in ("script", "env"):
            if not (root / m[key]).exists():
                raise ConfigError(f"config: method '{name}': {key} file {m[key]} does not exist")
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


def cellplm_checkpoint(config: dict, root: Path, download_dir: str = "resources/downloads") -> dict:
    """How this config obtains the CellPLM checkpoint, as plain paths (relative to the workflow root).

    Keys: ``source``; ``kind`` (provenance shown in the tables); ``prefix`` (what the methods get: the
    provenance-named link folder's ``model``, or the configured prefix when its files are missing, or "" for
    random initialisation); ``dir`` (provenance-named folder of ``model.config.json`` + ``model.best.ckpt``);
    ``files`` (the two checkpoint files the method jobs take as inputs; empty when none can be made);
    ``config_src``/``weights_src`` (what the link rule links, for path and url); ``missing`` (files of a
    ``path`` source that do not exist).
    """
    cp = config.get("cellplm", {})
    ck = cp.get("checkpoint", {})
    source = ck.get("source", "release")
    out = {"source": source, "kind": "", "prefix": "", "dir": "", "files": [], "config_src": "", "weights_src": "",
           "missing": [], "url": {}, "trusted_sha256": [d.lower() for d in ck.get("trusted_sha256") or []]}
    if source == "none":
        out["kind"] = "random initialisation"
        return out
    if source == "pretrain":
        pt = cp.get("pretrain", {})
        settings = {k: v for k, v in sorted(pt.items()) if k not in _PRETRAIN_UNHASHED}
        settings["corpus_items"] = cellplm_corpus_items(config)
        settings["splits"] = {d: dataset_splits(config, d) for d in config["run"]["datasets"]}
        tag = hashlib.sha256(to_json(settings).encode()).hexdigest()[:8]
        folder = f"results/cellplm/pretrained/{pt.get('shape', 'small')}_e{pt.get('epochs', 10)}_seed{pt.get('seed', 0)}_{tag}"
        out.update(kind="pretrained here", dir=folder, prefix=f"{folder}/model",
                   files=[f"{folder}/model{CKPT_CONFIG}", f"{folder}/model{CKPT_WEIGHTS}"])
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
        out.update(missing=missing)
    else:  # url, or release: the authors' file in their shared Dropbox folder
        if source == "release":
            ck = {**ck, **release_urls(cp.get("releases", {}), ck["release"])}
        name = ck.get("name") or _url_name(ck["weights_url"])
        kind = ck.get("kind") or "released"
        weights_src = f"{download_dir}/cellplm/{name}{CKPT_WEIGHTS}"
        config_src = f"{download_dir}/cellplm/{name}{CKPT_CONFIG}" if ck.get("config_url") else RELEASED_CONFIG
        out["url"] = {weights_src: {"url": ck["weights_url"], "sha256": ck.get("sha256")}}
        if ck.get("config_url"):
            out["url"][config_src] = {"url": ck["config_url"], "sha256": ck.get("config_sha256")}
        if ck.get("sha256") and source == "release":  # a pinned, known release may be fully unpickled if it must
            out["trusted_sha256"].append(ck["sha256"].lower())
    folder = f"results/cellplm/checkpoints/{_slug(kind or 'local')}__{name}"
    out.update(kind=kind, dir=folder, config_src=config_src, weights_src=weights_src)
    if out["missing"]:
        out["prefix"] = prefix  # the methods fail with "checkpoint file not found" naming the expected file
    else:
        out.update(prefix=f"{folder}/model", files=[f"{folder}/model{CKPT_CONFIG}", f"{folder}/model{CKPT_WEIGHTS}"])
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


def with_checkpoint(params: dict, ckpt: dict) -> dict:
    """A CellPLM method's params with the workflow's checkpoint prefix, provenance kind and trusted digests."""
    out = {**params, "checkpoint": ckpt["prefix"], "checkpoint_kind": ckpt["kind"] if ckpt["prefix"] else ""}
    if ckpt["trusted_sha256"]:
        out["trusted_sha256"] = ckpt["trusted_sha256"]
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


def fetched_model_params(config: dict, method: str) -> dict:
    """Params a method gets from the fetched model it names (paths inside its folder), plus its provenance kind."""
    model = config["methods"][method].get("model")
    if not model:
        return {}
    entry = config["models"][model]
    folder = model_dir(model)
    out = {key: folder if rel in (".", "") else f"{folder}/{rel}" for key, rel in (entry.get("params") or {}).items()}
    return {**out, "checkpoint_kind": "released"}


def speed_models(config: dict, ckpt: dict) -> dict:
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
                spec["checkpoint"] = ckpt["prefix"]
            elif method in config["methods"]:
                fetched = config["methods"][method].get("model")
                params = {**(config["methods"][method].get("params") or {}), **fetched_model_params(config, method)}
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


def code_hash(root: Path) -> str:
    """sha256 over the cellplm package sources (file names and contents), first 16 hex digits."""
    h = hashlib.sha256()
    for p in sorted((root / "cellplm").rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def file_hash(path: Path) -> str:
    return sha256_file(path)[:16]


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
