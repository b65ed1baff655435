"""The CellPLM checkpoint plan: how a config obtains the checkpoint its CellPLM methods and embeddings use
(``cellplm.checkpoint``: a release in the authors' Dropbox folder, a URL, a local path, pretrained here, or none),
as plain paths the rules take as inputs and outputs, and the checks of that config section.

Standard library only: the Snakefile builds the plan while it parses the workflow. What a job then does with the
checkpoint (link, verify, load) is :mod:`.checkpoints`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from .config import dataset_splits, to_json
from .errors import ConfigError

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
        raise ConfigError(
            f"config: {where}.source is 'path' but {where}.prefix is not set (the checkpoint files are "
            f"<prefix>.config.json and <prefix>.best.ckpt)"
        )
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
        raise ConfigError(
            f"config: {where}.release {ck.get('release')!r} is not a released checkpoint ({', '.join(RELEASES)})"
        )
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
        shape, epochs, seed = pt.get("shape", "small"), pt.get("epochs", 10), pt.get("seed", 0)
        folder = f"results/cellplm/pretrained/{shape}_e{epochs}_seed{seed}_{tag}"
        out.kind, out.dir, out.prefix = "pretrained here", folder, f"{folder}/model"
        out.files = [f"{folder}/model{CKPT_CONFIG}", f"{folder}/model{CKPT_WEIGHTS}"]
        return out
    if source == "path":
        prefix = str(ck["prefix"])
        for suffix in (CKPT_WEIGHTS, CKPT_CONFIG):
            prefix = prefix.removesuffix(suffix)
        kind = (
            ck.get("kind") or ""
        )  # empty: the method infers it ("pretrained here" from our metadata, else user-supplied)
        name = ck.get("name") or Path(prefix).name
        config_src, weights_src = prefix + CKPT_CONFIG, prefix + CKPT_WEIGHTS
        missing = [
            p for p in (config_src, weights_src) if not (Path(p) if Path(p).is_absolute() else root / p).exists()
        ]
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
