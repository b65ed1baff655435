"""Resumable, retried, verified downloads, each through its service's public contract.

A source is named by a URL:

- ``http(s)://...``: fetched here (urllib), optionally with ``mirrors`` tried in order. Only an answer of 200 or
  206 with a non-empty body that is not an HTML page (by its Content-Type, or by its first bytes whatever the
  Content-Type: :func:`.services.looks_like_html`) is data; anything else (figshare's bot challenge answers an
  empty 202 or a 403, Dropbox and Google Drive answer HTML pages) is a refusal that moves on to the next mirror and
  finally ends in one line naming the service and what to do. Redirects are followed; a host that ignores HTTP
  Range requests (Dropbox's content host) makes a resumed transfer start again from the first byte.
- ``gdrive://<file id>``: Google Drive, through ``gdown`` (:mod:`.services`), which answers Drive's large-file
  confirmation form; ``timeout`` reaches it too (gdown's own default waits forever).
- ``cellxgene://<dataset id or dataset version id>``: CELLxGENE Discover, resolved to one dataset version through
  the curation API (:mod:`.services`), pinned by ``version_id`` or chosen by ``as_of``, then fetched from the
  public datasets host; its ``cell_count`` is checked against the file.

The file is written to a hidden ``.part`` file beside its destination and renamed into place only after its
sha256 has been checked: against the checksum in the config when one is given, otherwise against the checksum
recorded in the manifest by the first successful download (which later runs then verify). The manifest also
records the version a service resolved (a CELLxGENE dataset version id), which later runs reuse: a lock, like
the checksum. A refusal, an HTTP error or a checksum mismatch removes the partial file and raises
:class:`DownloadError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import time
import urllib.error
import urllib.parse
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from ...checksum import sha256_file
from ..errors import DISK_FULL, UNWRITABLE, DownloadError
from .services import ENDPOINTS, check_cell_count, gdrive_download, looks_like_html, open_url, resolve, service_name

CHUNK = 1 << 20
# No retry can change these answers; the next mirror may.
PERMANENT_HTTP = {400, 401, 403, 404, 405, 410, 451}
HTML_PAGE = "an HTML page instead of the file (a login, preview, quota or confirmation page)"


class Manifest:
    """A TSV of first downloads (filename, url, sha256, bytes, version, recorded), safe under parallel jobs.

    ``version`` is what the service resolved (e.g. a CELLxGENE dataset version id); empty for plain files.
    """

    COLUMNS = ("filename", "url", "sha256", "bytes", "version", "recorded")

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
        lines = self.path.read_text().splitlines()
        header = lines[0].split("\t") if lines else list(self.COLUMNS)
        rows = {}
        for line in lines[1:]:
            if line.strip():
                row = {c: "" for c in self.COLUMNS} | dict(zip(header, line.split("\t")))
                rows[row["filename"]] = row
        return rows

    def row(self, filename: str) -> dict | None:
        with self._locked():
            return self._read().get(filename)

    def get(self, filename: str) -> str | None:
        """The recorded sha256 of ``filename``, or None."""
        row = self.row(filename)
        return row["sha256"] if row else None

    def record(self, filename: str, url: str, digest: str, size: int, version: str = "") -> None:
        with self._locked():
            rows = self._read()
            rows[filename] = dict(
                filename=filename,
                url=url,
                sha256=digest,
                bytes=str(size),
                version=version or "",
                recorded=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            text = "\t".join(self.COLUMNS) + "\n"
            text += "".join("\t".join(r[c] for c in self.COLUMNS) + "\n" for r in rows.values())
            tmp = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
            tmp.write_text(text)
            os.replace(tmp, self.path)


class _Corrupt(Exception):
    """A transfer that looks whole but is not (a cut-off zip container)."""


class Refused(Exception):
    """The server answered, but not with the file (status, empty body, HTML page); ``url``: who answered."""

    def __init__(self, reason: str, url: str):
        super().__init__(reason)
        self.url = url


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _reason(e: Exception) -> str:
    return str(getattr(e, "reason", None) or e) or type(e).__name__


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part``; raises on any failure, leaving ``part`` for a resume."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        r = open_url(url, headers, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range not satisfiable: the partial file is already complete (or wrong)
            return
        raise
    with r:
        if r.status not in (200, 206):  # 202: figshare's bot challenge (empty); 203/204: no file either
            raise Refused(
                f"HTTP {r.status} {r.reason}"
                + (
                    " with an empty body"
                    if not r.headers.get("Content-Length") or r.headers.get("Content-Length") == "0"
                    else ""
                ),
                r.url,
            )
        if have and r.status != 206:  # the server ignored the range (e.g. Dropbox's content host): start over
            have = 0
        ctype = r.headers.get("Content-Type", "")
        if ctype.startswith("text/html"):
            raise Refused(HTML_PAGE, r.url)
        length = r.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        mode = "ab" if have else "wb"
        with (
            open(part, mode) as out,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=part.name.removesuffix(".part").lstrip("."),
                disable=not progress,
                mininterval=2,
            ) as bar,
        ):
            while block := r.read(CHUNK):
                out.write(block)
                bar.update(len(block))
        got = part.stat().st_size
        if total is not None and got < total:
            raise http.client.IncompleteRead(b"", total - got)
        if got == 0:
            raise Refused(f"HTTP {r.status} with an empty body", r.url)
        if looks_like_html(part):  # the file's first bytes, also when this transfer resumed it
            raise Refused(f"{HTML_PAGE}, sent as {ctype or 'no Content-Type'}", r.url)


def _download_url(
    url: str, part: Path, dest: Path, retries: int, timeout: float, backoff: float, progress: bool
) -> None:
    """One candidate URL, retried and resumed; Refused/DownloadError when it cannot give the file."""
    attempt = 0
    while True:
        try:
            _transfer(url, part, timeout, progress)
            _check_complete(part)
            return
        except urllib.error.HTTPError as e:
            if e.code in PERMANENT_HTTP or attempt >= retries:
                part.unlink(missing_ok=True)
                raise Refused(f"HTTP {e.code} {e.reason}", e.url or url) from None
        except Refused:
            part.unlink(missing_ok=True)
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            if getattr(e, "errno", None) in DISK_FULL + UNWRITABLE:  # the local disk, not the network: no retry
                raise DownloadError(
                    f"{part}: cannot write the download ({e.strerror}); the {_size(part)} bytes already fetched are "
                    f"kept: free space or fix permissions, then rerun to resume"
                ) from None
            if attempt >= retries:
                raise DownloadError(
                    f"{url}: {service_name(url)} download failed after {retries + 1} attempts ({_reason(e)}); "
                    f"rerun to resume from {_size(part)} bytes"
                ) from None
        except _Corrupt as e:  # a whole-looking transfer that is not: fetch it again from the first byte
            part.unlink(missing_ok=True)
            if attempt >= retries:
                raise DownloadError(f"{url}: {e} after {retries + 1} attempts; nothing was saved to {dest}") from None
        attempt += 1
        time.sleep(backoff * attempt)


def _check_complete(part: Path) -> None:
    """A zip container (torch.save checkpoints) must be whole: a cut-off transfer without Content-Length (a
    known failure of scripted Dropbox downloads) is caught here, not at load time."""
    with open(part, "rb") as fh:
        if fh.read(2) != b"PK":
            return
    try:
        with zipfile.ZipFile(part) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise _Corrupt(f"incomplete or corrupt zip container ({e})") from None
    if bad is not None:
        raise _Corrupt(f"corrupt zip member {bad}")


def _refusal_message(dest: Path, url: str, refusals: list[tuple[str, str]]) -> str:
    said = "; ".join(f"{service_name(u)} {urllib.parse.urlsplit(u).netloc or u}: {why}" for u, why in refusals)
    return (
        f"{dest.name}: no source gave the file ({said}); nothing was saved. Download {url} in a browser, save it "
        f"as {dest}, and rerun (its sha256 is then recorded with the results)"
    )


def fetch(
    url: str,
    dest,
    sha256: str | None = None,
    manifest: Manifest | None = None,
    mirrors: list[str] | tuple = (),
    version_id: str | None = None,
    as_of: str | None = None,
    retries: int = 4,
    timeout: float = 60,
    backoff: float = 2.0,
    progress: bool = True,
    endpoints: dict | None = None,
) -> dict:
    """Download ``url`` (or its first mirror that gives the file) to ``dest``: resumable, retried, verified,
    atomic. Returns a provenance record (service, version, URL used, sha256, bytes, what it was verified against)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    endpoints = {**ENDPOINTS, **(endpoints or {})}
    locked = manifest.row(dest.name) if manifest else None
    resolved = resolve(
        url,
        mirrors,
        version_id=version_id,
        as_of=as_of,
        locked_version=(locked or {}).get("version") or None,
        endpoints=endpoints,
        timeout=timeout,
    )
    recorded = locked if locked and (locked.get("version") or "") == resolved.version else None
    expected = sha256.lower() if sha256 else (recorded["sha256"] if recorded else None)
    if url.startswith("gdrive://"):
        used = gdrive_download(resolved.urls[0], part, dest, retries=retries, timeout=timeout, progress=progress)
    else:
        refusals = []
        for candidate in resolved.urls:
            try:
                _download_url(candidate, part, dest, retries, timeout, backoff, progress)
                used = candidate
                break
            except Refused as e:
                refusals.append((e.url, str(e)))
        else:
            raise DownloadError(_refusal_message(dest, resolved.urls[0], refusals))
    digest = sha256_file(part)
    if expected and digest != expected:
        part.unlink(missing_ok=True)
        source = "config" if sha256 else f"manifest {manifest.path}"
        raise DownloadError(
            f"{dest}: sha256 mismatch (got {digest}, expected {expected} from {source}); the download was deleted"
        )
    if resolved.expected_cells is not None:
        check_cell_count(part, resolved.expected_cells, dest, resolved)
    size = part.stat().st_size
    os.replace(part, dest)
    if manifest is not None and not recorded:
        manifest.record(dest.name, url, digest, size, resolved.version)
    return {
        "url": url,
        "resolved_url": used,
        "service": resolved.service,
        "version": resolved.version,
        "sha256": digest,
        "bytes": size,
        "detail": resolved.detail or {},
        "verified_against": "config" if sha256 else ("manifest" if expected else "recorded now"),
    }
