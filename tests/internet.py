"""An emulated internet on 127.0.0.1 for the download tests: the public services, by their public contracts.

:class:`FakeInternet` is an HTTP proxy. Clients reach it through the standard proxy variables (``env``), so the
code under test uses the real public URLs (``https://drive.google.com/...``): for an ``https`` URL the proxy accepts
the ``CONNECT`` and terminates TLS itself with a certificate for that host, signed by a test CA (trustme) that the
clients trust through ``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE``; a plain ``http`` URL arrives in absolute form.
Requests sent to ``url`` directly (an endpoint configured to 127.0.0.1) go to the site named by ``direct_host``.

Each service is one function below that installs its routes, written from the service's public contract, which
its docstring cites; every request is logged in ``requests`` as (host, method, path with query, headers).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import trustme

HOSTS = (
    "drive.google.com",
    "drive.usercontent.google.com",
    "docs.google.com",
    "www.dropbox.com",
    "uc2f1e7a6b0d8c9.dl.dropboxusercontent.com",
    "ndownloader.figshare.com",
    "api.figshare.com",
    "s3-eu-west-1.amazonaws.com",
    "api.cellxgene.cziscience.com",
    "datasets.cellxgene.cziscience.com",
    "huggingface.co",
    "cdn-lfs.hf.co",
    "github.com",
    "raw.githubusercontent.com",
    "cf.10xgenomics.com",
)


@dataclass
class Response:
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    ranges: bool = True  # honour Range requests (206); False: always the whole body with 200
    cut_after: int | None = None  # drop the connection after this many body bytes
    stall: bool = False  # send the headers, then no byte of the body (until the emulation stops)


@dataclass
class Request:
    host: str
    method: str
    path: str  # without the query
    query: dict  # name -> last value
    headers: dict
    body: bytes = b""

    @property
    def target(self) -> str:
        return self.path + ("?" + urllib.parse.urlencode(self.query) if self.query else "")


class FakeInternet:
    def __init__(self, tmp_path, direct_host: str | None = None):
        self.routes: list[tuple[str, str, re.Pattern, object]] = []  # (host, method, path regex, handler)
        self.requests: list[tuple[str, str, str, dict]] = []
        self.direct_host = direct_host
        self.cuts: dict[tuple[str, str], int] = {}  # (host, path) -> connections still to drop
        self.stalled: list[float] = []  # time.monotonic() when each stalling response had sent its headers
        self.unstall = threading.Event()  # set on exit: stalled responses end (closing their connection)
        self.ca = trustme.CA()
        self.ca_file = tmp_path / "fake-internet-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert(*HOSTS).configure_cert(self._tls)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # ---- set-up ----------------------------------------------------------------------------------------------
    def route(self, host: str, pattern: str, handler, methods=("GET", "HEAD")):
        """``handler(Request) -> Response`` for ``host`` and paths matching ``pattern`` (full match)."""
        for method in methods:
            self.routes.insert(0, (host, method, re.compile(pattern), handler))

    def file(
        self,
        host: str,
        path: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        ranges: bool = True,
        headers: dict | None = None,
    ):
        self.route(
            host,
            re.escape(path),
            lambda req: Response(200, {"Content-Type": content_type, **(headers or {})}, data, ranges=ranges),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def env(self) -> dict:
        """Environment for clients: every request through this proxy, trusting its CA (urllib, requests, httpx)."""
        return {
            "http_proxy": self.url,
            "https_proxy": self.url,
            "HTTP_PROXY": self.url,
            "HTTPS_PROXY": self.url,
            "no_proxy": "",
            "NO_PROXY": "",
            "SSL_CERT_FILE": str(self.ca_file),
            "REQUESTS_CA_BUNDLE": str(self.ca_file),
            "CURL_CA_BUNDLE": str(self.ca_file),
        }

    def hits(self, host: str | None = None) -> list[str]:
        """Method and target of every request (to ``host``), in order."""
        return [f"{m} {p}" for h, m, p, _ in self.requests if host is None or h == host]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.unstall.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- serving ---------------------------------------------------------------------------------------------
    def answer(self, req: Request) -> Response:
        self.requests.append((req.host, req.method, req.target, req.headers))
        for host, method, pattern, handler in self.routes:
            if host == req.host and method == req.method and pattern.fullmatch(req.path):
                return handler(req)
        return Response(404, {"Content-Type": "text/html"}, b"<html><body>404 Not Found</body></html>")


def _proxy_handler(net: FakeInternet):
    class Site(BaseHTTPRequestHandler):
        """Serves decoded requests of one connection (inside a TLS tunnel, or plain)."""

        protocol_version = "HTTP/1.1"
        host = ""

        def log_message(self, *args):
            pass

        def _serve(self):
            target = self.path
            host = self.host
            if target.startswith("http://"):  # a plain-http request through the proxy: absolute form
                parts = urllib.parse.urlsplit(target)
                host, target = parts.hostname, parts.path + ("?" + parts.query if parts.query else "")
            elif not host:
                host = net.direct_host or self.headers.get("Host", "").split(":")[0]
            path, _, query = target.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            req = Request(
                host,
                self.command,
                urllib.parse.unquote(path),
                dict(urllib.parse.parse_qsl(query)),
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length) if length else b"",
            )
            self._write(req, net.answer(req))

        def _write(self, req: Request, res: Response):
            body, status, headers = res.body, res.status, dict(res.headers)
            rng = req.headers.get("range")
            if rng and res.ranges and status == 200 and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                if start >= len(body):
                    status, body = 416, b""
                else:
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(res.body) - 1}/{len(res.body)}"
                    body = body[start:]
            if res.ranges and status in (200, 206):
                headers.setdefault("Accept-Ranges", "bytes")
            self.send_response(status)
            if "Content-Length" in headers and headers["Content-Length"] is None:  # body ends when the connection does
                del headers["Content-Length"]
                headers["Connection"] = "close"
                self.close_connection = True
            else:
                headers.setdefault("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command == "HEAD":
                return
            if res.stall:  # a server that stops sending after the headers: only a client timeout ends the wait
                net.stalled.append(time.monotonic())
                net.unstall.wait()
                self.close_connection = True
                return
            key = (req.host, req.path)
            try:
                if res.cut_after is not None and net.cuts.get(key, 0) > 0:
                    net.cuts[key] -= 1
                    self.wfile.write(body[: res.cut_after])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # drop the connection mid-transfer
                    self.close_connection = True
                    return
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                self.close_connection = True  # the client hung up (gdown closes a response it will resume)

        do_GET = do_HEAD = do_POST = _serve

    class Proxy(Site):
        def do_CONNECT(self):
            host = self.path.split(":")[0]
            self.send_response(200, "Connection established")
            self.end_headers()
            try:
                tls = net._tls.wrap_socket(self.connection, server_side=True)
            except (ssl.SSLError, OSError):
                self.close_connection = True
                return
            site = type("TunnelSite", (Site,), {"host": host})
            try:
                site(tls, self.client_address, self.server)
            except (ssl.SSLError, OSError):
                pass
            self.close_connection = True

    return Proxy


def _sha1_git(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ---- the services --------------------------------------------------------------------------------------------


def google_drive(
    net: FakeInternet,
    files: dict[str, tuple[str, bytes]],
    folders: dict | None = None,
    large: set = frozenset(),
    quota: set = frozenset(),
    stall: set = frozenset(),
):
    """Google Drive as gdown 6.5.1 talks to it (gdown/download.py, download_folder.py; its own tests' fixtures).

    ``files``: id -> (name, bytes). ``GET drive.google.com/uc?id=ID``: a small file answers at once with
    ``Content-Disposition``; a ``large`` one redirects (303) to ``drive.usercontent.google.com/download?id=ID&
    export=download``, which answers the virus-scan warning page, an HTML form ``id="download-form"`` with hidden
    inputs id, export, confirm and uuid (one line, as Drive sends it), and only the resubmitted form with that
    uuid gets the file (with an ETag; Range honoured). An id in ``quota`` answers Drive's "Too many users" page;
    one in ``stall`` sends the file's response headers and then nothing (a stalled transfer).
    ``folders``: folder id -> (title, [file ids]), listed at ``drive.google.com/embeddedfolderview?id=FOLDER``.
    """
    uuids = {fid: f"5e1f{abs(hash(fid)) % 10**8:08d}-7c2a-4b7e-9a51-0f0c4a6c3d21" for fid in files}

    def attachment(fid):
        name, data = files[fid]
        return Response(
            200,
            {
                "Content-Type": "application/octet-stream",
                "ETag": f'"{_sha1_git(data)}"',
                "Content-Disposition": f'attachment; filename="{name}"',
            },
            data,
            stall=fid in stall,
        )

    def uc(req):
        fid = req.query.get("id", "")
        if fid in quota:
            return Response(
                200,
                {"Content-Type": "text/html; charset=utf-8"},
                (
                    '<html><head><title>Google Drive - Quota exceeded</title></head><body><p class="uc-error-caption">'
                    'Sorry, you can\'t view or download this file at this time.</p><p class="uc-error-subcaption">Too '
                    "many users have viewed or downloaded this file recently. Please try accessing the file again "
                    "later."
                    "</p></body></html>"
                ).encode(),
            )
        if fid not in files:
            return Response(404, {"Content-Type": "text/html"}, b"<html><title>Not Found</title></html>")
        if fid in large:
            return Response(
                303,
                {
                    "Location": f"https://drive.usercontent.google.com/download?id={fid}&export=download",
                    "Content-Type": "text/html",
                },
            )
        return attachment(fid)

    def usercontent(req):
        fid = req.query.get("id", "")
        if fid not in files:
            return Response(404, {"Content-Type": "text/html"}, b"<html>404</html>")
        if req.query.get("confirm") == "t" and req.query.get("uuid") == uuids[fid]:
            return attachment(fid)
        name, data = files[fid]
        page = (
            "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
            '<div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive can\'t scan this '
            f'file for viruses.</p><p class="uc-warning-subcaption"><span class="uc-name-size"><a href="/open?id='
            f'{fid}">{name}</a> ({len(data) // 1024}K)</span> is too large for Google to scan for viruses. Would '
            'you still like to download this file?</p><form id="download-form" action="https://drive.usercontent.'
            'google.com/download" method="get"><input type="submit" id="uc-download-link" class="goog-inline-block '
            f'jfk-button jfk-button-action" value="Download anyway"/><input type="hidden" name="id" value="{fid}">'
            '<input type="hidden" name="export" value="download"><input type="hidden" name="confirm" value="t">'
            f'<input type="hidden" name="uuid" value="{uuids[fid]}"></form></div></div></body></html>'
        )
        return Response(
            200,
            {"Content-Type": "text/html; charset=utf-8", "Set-Cookie": "NID=511=fake; Domain=.google.com; Path=/"},
            page.encode(),
        )

    def folder_view(req):
        folder = (folders or {}).get(req.query.get("id", ""))
        if folder is None:
            return Response(404, {"Content-Type": "text/html"}, b"<html>404</html>")
        title, ids = folder
        links = "".join(
            f'<a href="https://drive.google.com/file/d/{fid}/view?usp=drive_web"><img src="x" alt="">'
            f"{files[fid][0]}</a>"
            for fid in ids
        )
        page = f'<html><head><title>{title}</title></head><body><div class="flip-entries">{links}</div></body></html>'
        return Response(200, {"Content-Type": "text/html; charset=utf-8"}, page.encode())

    net.route("drive.google.com", "/uc", uc)
    net.route("drive.usercontent.google.com", "/download", usercontent)
    net.route("drive.google.com", "/embeddedfolderview", folder_view)


DROPBOX_CONTENT = "uc2f1e7a6b0d8c9.dl.dropboxusercontent.com"


def dropbox_blob(path: str) -> str:
    """Where the emulated content host serves a shared-folder file (``(host, path)`` keys ``net.cuts``)."""
    return f"/cd/0/get/{hashlib.sha1(path.encode()).hexdigest()}/file"


def dropbox_shared_folder(
    net: FakeInternet,
    folder: str,
    rlkey: str,
    files: dict[str, bytes],
    content_length: bool = True,
    cut_after: int | None = None,
):
    """A file inside a Dropbox shared folder (``/scl/fo/<folder>/h/<path>?rlkey=<key>&dl=1``; Dropbox's help
    on forcing downloads with dl=1, the pattern BiomedSciAI/gene-benchmark uses): ``dl=1`` redirects (302) to the
    content host ``*.dl.dropboxusercontent.com``, which does not honour Range (always 200, whole file);
    ``dl=0`` answers the HTML preview page; a wrong ``rlkey`` an HTML error page. ``content_length=False``: the
    content host sends no Content-Length (the body ends with the connection); ``cut_after``: connections counted in
    ``net.cuts[(DROPBOX_CONTENT, dropbox_blob(path))]`` are dropped after that many bytes."""
    content = DROPBOX_CONTENT

    def shared(req):
        path = req.path.removeprefix(f"/scl/fo/{folder}/h/")
        if req.query.get("rlkey") != rlkey or path not in files:
            return Response(404, {"Content-Type": "text/html"}, b"<html><title>Dropbox - Error</title></html>")
        if req.query.get("dl") != "1":
            return Response(
                200,
                {"Content-Type": "text/html; charset=utf-8"},
                b"<!DOCTYPE html><html><head><title>Dropbox</title></head><body>preview</body></html>",
            )
        return Response(302, {"Location": f"https://{content}{dropbox_blob(path)}?dl=1"})

    def blob(req):
        for path, data in files.items():
            if req.path == dropbox_blob(path):
                headers = {
                    "Content-Type": "application/binary",
                    "Content-Disposition": f'attachment; filename="{path.rsplit("/", 1)[-1]}"',
                }
                response = Response(200, headers, data, ranges=False, cut_after=cut_after)
                if not content_length:  # chunked: the client cannot tell a cut-off body from a whole one
                    response.headers["Content-Length"] = None
                return response
        return Response(404, {"Content-Type": "text/html"}, b"<html>gone</html>")

    net.route("www.dropbox.com", f"/scl/fo/{re.escape(folder)}/h/.+", shared)
    net.route(content, "/cd/0/get/[0-9a-f]+/file", blob)
    return content


def figshare(net: FakeInternet, files: dict[int, tuple[str, bytes]], ndownloader: str = "challenge", api: str = "ok"):
    """figshare file downloads: ``ndownloader.figshare.com/files/<id>`` (``challenge``: an empty 202, as its bot
    protection answers scripts; ``forbidden``: 403; ``ok``: 302 to the S3 store) and the documented API route
    ``api.figshare.com/v2/file/download/<id>`` (``ok``: 302 to S3; ``forbidden``: 403 JSON error)."""

    def s3_url(fid):
        return f"https://s3-eu-west-1.amazonaws.com/pfigshare-u-files/{fid}/{files[fid][0]}?X-Amz-Signature=fake"

    def answer(mode, fid):
        if fid not in files:
            return Response(404, {"Content-Type": "application/json"}, b'{"message": "Entity not found"}')
        if mode == "challenge":
            return Response(202, {"Content-Type": "text/html; charset=utf-8", "Content-Length": "0"})
        if mode == "forbidden":
            return Response(403, {"Content-Type": "application/json"}, b'{"message": "Forbidden", "code": "Forbidden"}')
        return Response(302, {"Location": s3_url(fid)})

    def blob(req):
        fid = int(req.path.split("/")[2])
        return Response(200, {"Content-Type": "binary/octet-stream"}, files[fid][1])

    net.route("ndownloader.figshare.com", r"/files/\d+", lambda req: answer(ndownloader, int(req.path.split("/")[-1])))
    net.route("api.figshare.com", r"/v2/file/download/\d+", lambda req: answer(api, int(req.path.split("/")[-1])))
    net.route("s3-eu-west-1.amazonaws.com", r"/pfigshare-u-files/\d+/.+", blob)


def cellxgene(net: FakeInternet, datasets: dict[str, list[dict]], files: dict[str, bytes], wrap: bool = False):
    """The CELLxGENE Discover curation API (OpenAPI spec backend/curation/api/curation-api.yml) and datasets host.

    ``datasets``: dataset id -> its versions, newest first, each at least ``dataset_version_id``,
    ``published_at`` and ``cell_count``. ``GET /curation/v1/datasets/{id}/versions`` answers them (a bare array
    as the current spec; ``wrap``: ``{"datasets": [...]}`` as older ones); ``GET /curation/v1/dataset_versions/
    {version id}`` one of them. ``GET /curation/v1/datasets/{id}`` does not exist (404, as on the real API).
    ``files``: version id -> the H5AD at ``https://datasets.cellxgene.cziscience.com/{version id}.h5ad``.
    """

    def full(dataset_id, v):
        vid = v["dataset_version_id"]
        return {
            "dataset_id": dataset_id,
            "collection_id": "9d63fcf1-5ca0-4006-8d8f-872f3327dbe9",
            "collection_version_id": "00000000-0000-4000-8000-000000000000",
            "schema_version": "3.1.0",
            "title": "emulated",
            "tombstone": False,
            **v,
            "assets": [
                {
                    "filetype": "H5AD",
                    "filesize": len(files.get(vid, b"")),
                    "url": f"https://datasets.cellxgene.cziscience.com/{vid}.h5ad",
                },
                {"filetype": "RDS", "filesize": 1, "url": f"https://datasets.cellxgene.cziscience.com/{vid}.rds"},
            ],
        }

    def versions(req):
        dataset_id = req.path.split("/")[4]
        if dataset_id not in datasets:
            return Response(404, {"Content-Type": "application/json"}, b'{"detail": "Dataset not found."}')
        body = [full(dataset_id, v) for v in datasets[dataset_id]]
        return Response(
            200, {"Content-Type": "application/json"}, json.dumps({"datasets": body} if wrap else body).encode()
        )

    def one_version(req):
        vid = req.path.split("/")[-1]
        for dataset_id, vs in datasets.items():
            for v in vs:
                if v["dataset_version_id"] == vid:
                    return Response(200, {"Content-Type": "application/json"}, json.dumps(full(dataset_id, v)).encode())
        return Response(404, {"Content-Type": "application/json"}, b'{"detail": "Dataset version not found."}')

    net.route("api.cellxgene.cziscience.com", r"/curation/v1/datasets/[0-9a-f-]{36}/versions", versions)
    net.route("api.cellxgene.cziscience.com", r"/curation/v1/dataset_versions/[0-9a-f-]{36}", one_version)
    for vid, data in files.items():
        net.file("datasets.cellxgene.cziscience.com", f"/{vid}.h5ad", data, content_type="binary/octet-stream")


def hugging_face(
    net: FakeInternet,
    repo_id: str,
    revision: str,
    files: dict[str, bytes],
    lfs: set = frozenset(),
    host: str = "huggingface.co",
):
    """The Hugging Face Hub as huggingface_hub 2.4.0's snapshot_download uses it at a commit sha: ``GET
    /api/models/{repo}/tree/{sha}?recursive=true&expand=false`` (entries with type, path, oid, size; lfs files with
    lfs.oid = sha256), then per file ``HEAD`` and ``GET /{repo}/resolve/{sha}/{path}`` answering ``X-Repo-Commit``
    and ``ETag``; an LFS file redirects (302) to the CDN with ``X-Linked-Etag`` and ``X-Linked-Size``. Unknown repos,
    revisions and paths answer 404 with the ``X-Error-Code`` the client maps to its errors."""
    cdn = "cdn-lfs.hf.co"

    def sha256(d):
        return hashlib.sha256(d).hexdigest()

    def tree(req):
        repo, rev = req.path.removeprefix("/api/models/").rsplit("/tree/", 1)
        if repo != repo_id:
            return Response(404, {"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"}, b"{}")
        if rev != revision:
            return Response(404, {"X-Error-Code": "RevisionNotFound", "Content-Type": "application/json"}, b"{}")
        entries = [
            {
                "type": "file",
                "oid": _sha1_git(d),
                "size": len(d),
                "path": p,
                **({"lfs": {"oid": sha256(d), "size": len(d), "pointerSize": 134}} if p in lfs else {}),
            }
            for p, d in files.items()
        ]
        return Response(200, {"Content-Type": "application/json"}, json.dumps(entries).encode())

    def resolve(req):
        m = re.fullmatch(r"/(.+?/.+?)/resolve/([^/]+)/(.+)", req.path)
        repo, rev, path = m.groups()
        if repo != repo_id:
            return Response(404, {"X-Error-Code": "RepoNotFound"})
        if rev != revision:
            return Response(404, {"X-Error-Code": "RevisionNotFound"})
        if path not in files:
            return Response(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": revision})
        d = files[path]
        if path in lfs:
            return Response(
                302,
                {
                    "X-Repo-Commit": revision,
                    "X-Linked-Etag": f'"{sha256(d)}"',
                    "X-Linked-Size": str(len(d)),
                    "ETag": f'"{_sha1_git(d)}"',
                    "Location": f"https://{cdn}/repos/{sha256(d)}",
                },
            )
        return Response(
            200, {"X-Repo-Commit": revision, "ETag": f'"{_sha1_git(d)}"', "Content-Type": "application/octet-stream"}, d
        )

    def blob(req):
        for d in files.values():
            if req.path == f"/repos/{sha256(d)}":
                return Response(200, {"Content-Type": "application/octet-stream"}, d)
        return Response(404, {})

    net.route(host, r"/api/models/.+/tree/[^/]+", tree)
    net.route(host, r"/.+?/.+?/resolve/[^/]+/.+", resolve)
    net.route(host, r"/api/agent-harnesses", lambda req: Response(404, {}))
    net.route(cdn, r"/repos/[0-9a-f]{64}", blob)
