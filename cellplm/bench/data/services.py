"""The download services, each by its public contract (where each was read is cited beside its code).

- **CELLxGENE Discover** (curation API, OpenAPI spec ``backend/curation/api/curation-api.yml`` in
  chanzuckerberg/single-cell-data-portal): ``GET /v1/datasets/{dataset_id}/versions`` lists every version of a
  dataset, newest first (a bare array in the current spec and code, ``{"datasets": [...]}`` in older ones: both
  are accepted), each with ``dataset_version_id``, ``published_at`` (ISO 8601), ``cell_count`` and ``assets``;
  ``GET /v1/dataset_versions/{dataset_version_id}`` is one version. There is no ``GET /v1/datasets/{dataset_id}``.
  The H5AD of a version is ``https://datasets.cellxgene.cziscience.com/{dataset_version_id}.h5ad``.
- **Google Drive**, through ``gdown`` (wkentaro/gdown 6.5.1, ``gdown/download.py``, ``gdown/download_folder.py``):
  a large file first answers an HTML warning page whose ``<form id="download-form">`` (hidden inputs ``id``,
  ``export``, ``confirm``, ``uuid``) must be resubmitted with the session's cookies; a quota page carries
  ``<p class="uc-error-subcaption">``. A public folder is listed from ``/embeddedfolderview?id=<folder id>``.
  gdown waits forever for a stalled server unless given ``timeout`` (see :func:`gdrive_download`).
- **Hugging Face**, through ``huggingface_hub.snapshot_download`` at a pinned commit (``revision``), with
  ``allow_patterns``: ``GET /api/models/{repo}/tree/{revision}?recursive=true``, then per file
  ``HEAD``/``GET /{repo}/resolve/{revision}/{path}`` (LFS files redirect to a CDN). The Hub's address is the
  config's endpoint, else the user's ``HF_ENDPOINT`` (a mirror), else huggingface.co (:func:`hf_endpoint`).
- Any body may be an HTML page (a login, preview, quota or confirmation page) whatever its Content-Type says:
  :func:`looks_like_html` sniffs the first bytes of every file, the way browsers do.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from ...checksum import sha256_file
from ..errors import DownloadError

GDRIVE_UC = "https://drive.google.com/uc?id={}"
USER_AGENT = "cellplm-bench/0.1 (+https://github.com/; benchmark data download)"
ENDPOINTS = {
    "cellxgene_api": "https://api.cellxgene.cziscience.com/curation/v1",
    "cellxgene_datasets": "https://datasets.cellxgene.cziscience.com",
}
# The Hugging Face Hub when neither the config (endpoints.huggingface) nor HF_ENDPOINT names one: huggingface_hub
# 2.4.0's own default (huggingface_hub/constants.py, _HF_DEFAULT_ENDPOINT).
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
# How much of a body is sniffed for an HTML page (the WHATWG MIME Sniffing Standard reads up to 1445 bytes; its
# HTML signatures all sit at the start, after whitespace).
SNIFF_BYTES = 512
# The HTML signatures of the WHATWG MIME Sniffing Standard (section 7.1, "identifying a resource with an unknown
# MIME type"): after leading whitespace, one of these (any case) followed by a space or ">"; we also accept the
# other whitespace bytes after it ("<html\n"), and skip a UTF-8 byte order mark.
HTML_SIGNATURES = (
    b"<!doctype html",
    b"<html",
    b"<head",
    b"<script",
    b"<iframe",
    b"<h1",
    b"<div",
    b"<font",
    b"<table",
    b"<a",
    b"<style",
    b"<title",
    b"<b",
    b"<body",
    b"<br",
    b"<p",
    b"<!--",
)
_WHITESPACE = b"\t\n\x0c\r "
# Host suffix -> the service's name in messages.
SERVICES = {
    "figshare.com": "figshare",
    "amazonaws.com": "figshare's file store (S3)",
    "dropbox.com": "Dropbox",
    "dropboxusercontent.com": "Dropbox",
    "cziscience.com": "CELLxGENE Discover",
    "10xgenomics.com": "10x Genomics",
    "github.com": "GitHub",
    "githubusercontent.com": "GitHub",
    "google.com": "Google Drive",
    "huggingface.co": "Hugging Face",
    "hf.co": "Hugging Face",
}


def service_name(url: str) -> str:
    """The service behind a URL, as messages name it (the host where none is known)."""
    if url.startswith("gdrive://"):
        return "Google Drive"
    if url.startswith("cellxgene://"):
        return "CELLxGENE Discover"
    host = urllib.parse.urlsplit(url).hostname or url
    return next((name for suffix, name in SERVICES.items() if host == suffix or host.endswith("." + suffix)), host)


def looks_like_html(path) -> bool:
    """Whether the file at ``path`` begins like an HTML page. Services answer a login, preview, quota or
    confirmation page in place of the file, not always as ``text/html`` (an ``application/octet-stream`` page would
    otherwise be saved as the data and its sha256 recorded as the reference); the one check for every download."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES).removeprefix(b"\xef\xbb\xbf").lstrip(_WHITESPACE).lower()
    return any(
        head.startswith(tag) and head[len(tag) : len(tag) + 1] in (b">", *(bytes([c]) for c in _WHITESPACE))
        for tag in HTML_SIGNATURES
    )


