"""What the Snakefile needs on top of the libraries (standard library only at import, so the DAG builds fast): the
config completed and checked beyond the JSON schema, the method and embedding registries merged with the config,
the fetched models and the speed job's models, and the command line, params and interpreter of a method job.

Nothing under the libraries imports this module; it sits on :mod:`.config` (what the libraries read from a config),
:mod:`.data.catalog` (the dataset files), :mod:`.checkpoint_plan` (the CellPLM checkpoint). The job wrapper of the
workflow scripts is :mod:`.job`, the code hash of the rules :mod:`.codehash`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .checkpoint_plan import CheckpointPlan, check_cellplm
from .config import dataset_splits, deep_update
from .data.catalog import remote_files
from .errors import ConfigError

SCHEMA = "workflow/schemas/config.schema.yaml"  # from the workflow root
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
            raise ConfigError(
                f"{folder}/: not writable ({e.strerror}); run from a writable working directory or fix its permissions"
            ) from None
    free_gb = shutil.disk_usage(Path(root) / folders[0]).free / 1e9
    if free_gb < min_free_gb:
        raise ConfigError(
            f"{Path(root) / folders[0]}/: only {free_gb:.2f} GB free on its filesystem, below "
            f"run.min_free_gb ({min_free_gb:g}); free space or lower run.min_free_gb"
        )


# ---- a run killed at any point resumes with the same command ------------------------------------------------------

SNAKEMAKE_STATE = ".snakemake"  # Snakemake's own folder in the working directory; its locks are in locks/
RUN_FLOCK = "cellplm_bench.flock"  # in SNAKEMAKE_STATE: every live snakemake of this workflow holds it (shared)
_HELD: list[int] = []  # the descriptor of this process's flock, held until the process ends


def remove_stale_locks(workdir: Path) -> str | None:
    """Called by the Snakefile as the main snakemake process reads it, before Snakemake locks the directory.

    Snakemake locks the working directory with files in ``.snakemake/locks/`` (written once the DAG is built,
    removed when the run ends) that record no owner: a run killed with SIGKILL, by the OOM killer or with its
    machine leaves them behind, and the next run stops with a LockException until ``snakemake --unlock``. So every
    snakemake process of this workflow also holds a shared ``flock`` on ``.snakemake/cellplm_bench.flock`` for its
    whole life (the kernel drops it when the process dies, however it dies). Before taking its own, a process that
    can lock the file exclusively knows that no other snakemake of this workflow is alive here: the Snakemake locks
    it finds are stale, and it removes them. Returns the one line to print then, else None (no lock, or one held
    by a live run, which Snakemake reports itself). Where ``flock`` does not work (some network filesystems), the
    locks are left to ``snakemake --unlock``.
    """
    state = Path(workdir) / SNAKEMAKE_STATE
    try:
        state.mkdir(exist_ok=True)
        fd = os.open(state / RUN_FLOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # an unwritable working directory: check_output_space names it before any job
        return None
    message = None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another snakemake of this workflow is alive here: its locks are not stale
        pass
    except OSError:
        os.close(fd)
        return None
    else:
        locks = sorted((state / "locks").glob("*.lock"))
        for lock in locks:
            lock.unlink(missing_ok=True)
        if locks:
            message = (
                f"Removed a stale lock ({state.name}/locks/): the run that left it was killed, and no other "
                "snakemake works in this directory."
            )
    fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while another process checks, as above
    _HELD.append(fd)
    return message


# ---- jobs configured for a GPU on a machine without one ------------------------------------------------------------


def wants_gpu(gpu: bool, params: dict) -> bool:
    """A job configured for a GPU that picks its device itself: ``gpu: true``, and its params neither pin a device
    (``device`` other than auto) nor turn the GPU off (``use_gpu: false``). Such a job runs on the CPU, silently
    and many times slower, where torch sees no GPU; one with ``device: cuda`` fails there instead."""
    return bool(gpu) and (params.get("device") or "auto") == "auto" and params.get("use_gpu", True) is not False


def cuda_visible(python: str = sys.executable, timeout: float = 120) -> bool:
    """Whether torch sees a CUDA device here, asked in a child ``python`` (importing torch takes seconds and
    hundreds of MB that the snakemake process does not need). Without torch there: whether an NVIDIA driver lists a
    GPU (``/proc/driver/nvidia/gpus``) that ``CUDA_VISIBLE_DEVICES`` does not hide."""
    try:
        out = subprocess.run(
            [python, "-c", "import torch; print(torch.cuda.is_available())"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if out.returncode == 0:
            return out.stdout.strip().endswith("True")
    except (OSError, subprocess.TimeoutExpired):
        pass
    gpus = Path("/proc/driver/nvidia/gpus")
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1")
    return not hidden and gpus.is_dir() and any(gpus.iterdir())


def gpu_check(n_jobs: int, require_gpu: bool, visible=cuda_visible) -> str | None:
    """Before a local run: when ``n_jobs`` jobs of it are configured for a GPU (:func:`wants_gpu`) and ``visible()``
    says torch sees none, the one warning line to print, or with ``run.require_gpu`` a ConfigError that stops the
    run before any job. None otherwise (``visible`` is not asked when no such job is to run)."""
    if not n_jobs or visible():
        return None
    what = (
        f"{n_jobs} job{'s' if n_jobs != 1 else ''} of this run {'are' if n_jobs != 1 else 'is'} configured for a "
        "GPU (gpu: true, device auto) but torch sees no GPU here"
    )
    if require_gpu:
        raise ConfigError(
            f"config: run.require_gpu: {what}; run on a machine with a GPU, or set "
            "run.require_gpu: false to run them on the CPU"
        )
    return f"WARNING: {what}; they will run on the CPU. Set run.require_gpu: true to stop instead."


def check_config(config: dict, root: Path) -> None:
    """Cross-references the schema cannot express. Raises ConfigError with a one-line message."""
    from .methods import zeroshot_row_id

    run = config["run"]
    for kind, known in (
        ("dataset", config["datasets"]),
        ("method", config["methods"]),
        ("split", config["splits"]),
        ("embedding", config["embeddings"]),
    ):
        for name in run[f"{kind}s"]:
            of = [e for e in config["embeddings"] if zeroshot_row_id(e) == name] if kind == "method" else []
            if name not in known and of:
                raise ConfigError(
                    f"config: run.methods: {name} is the zero-shot row of embedding '{of[0]}'; list "
                    f"that in run.embeddings instead (zeroshot.knn adds the row)"
                )
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
        raise ConfigError(
            f"config: speed.dataset '{speed['dataset']}' is not in run.datasets ({', '.join(run['datasets'])})"
        )
    files = {}
    for name in run["datasets"]:
        for f in remote_files(config["datasets"][name]["source"]):
            old = files.setdefault(f["filename"], f)
            if old != f:
                what = "URLs" if old["url"] != f["url"] else "settings (sha256, mirrors, version_id or as_of)"
                raise ConfigError(f"config: download file name '{f['filename']}' is used with two different {what}")
    check_models(config)


def check_zeroshot(config: dict, root: Path) -> None:
    """The zero-shot track: embedding methods runnable, the embedded split run on every dataset."""
    run = config["run"]
    for name in run["embeddings"]:
        _check_runnable("embedding", name, config["embeddings"][name], root)
    split = config["zeroshot"]["split"]
    if run["embeddings"] and split:
        for name in run["datasets"]:
            if split not in dataset_splits(config, name):
                raise ConfigError(
                    f"config: zeroshot.split '{split}' is not a split of dataset '{name}' "
                    f"({', '.join(dataset_splits(config, name))})"
                )


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


# ---- pretrained foundation models fetched by the workflow (config `models`) --------------------------------------

MODELS_DIR = "resources/models"


def check_models(config: dict) -> None:
    """Every method of the run that names a ``models`` entry names one that exists (one-line ConfigError)."""
    for name in config["run"]["methods"]:
        model = config["methods"][name].get("model")
        if model and model not in config.get("models", {}):
            raise ConfigError(
                f"config: method '{name}' uses model '{model}', which is not in `models` "
                f"(known: {', '.join(sorted(config.get('models', {}))) or 'none'})"
            )


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
        reason = (
            "" if method in config["methods"] else f"method {method!r} is not in the method registry (config methods)"
        )
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


def archive_members(config: dict) -> dict[str, list[str]]:
    """Archive file name -> the members that the datasets of this run extract from it (one pass per archive)."""
    out: dict[str, set] = {}
    for name in config["run"]["datasets"]:
        src = config["datasets"][name]["source"]
        if src["kind"] == "archive":
            out.setdefault(src["filename"], set()).add(src["member"])
    return {k: sorted(v) for k, v in out.items()}


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


def zeroshot_rows(config: dict) -> dict:
    """The zero-shot rows of the run's embedding methods, as the method registry declares them
    (cellplm/bench/methods/zeroshot.yaml); none when zeroshot.knn is off."""
    from . import methods

    knn = config["zeroshot"]["knn"]
    if not knn["enabled"]:
        return {}
    return methods.zeroshot_rows({e: config["embeddings"][e] for e in config["run"]["embeddings"]}, knn["k"])


CONTEXT_OF = "cellplm"  # the embedding method whose rows zeroshot.sentence_policies adds


def sentence_policy_embeddings(config: dict) -> dict:
    """The tissue-context rows of the zero-shot track: for each policy of ``zeroshot.sentence_policies``, a variant of
    the ``cellplm`` embedding method (id ``cellplm_<policy>``, e.g. ``cellplm_random16``) that runs its code with
    params ``sentences: <policy>`` (``folder``: the code's folder, which marks the row as a variant). None when
    ``cellplm`` is not in run.embeddings; its own row is the batch policy."""
    from ..sentence_policy import SentencePolicy

    if CONTEXT_OF not in config["run"]["embeddings"]:
        return {}
    base = config["embeddings"][CONTEXT_OF]
    out = {}
    for text in config["zeroshot"]["sentence_policies"]:
        try:
            policy = SentencePolicy.parse(text)
        except ValueError as e:
            raise ConfigError(f"config: zeroshot.sentence_policies: {e}") from None
        if policy.kind == "batch":
            continue  # the cellplm row itself
        spec = deep_update(base, {"params": {"sentences": str(policy)}})
        spec.update(label=f"{base['label']} ({policy})", folder=CONTEXT_OF)
        out[f"{CONTEXT_OF}_{policy.slug}"] = spec
    return out


def complete_config(config: dict, root: Path) -> dict:
    """The config as the rules read it, completed in place: the method and embedding registries (every folder's
    metadata updated by the config's ``methods`` and ``embeddings`` sections), validated against the schema (which
    fills its defaults), the sentence-policy rows of the ``cellplm`` embedding added to the run
    (:func:`sentence_policy_embeddings`), checked (:func:`check_config`, ConfigError), and the run's zero-shot rows
    joined to the method registry (:func:`zeroshot_rows`), so that they are scored and tabulated like every method."""
    from snakemake.utils import validate

    config["methods"] = method_registry(config.get("methods"))
    config["embeddings"] = embedding_registry(config.get("embeddings"))
    validate(config, schema=str(Path(root) / SCHEMA))
    variants = sentence_policy_embeddings(config)
    config["embeddings"].update(variants)
    run = config["run"]["embeddings"]
    if variants:  # beside the cellplm row
        at = run.index(CONTEXT_OF) + 1
        run[at:at] = [v for v in variants if v not in run]
    check_config(config, root)
    config["methods"].update(zeroshot_rows(config))
    return config


def method_batches(config: dict, by_env: bool = True) -> dict[str, list[str]]:
    """The batch jobs of a run: the run's methods with ``batch: true``, grouped by what their jobs share: the
    interpreter (``python``), the threads (``OMP_NUM_THREADS`` of the job, so that each run computes as it would in a
    job of its own) and, with ``by_env`` (runs with --use-conda), the conda env. A batch job runs all its methods and
    seeds on one dataset split in one process; every other method runs in a job per seed. Each group is named after
    its first method's env (``classic``), with ``_t<threads>`` or a number added when that name is taken.
    ``batch`` is ignored for a method with ``gpu: true`` (a GPU job runs one model and seed: rule run_method_gpu,
    e.g. when a config turns a demo method's GPU on). ConfigError for a batched method with a ``script`` (it has no
    runner to share)."""
    return _batches(config, "methods", by_env)


def embedding_batches(config: dict, by_env: bool = True) -> dict[str, list[str]]:
    """The same for the run's embedding methods (``embeddings`` entries with ``batch: true``, the sentence-policy rows
    with their ``cellplm``): a batch job embeds a dataset's cells with all its members in one process (rule
    embed_batch_<name>); every other embedding method runs in a job of its own."""
    return _batches(config, "embeddings", by_env)


def _batches(config: dict, section: str, by_env: bool) -> dict[str, list[str]]:
    groups: dict[tuple, list[str]] = {}
    for m in config["run"][section]:
        spec = config[section][m]
        if not spec.get("batch") or spec["gpu"]:
            continue
        if spec.get("script"):
            raise ConfigError(
                f"{section}.{m}: batch: true needs an `entry` (a script of its own runs in a job per seed)"
            )
        key = (spec.get("python"), spec["threads"], spec["env"] if by_env else None)
        groups.setdefault(key, []).append(m)
    out = {}
    for (_, threads, _), members in groups.items():
        name = Path(config[section][members[0]]["env"]).stem.replace("-", "_")
        for candidate in (name, f"{name}_t{threads}", *(f"{name}_{i}" for i in range(2, len(groups) + 2))):
            if candidate not in out:
                out[candidate] = members
                break
    return out


def method_command(method_id: str, method: dict, package: str = "methods") -> str:
    """What follows the interpreter on a method (or, with ``package="embeddings"``, embedding method) job's command
    line: its own ``script``, or the package's runner on the entry's code folder (``folder``: a variant such as
    ``cellplm_single`` runs ``cellplm``'s code and records its own id, ``--as``)."""
    if method.get("script"):
        return method["script"]
    folder = method.get("folder") or method_id
    return f"-m cellplm.bench.{package} {folder}" + (f" --as {method_id}" if folder != method_id else "")


def method_params(method: dict, param_set: str) -> dict:
    params = dict(method.get("params") or {})
    if param_set == "test":
        params.update(method.get("test_params") or {})
    return params


def method_python(python: str | None, root: Path) -> str:
    """Interpreter of a method script: the method's ``python`` key, or ``python`` on PATH when it is null.

    A relative path (``.venv-scgpt/bin/python``) is taken from the workflow root, and given relative to the
    working directory when it lies inside it; a bare name is looked up on PATH. A path that does not exist falls
    back to ``python`` on PATH, with one warning: the method's script then records a failed row saying which
    environment to build, and the rest of the workflow runs.
    """
    if not python:
        return "python"
    path = Path(python)
    if not path.is_absolute():
        if len(path.parts) == 1:
            return python
        path = Path(root) / path
    if path.exists():
        # as the job's shell sees it: relative to the working directory when inside it, so that a copied or moved
        # workflow folder keeps its jobs' params (Snakemake would rerun every job whose interpreter path changed)
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    if str(path) not in _MISSING_PYTHON:
        _MISSING_PYTHON.add(str(path))
        print(
            f"WARNING: interpreter {path} not found (a method's `python` key); its jobs use `python` on PATH",
            file=sys.stderr,
        )
    return "python"


_MISSING_PYTHON: set[str] = set()
