"""Checkpoints in the upstream format: ``<prefix>.config.json`` plus ``<prefix>.best.ckpt``.

The ``.ckpt`` file is a ``torch.save`` dict with the weights under ``model_state_dict``; training checkpoints
written here add optimizer, scheduler and RNG state under other keys, which upstream ignores.

Loading reports every key: loaded, new in this task (e.g. the annotation head, expected), unused by this task
(e.g. the decoder when embedding, expected), and anything else. A shape mismatch or a key that the task needs
but the file lacks means the file and the architecture disagree: that is an error, never a silent random init.

A checkpoint is data, never code: it is read with ``torch.load(weights_only=True)``, which admits tensors and
plain containers only. A file whose pickle names any other Python object (which unpickling would call) is refused,
unless its sha256 is one the user trusts explicitly: the ``trusted_sha256`` argument of the loaders (the benchmark
passes its configured digests so), or, where a caller passes none, the environment variable
``CELLPLM_TRUSTED_SHA256`` (comma-separated digests; for a user of the command line). Such a file is then fully
unpickled, with a warning, and the returned dict says so under ``loaded_with``.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..checksum import sha256_file
from ..io import atomic_path, write_json
from .cellplm import CellPLM
from .config import CellPLMConfig

log = logging.getLogger(__name__)

CONFIG_SUFFIX = ".config.json"
WEIGHTS_SUFFIX = ".best.ckpt"
TRUST_ENV = "CELLPLM_TRUSTED_SHA256"
# What torch's weights-only unpickler names when it refuses a pickle (torch 2.6+: "GLOBAL x.y"; 2.3: "class x.y")
REFUSED_GLOBAL = re.compile(r"(?:GLOBAL|Unsupported class) ([\w.]+)")

# Keys a task creates fresh (not in a pretrained checkpoint) and keys it does not use.
_NEW = {"annotation": ("latent.layers.1.lat_2lat.", "head.")}
_UNUSED = {
    "annotation": ("decoder.", "latent.layers.1.inference."),
    "embedder": ("decoder.",),
}


@dataclass
class LoadReport:
    path: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)  # initialised fresh, as the task intends
    unused: list[str] = field(default_factory=list)  # in the file, not needed by the task
    missing: list[str] = field(default_factory=list)  # needed by the task, absent from the file
    unexpected: list[str] = field(default_factory=list)  # in the file, unknown to the architecture
    mismatched: list[str] = field(default_factory=list)  # "key: file shape vs model shape"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} loaded", f"{len(self.new)} new", f"{len(self.unused)} unused"]
        for name in ("missing", "unexpected", "mismatched"):
            if getattr(self, name):
                parts.append(f"{len(getattr(self, name))} {name}")
        return f"{self.path}: " + ", ".join(parts)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("path", "loaded", "new", "unused", "missing", "unexpected", "mismatched")}


def checkpoint_paths(prefix: str | Path) -> tuple[Path, Path]:
    """``prefix`` may be the common prefix, the ``.ckpt`` file or the ``.config.json`` file."""
    prefix = str(prefix)
    for suffix in (WEIGHTS_SUFFIX, CONFIG_SUFFIX):
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
    return Path(prefix + CONFIG_SUFFIX), Path(prefix + WEIGHTS_SUFFIX)


def trusted_digests(trusted_sha256: Collection[str] | None = None) -> set[str]:
    """The sha256 digests whose files may be fully unpickled: the argument, else ``$CELLPLM_TRUSTED_SHA256``."""
    if trusted_sha256 is None:
        trusted_sha256 = os.environ.get(TRUST_ENV, "").split(",")
    return {d.strip().lower() for d in trusted_sha256 if d and d.strip()}


def read_checkpoint(path: str | Path, trusted_sha256: Collection[str] | None = None) -> dict:
    """The dict stored in a ``.ckpt`` file, on the CPU whatever device it was saved from.

    Only tensors and plain containers are unpickled; see the module docstring for files that hold more.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint file not found")
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic not in (b"PK", b"\x80\x02"):  # torch.save's zip container, or a legacy pickle
        raise InputError(path, "not a PyTorch checkpoint (neither a torch.save zip nor a pickle)")
    try:
        # mmap: tensors are read when used, so a caller after the metadata only does not read 330 MB
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=magic == b"PK")
    except pickle.UnpicklingError as err:
        blob = _read_trusted(path, err, trusted_digests(trusted_sha256))
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise InputError(
            path, f"not a readable PyTorch checkpoint, truncated or corrupt ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(blob, dict) or "model_state_dict" not in blob:
        raise InputError(path, "no 'model_state_dict' in the checkpoint (expected the upstream CellPLM format)")
    return blob


def _read_trusted(path: Path, err: pickle.UnpicklingError, trusted: set[str]) -> dict:
    """A file that ``weights_only`` refused: fully unpickled only when its sha256 is trusted, else InputError."""
    if "Weights only load failed" not in str(err):
        raise InputError(path, f"not a readable PyTorch checkpoint ({str(err).splitlines()[0]})") from None
    name = REFUSED_GLOBAL.search(str(err))
    what = f"the Python object {name.group(1)}" if name else "Python objects beyond tensors"
    digest = sha256_file(path)
    if digest not in trusted:
        raise InputError(
            path,
            f"refused: its pickle calls {what}, and unpickling it could run code; load only "
            f"checkpoints you trust, and to trust this one add its sha256 {digest} to "
            f"{TRUST_ENV} (or cellplm.checkpoint.trusted_sha256)",
        )
    log.warning("%s holds %s; fully unpickled because its sha256 %s is trusted", path, what, digest)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err2:  # noqa: BLE001 - any unpickling failure means an unreadable file
        raise InputError(path, f"not a readable PyTorch checkpoint ({type(err2).__name__}: {err2})") from None
    if isinstance(blob, dict):
        blob["loaded_with"] = f"full unpickle (trusted sha256 {digest})"
    return blob


def _task(config: CellPLMConfig) -> str:
    return config.head_type or "pretrain"


def load_state(model: CellPLM, state: dict, path: str | Path) -> LoadReport:
    """Load a state dict into ``model`` with a full key report; raise :class:`InputError` on disagreement."""
    task = _task(model.config)
    new_prefixes, unused_prefixes = _NEW.get(task, ()), _UNUSED.get(task, ())
    own = model.state_dict()
    report = LoadReport(path=str(path))
    usable = {}
    for key, value in state.items():
        if key in own:
            if tuple(value.shape) != tuple(own[key].shape):
                report.mismatched.append(f"{key}: file {list(value.shape)} vs model {list(own[key].shape)}")
            else:
                usable[key] = value
                report.loaded.append(key)
        elif key.startswith(unused_prefixes):
            report.unused.append(key)
        else:
            report.unexpected.append(key)
    for key in own:
        if key not in state:
            (report.new if key.startswith(new_prefixes) else report.missing).append(key)
    if not report.ok:
        details = (
            report.mismatched[:3]
            + [f"missing {k}" for k in report.missing[:3]]
            + [f"unexpected {k}" for k in report.unexpected[:3]]
        )
        raise InputError(path, "the weights do not fit the architecture of its config (" + "; ".join(details) + ")")
    model.load_state_dict({**own, **usable}, strict=True)
    log.info("%s", report.summary())
    return report


def load_model(
    prefix: str | Path,
    task: str = "embedder",
    n_classes: int | None = None,
    config: CellPLMConfig | None = None,
    spatial_pe: bool | None = None,
    trusted_sha256: Collection[str] | None = None,
) -> tuple[CellPLM, LoadReport]:
    """Build the model for ``task`` ("embedder", "annotation" or "pretrain") from a checkpoint and load it.

    ``config`` overrides the checkpoint's own config file (e.g. to continue a task-specific model).
    ``trusted_sha256``: see :func:`read_checkpoint`.
    """
    config_path, weights_path = checkpoint_paths(prefix)
    base = config or CellPLMConfig.load(config_path)
    if task == "embedder":
        config = base.for_embedding()
    elif task == "annotation":
        if base.head_type == "annotation":
            config = base
        elif n_classes is None:
            raise ValueError("n_classes is needed to build the annotation model")
        else:
            config = base.for_annotation(n_classes)
    elif task == "pretrain":
        config = base.replace(head_type=None, latent_mod="gmvae")
    else:
        raise ValueError(f"unknown task {task!r}")
    if spatial_pe is not None:
        config = config.replace(spatial_pe=spatial_pe)
    blob = read_checkpoint(weights_path, trusted_sha256)
    _check_vocabulary(blob["model_state_dict"], config, weights_path)
    model = CellPLM(config)
    report = load_state(model, blob["model_state_dict"], weights_path)
    return model, report


def _check_vocabulary(state: dict, config: CellPLMConfig, path: Path) -> None:
    table = state.get("embedder.feat_enc.emb")
    if table is None:
        raise InputError(path, "no gene-embedding table (embedder.feat_enc.emb): not a CellPLM checkpoint")
    if table.shape[0] != config.n_genes:
        raise InputError(
            path,
            f"the gene-embedding table has {table.shape[0]} rows but the config's gene_list has "
            f"{config.n_genes} genes: config and weights disagree",
        )


def _plain(obj):
    """numpy scalars and arrays as Python numbers and tensors, so that the file loads with ``weights_only=True``."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    return obj


def save_checkpoint(model: CellPLM, prefix: str | Path, extra: dict | None = None) -> tuple[Path, Path]:
    """Write ``<prefix>.config.json`` and ``<prefix>.best.ckpt`` atomically (weights under ``model_state_dict``)."""
    config_path, weights_path = checkpoint_paths(prefix)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **_plain(extra or {})}
    # Through a file object: torch.save names the zip's records after a path's file name, which here would be the
    # temporary name with its process id, so identical weights would give different files.
    with atomic_path(weights_path) as tmp, open(tmp, "wb") as fh:
        torch.save(blob, fh)
    write_json(model.config.to_dict(), config_path)
    return config_path, weights_path