def open_url(url: str, headers: dict | None = None, timeout: float = 60):
    """urllib with this project's user agent; proxies and CA bundle from the environment at each call."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    return urllib.request.build_opener().open(req, timeout=timeout)


@dataclass
class Resolved:
    """Where a source's bytes come from after its service resolved it."""

    urls: list[str]  # candidates, tried in order (mirrors)
    service: str
    version: str = ""  # the service's version of the data, recorded in the manifest and reused
    expected_cells: int | None = None  # checked against the file (CELLxGENE's cell_count)
    detail: dict | None = None  # what the service said, for the provenance record


def resolve(
    url: str, mirrors=(), *, version_id=None, as_of=None, locked_version=None, endpoints: dict, timeout: float = 60
):
    """The candidate URLs (and version) behind a source URL; see :mod:`.download`."""
    if url.startswith("cellxgene://"):
        return cellxgene_resolve(
            url.removeprefix("cellxgene://").strip("/"),
            version_id=version_id,
            as_of=as_of,
            locked_version=locked_version,
            endpoints=endpoints,
            timeout=timeout,
        )
    if url.startswith("gdrive://"):
        file_id = url.removeprefix("gdrive://").strip("/")
        return Resolved(urls=[GDRIVE_UC.format(file_id)], service="Google Drive", detail={"file_id": file_id})
    return Resolved(urls=[url, *mirrors], service=service_name(url))


# ---- CELLxGENE Discover ----------------------------------------------------------------------------------------


def _get_json(url: str, timeout: float):
    try:
        with open_url(url, {"Accept": "application/json"}, timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError:  # the callers name what the status means
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DownloadError(f"{url}: CELLxGENE curation API did not answer ({getattr(e, 'reason', e)})") from None


def _published(version: dict) -> date | None:
    value = version.get("published_at") or version.get("revised_at")
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).date()


