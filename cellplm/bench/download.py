"""Resumable, retried, verified downloads.

A file is fetched into a hidden ``.part`` file beside its destination, resuming from where an earlier
attempt stopped (HTTP Range requests), and renamed into place only after its sha256 has been checked:
against the checksum in the config when one is given, otherwise against the checksum recorded in the
manifest by the first successful download (which later runs then verify). An HTTP error or a checksum
mismatch removes the partial file and raises :class:`DownloadError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from .errors import DISK_FULL, UNWRITABLE, DownloadError

CHUNK = 1 << 20
USER_AGENT = "cellplm-bench/0.1 (+https://github.com/; benchmark data download)"
PERMANENT_HTTP = {400, 401, 403, 404, 405, 410, 451}
CELLXGENE_API = "https://api.cellxgene.cziscience.com/curation/v1"


def sha256sum(path, chunk: int = CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class Manifest:
    """A TSV of first-download checksums (filename, url, sha256, bytes, recorded), safe under parallel jobs."""

    COLUMNS = ("filename", "url", "sha256", "bytes", "recorded")

    def __init__(self, path):
        self.path = Path(path)

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        rows = {}
        for line in self.path.read_text().splitlines()[1:]:
            if line.strip():
                row = dict(zip(self.COLUMNS, line.split("\t")))
                rows[row["filename"]] = row
        return rows

    def get(self, filename: str) -> str | None:
        with self._locked():
            row = self._read().get(filename)
        return row["sha256"] if row else None

    def record(self, filename: str, url: str, digest: str, size: int) -> None:
        with self._locked():
            rows = self._read()
            rows[filename] = dict(
                filename=filename, url=url, sha256=digest, bytes=str(size),
                recorded=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            text = "\t".join(self.COLUMNS) + "\n"
            text += "".join("\t".join(r[c] for c in self.COLUMNS) + "\n" for r in rows.values())
            tmp = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
            tmp.write_text(text)
            os.replace(tmp, self.path)


def resolve_url(url: str, api: str = CELLXGENE_API, timeout: float = 60) -> str:
    """Turn ``cellxgene://<dataset_id>`` into the dataset's current H5AD asset URL (curation API)."""
    if not url.startswith("cellxgene://"):
        return url
    dataset_id = url.removeprefix("cellxgene://").strip("/")
    meta_url = f"{api.rstrip('/')}/datasets/{dataset_id}"
    try:
        with _open(meta_url, timeout=timeout) as r:
            meta = json.load(r)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{meta_url}: CELLxGENE dataset {dataset_id} lookup failed (HTTP {e.code})") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{meta_url}: CELLxGENE lookup failed ({_reason(e)})") from None
    for asset in meta.get("assets", []):
        if str(asset.get("filetype", "")).upper() == "H5AD" and asset.get("url"):
            return asset["url"]
    raise DownloadError(f"{meta_url}: CELLxGENE dataset {dataset_id} lists no H5AD asset")


def _open(url: str, headers: dict | None = None, timeout: float = 60):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    return urllib.request.urlopen(req, timeout=timeout)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _reason(e: Exception) -> str:
    return str(getattr(e, "reason", None) or e) or type(e).__name__


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part``; raises on any failure, leaving ``part`` for a resume."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        r = _open(url, headers, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range not satisfiable: the partial file is already complete (or wrong)
            return
        raise
    with r:
        if have and r.status != 206:  # server ignored the range: start over
            have = 0
        ctype = r.headers.get("Content-Type", "")
        if ctype.startswith("text/html"):
            raise DownloadError(f"{url}: server sent an HTML page instead of the file (login, quota or confirmation page?)")
        length = r.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        mode = "ab" if have else "wb"
        with open(part, mode) as out, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=part.name.removesuffix(".part").lstrip("."),
            disable=not progress, mininterval=2,
        ) as bar:
            while block := r.read(CHUNK):
                out.write(block)
                bar.update(len(block))
        got = part.stat().st_size
        if total is not None and got < total:
            raise http.client.IncompleteRead(b"", total - got)


def fetch(
    url: str,
    dest,
    sha256: str | None = None,
    manifest: Manifest | None = None,
    retries: int = 4,
    timeout: float = 60,
    backoff: float = 2.0,
    progress: bool = True,
    cellxgene_api: str = CELLXGENE_API,
) -> dict:
    """Download ``url`` to ``dest`` (resumable, retried, verified, atomic). Returns a provenance record."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    real_url = resolve_url(url, cellxgene_api, timeout)
    expected = sha256.lower() if sha256 else (manifest.get(dest.name) if manifest else None)
    attempt = 0
    while True:
        try:
            _transfer(real_url, part, timeout, progress)
            break
        except urllib.error.HTTPError as e:
            if e.code in PERMANENT_HTTP or attempt >= retries:
                part.unlink(missing_ok=True)
                raise DownloadError(f"{real_url}: HTTP {e.code} {e.reason}; nothing was saved to {dest}") from None
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            if getattr(e, "errno", None) in DISK_FULL + UNWRITABLE:  # the local disk, not the network: no retry
                raise DownloadError(
                    f"{part}: cannot write the download ({e.strerror}); the {_size(part)} bytes already fetched are "
                    f"kept: free space or fix permissions, then rerun to resume") from None
            if attempt >= retries:
                raise DownloadError(
                    f"{real_url}: download failed after {retries + 1} attempts ({_reason(e)}); "
                    f"rerun to resume from {_size(part)} bytes"
                ) from None
        attempt += 1
        time.sleep(backoff * attempt)
    digest = sha256sum(part)
    if expected and digest != expected:
        part.unlink(missing_ok=True)
        source = "config" if sha256 else f"manifest {manifest.path}"
        raise DownloadError(
            f"{dest}: sha256 mismatch (got {digest}, expected {expected} from {source}); the download was deleted"
        )
    size = part.stat().st_size
    os.replace(part, dest)
    if not expected and manifest is not None:
        manifest.record(dest.name, url, digest, size)
    return {"url": url, "resolved_url": real_url, "sha256": digest, "bytes": size,
            "verified_against": "config" if sha256 else ("manifest" if expected else "recorded now")}