def cellxgene_versions(dataset_id: str, api: str, timeout: float = 60) -> list[dict]:
    """Every version of a dataset, newest first (``GET /datasets/{dataset_id}/versions``)."""
    url = f"{api.rstrip('/')}/datasets/{dataset_id}/versions"
    try:
        body = _get_json(url, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise DownloadError(f"{url}: CELLxGENE knows no dataset {dataset_id} (HTTP 404)") from None
        raise DownloadError(f"{url}: CELLxGENE dataset {dataset_id} lookup failed (HTTP {e.code})") from None
    versions = body.get("datasets", []) if isinstance(body, dict) else body
    if not isinstance(versions, list) or not versions:
        raise DownloadError(f"{url}: CELLxGENE lists no version of dataset {dataset_id}")
    return versions


def cellxgene_version(version_id: str, api: str, timeout: float = 60) -> dict:
    """One dataset version (``GET /dataset_versions/{dataset_version_id}``)."""
    url = f"{api.rstrip('/')}/dataset_versions/{version_id}"
    try:
        body = _get_json(url, timeout)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: CELLxGENE dataset version {version_id} lookup failed (HTTP {e.code})") from None
    return body[0] if isinstance(body, list) and body else body


def pick_version(versions: list[dict], version_id=None, as_of=None, where: str = "") -> dict:
    """The pinned version, else the newest published on or before ``as_of``, else the newest."""
    if version_id:
        hit = [v for v in versions if v.get("dataset_version_id") == version_id]
        if not hit:
            raise DownloadError(
                f"{where}: no version {version_id} (listed: "
                + ", ".join(str(v.get("dataset_version_id")) for v in versions)
                + ")"
            )
        return hit[0]
    if as_of:
        limit = date.fromisoformat(str(as_of))
        dated = [(d, v) for v in versions if (d := _published(v)) is not None and d <= limit]
        if not dated:
            first = min((d for v in versions if (d := _published(v))), default=None)
            raise DownloadError(
                f"{where}: no version was published on or before {limit} (the oldest listed is "
                f"from {first}); set version_id or a later as_of"
            )
        return max(dated, key=lambda dv: dv[0])[1]
    return versions[0]


def cellxgene_resolve(
    ident: str, *, version_id=None, as_of=None, locked_version=None, endpoints: dict, timeout: float = 60
):
    """A CELLxGENE source: dataset id (with ``version_id``/``as_of``, or the version locked in the manifest) or a
    dataset version id alone, to the URL of that version's H5AD and its cell count."""
    api = endpoints["cellxgene_api"]
    try:
        versions = cellxgene_versions(ident, api, timeout)
        named = False
    except DownloadError as unknown:  # not a dataset id: perhaps a dataset version id (one version)
        try:
            versions = [cellxgene_version(ident, api, timeout)]
        except DownloadError:
            versions = [{}]
        if versions[0].get("dataset_version_id") != ident:
            raise DownloadError(
                f"{unknown}, nor a dataset version {ident}: check the id on https://cellxgene.cziscience.com/datasets"
            ) from None
        named, version_id, locked_version, as_of = True, ident, None, None
    pin = version_id or locked_version
    how = (
        "the id names this dataset version"
        if named
        else "pinned by version_id"
        if version_id
        else "locked in the manifest"
        if locked_version
        else f"newest published on or before {as_of}"
        if as_of
        else "newest"
    )
    if locked_version and not any(v.get("dataset_version_id") == locked_version for v in versions):
        versions = versions + [cellxgene_version(locked_version, api, timeout)]
    chosen = pick_version(versions, pin, None if pin else as_of, where=f"CELLxGENE dataset {ident}")
    vid = chosen["dataset_version_id"]
    url = f"{endpoints['cellxgene_datasets'].rstrip('/')}/{vid}.h5ad"
    cells = chosen.get("cell_count")
    detail = {
        "dataset_id": chosen.get("dataset_id", ident),
        "dataset_version_id": vid,
        "chosen": how,
        "published_at": chosen.get("published_at"),
        "cell_count": cells,
        "schema_version": chosen.get("schema_version"),
        "n_versions_listed": len(versions),
    }
    return Resolved(
        urls=[url],
        service="CELLxGENE Discover",
        version=vid,
        expected_cells=int(cells) if cells is not None else None,
        detail=detail,
    )


def check_cell_count(path: Path, expected: int, dest: Path, resolved) -> None:
    """The downloaded H5AD holds the number of cells the service announced (else it is removed)."""
    import hdf5plugin  # noqa: F401 - any HDF5 filter the file may use

    from ..io import h5ad_n_obs

    try:
        n = h5ad_n_obs(path)
    except Exception as e:  # noqa: BLE001 - unreadable is the same failure
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{dest}: the download is not a readable h5ad ({type(e).__name__}: {e}); it was deleted"
        ) from None
    if n != expected:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{dest}: {n} cells, but {resolved.service} announces {expected} for version "
            f"{resolved.version}; the download was deleted"
        )


# ---- Google Drive (gdown) ---------------------------------------------------------------------------------------


def _gdown_error(what: str, err: Exception, manual: str) -> DownloadError:
    said = " ".join(str(err).split())  # gdown's messages span several lines
    return DownloadError(f"{what}: Google Drive did not give the file ({said}); {manual}")


def _drop_empty_partials(paths) -> None:
    """Remove those of gdown's partial files (``paths``) that are empty: nothing to resume. gdown 6.5.1 writes a
    transfer to ``<output><8 random characters>.part`` beside its output (``gdown/download.py``,
    ``_prepare_partial_file``); one with bytes is kept, and the next run resumes it (``resume=True``), as it does a
    plain-HTTP ``.part`` file."""
    for partial in paths:
        if partial.is_file() and partial.stat().st_size == 0:
            partial.unlink(missing_ok=True)


def gdrive_download(
    url: str, part: Path, dest: Path, retries: int = 4, timeout: float = 60, progress: bool = True
) -> str:
    """Download one Drive file into ``part`` with gdown (confirmation form, cookies, resume).

    ``timeout``: seconds without data before an attempt fails. gdown 6.5.1 waits forever by default
    (``gdown/download.py`` line 726: ``timeout: float | tuple[float, float] | None = None``, documented at lines
    784-787 "Default is None, which waits forever"). The value reaches the one ``sess.get(..., stream=True,
    timeout=timeout)`` of ``_get_response_with_retries`` (lines 340-346) through ``_get_download_response`` (line
    410) and the body reads of ``_iter_response_chunks`` (lines 576, 680), where a stalled read raises a requests
    ``ConnectionError``/``Timeout`` (caught at lines 614-618) that is retried ``retries`` times (``_wait_for_retry``,
    lines 307-322, a random back-off of at most min(2**attempt, 30) s) and then raised.
    """
    import gdown
    import requests

    staging = part.with_name(part.name + ".gdown")  # gdown renames its own .part files into this name
    staging.unlink(missing_ok=True)
    manual = f"download {url} in a browser, save it as {dest}, and rerun (its sha256 is then recorded with the results)"
    try:
        out = gdown.download(
            url=url, output=str(staging), quiet=not progress, resume=True, retries=retries, timeout=timeout
        )
    except (gdown.exceptions.DownloadError, requests.RequestException) as e:
        _drop_empty_partials(staging.parent.glob(glob.escape(staging.name) + "?" * 8 + ".part"))
        raise _gdown_error(dest.name, e, manual) from None
    if not out or not staging.exists() or staging.stat().st_size == 0:
        staging.unlink(missing_ok=True)
        raise DownloadError(f"{dest.name}: Google Drive gave an empty answer; {manual}")
    if looks_like_html(staging):
        staging.unlink(missing_ok=True)
        raise DownloadError(f"{dest.name}: Google Drive answered an HTML page, not the file; {manual}")
    os.replace(staging, part)
    return url


def gdrive_folder(
    folder_id: str, dest: Path, files: dict, manifest=None, retries: int = 4, timeout: float = 60, progress: bool = True
) -> dict:
    """Download the public Drive folder ``folder_id`` with ``gdown.download_folder`` into ``dest`` (atomically:
    a staging folder renamed into place), keeping ``files`` (name -> pinned sha256 or None), verified.

    ``timeout`` as in :func:`gdrive_download`: gdown 6.5.1 ``gdown/download_folder.py`` line 83 (``timeout=None``,
    documented at lines 124-127 "Default is None, which waits forever") passes it to the folder listing (line 178,
    then ``sess.get(url, verify=verify, timeout=timeout)`` at line 289) and to each file's ``download(...,
    timeout=timeout)`` (line 240)."""
    import gdown
    import requests

    url = f"https://drive.google.com/drive/folders/{folder_id}"
    manual = (
        f"download the files {', '.join(files)} from {url} in a browser into {dest}/ and rerun "
        "(the folder is then used as it is)"
    )
    staging = dest.with_name(f".{dest.name}.partial")
    staging.mkdir(parents=True, exist_ok=True)
    try:
        gdown.download_folder(
            id=folder_id, output=str(staging), quiet=not progress, resume=True, retries=retries, timeout=timeout
        )
    except (gdown.exceptions.DownloadError, requests.RequestException) as e:
        _drop_empty_partials(staging.rglob("*.part"))  # the staging folder is ours: every partial in it is gdown's
        with contextlib.suppress(OSError):
            staging.rmdir()  # only when nothing is left to resume
        raise _gdown_error(dest.name, e, manual) from None
    return _finish_tree(staging, dest, files, manifest, url, manual)


def fetch_model(
    spec: dict,
    dest,
    manifest=None,
    retries: int = 4,
    timeout: float = 60,
    endpoints: dict | None = None,
    progress: bool = True,
) -> dict:
    """One entry of the config's ``models``: its ``files`` from its ``source``, verified, into ``dest``.
    ``endpoints``: the config's ``download.endpoints`` (``huggingface``: see :func:`hf_endpoint`)."""
    source, files, dest = spec["source"], dict(spec["files"]), Path(dest)
    if source["kind"] == "gdrive_folder":
        return gdrive_folder(
            source["folder_id"], dest, files, manifest, retries=retries, timeout=timeout, progress=progress
        )
    if source["kind"] == "huggingface":
        return hf_snapshot(
            source["repo_id"], source["revision"], dest, files, (endpoints or {}).get("huggingface"), manifest
        )
    raise DownloadError(f"{dest}: unknown model source kind {source['kind']!r}")


# ---- Hugging Face (huggingface_hub) -----------------------------------------------------------------------------


def hf_endpoint(configured: str | None = None) -> str:
    """The Hugging Face Hub to ask: the config's ``download.endpoints.huggingface`` when given, else the user's
    ``HF_ENDPOINT`` (a mirror) when set, else huggingface.co.

    That is huggingface_hub's own rule (2.4.0, ``huggingface_hub/constants.py``: ``ENDPOINT =
    os.getenv("HF_ENDPOINT", _HF_DEFAULT_ENDPOINT).rstrip("/")``; ``snapshot_download``'s ``endpoint`` "Defaults to
    the value of `HF_ENDPOINT`"), with the config first. It is read here at each call, since huggingface_hub reads
    the variable once, when it is first imported; and named here, since messages and the manifest quote the URL."""
    return (configured or os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def hf_snapshot(
    repo_id: str, revision: str, dest: Path, files: dict, endpoint: str | None = None, manifest=None
) -> dict:
    """The ``files`` (repository path -> pinned sha256 or None) of ``repo_id`` at commit ``revision``, downloaded
    with ``huggingface_hub.snapshot_download`` into ``dest`` (a staging folder renamed into place), verified.
    ``endpoint``: the configured Hub, if any (:func:`hf_endpoint`)."""
    import huggingface_hub

    endpoint = hf_endpoint(endpoint)
    if not re.fullmatch(r"[0-9a-f]{40}", revision):
        raise DownloadError(
            f"{repo_id}: revision {revision!r} is not a commit sha (40 hex digits); pin a commit, since "
            "the repository's layout has been renamed before"
        )
    url = f"{endpoint}/{repo_id}/tree/{revision}"
    manual = f"download {', '.join(files)} from {url} into {dest}/ (same paths) and rerun"
    staging = dest.with_name(f".{dest.name}.partial")
    try:
        huggingface_hub.snapshot_download(
            repo_id=repo_id, revision=revision, allow_patterns=list(files), local_dir=str(staging), endpoint=endpoint
        )
    except Exception as e:  # noqa: BLE001 - HTTP answers, network and proxy failures alike: one line, manual route
        said = " ".join(str(e).split())[:300]
        raise DownloadError(
            f"{dest.name}: Hugging Face did not give {repo_id}@{revision[:12]} ({type(e).__name__}: {said}); {manual}"
        ) from None
    shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's own bookkeeping
    return _finish_tree(staging, dest, files, manifest, url, manual, version=revision)


def _finish_tree(staging: Path, dest: Path, files: dict, manifest, url: str, manual: str, version: str = "") -> dict:
    """Check that every wanted file arrived, verify each sha256 (pin, else manifest), record, rename into place."""
    record = {}
    missing = [name for name in files if not (staging / name).is_file()]
    if missing:
        raise DownloadError(f"{dest.name}: {url} did not provide {', '.join(missing)}; {manual}")
    for name, pinned in files.items():
        path = staging / name
        key = f"{dest.name}/{name}"
        digest = sha256_file(path)
        row = manifest.row(key) if manifest else None
        expected = (pinned or "").lower() or (row["sha256"] if row and row.get("version", "") == version else None)
        if expected and digest != expected:
            path.unlink()
            source = "config" if pinned else f"manifest {manifest.path}"
            raise DownloadError(
                f"{dest / name}: sha256 mismatch (got {digest}, expected {expected} from {source}); "
                "the download was deleted"
            )
        if manifest is not None and not (row and row["sha256"] == digest):
            manifest.record(key, url, digest, path.stat().st_size, version)
        record[name] = {
            "sha256": digest,
            "bytes": path.stat().st_size,
            "verified_against": "config" if pinned else ("manifest" if expected else "recorded now"),
        }
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(staging, dest)
    return {"url": url, "version": version, "files": record}
