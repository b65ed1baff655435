"""Downloads against the services' public contracts, emulated on 127.0.0.1 (tests/internet.py).

The code under test uses the real public URLs; the emulated internet answers them as each service's contract
says, including its unfriendly answers: figshare's empty 202 and 403, Drive's confirmation form and quota page,
Dropbox's redirect to a content host without Range support, CELLxGENE's versions route.
"""

import hashlib
import io
import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from cellplm.bench.data.download import Manifest, fetch
from cellplm.bench.errors import DownloadError
from conftest import ROOT, make_counts_adata
from internet import (
    DROPBOX_CONTENT,
    FakeInternet,
    Response,
    cellxgene,
    dropbox_blob,
    dropbox_shared_folder,
    figshare,
    google_drive,
    hugging_face,
)

DATA = bytes(range(256)) * 4000  # about 1 MB
SHA = hashlib.sha256(DATA).hexdigest()
GH = "https://github.com/YosefLab/scVI-data/raw/master/gene_info.csv"


@pytest.fixture
def net(tmp_path, monkeypatch):
    with FakeInternet(tmp_path) as internet:
        for k, v in internet.env.items():
            monkeypatch.setenv(k, v)
        # GitHub's /raw/ route redirects to raw.githubusercontent.com
        internet.route(
            "github.com",
            "/YosefLab/scVI-data/raw/master/gene_info.csv",
            lambda r: Response(
                302, {"Location": "https://raw.githubusercontent.com/YosefLab/scVI-data/master/gene_info.csv"}
            ),
        )
        internet.file("raw.githubusercontent.com", "/YosefLab/scVI-data/master/gene_info.csv", DATA)
        yield internet


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def get(url, dest, **kw):
    return fetch(url, dest, backoff=0, progress=False, **kw)


def test_good_file_with_checksum(net, tmp_path):
    info = get(GH, tmp_path / "dl" / "gene_info.csv", sha256=SHA)
    assert (tmp_path / "dl" / "gene_info.csv").read_bytes() == DATA
    assert info["verified_against"] == "config" and leftovers(tmp_path / "dl") == ["gene_info.csv"]
    assert info["service"] == "GitHub" and info["resolved_url"] == GH
    assert net.hits() == [
        "GET /YosefLab/scVI-data/raw/master/gene_info.csv",
        "GET /YosefLab/scVI-data/master/gene_info.csv",
    ]


def test_first_download_recorded_then_verified(net, tmp_path):
    manifest = Manifest(tmp_path / "checksums.tsv")
    dest = tmp_path / "dl" / "gene_info.csv"
    assert get(GH, dest, manifest=manifest)["verified_against"] == "recorded now"
    assert manifest.get("gene_info.csv") == SHA
    dest.unlink()
    net.file("raw.githubusercontent.com", "/YosefLab/scVI-data/master/gene_info.csv", DATA[:-1] + b"x")  # changed
    with pytest.raises(DownloadError, match=f"sha256 mismatch .* expected {SHA} from manifest"):
        get(GH, dest, manifest=manifest)
    assert leftovers(dest.parent) == []


def test_old_manifest_without_version_column_is_read(tmp_path):
    path = tmp_path / "checksums.tsv"
    path.write_text("filename\turl\tsha256\tbytes\trecorded\nx.h5ad\thttps://a/x\t" + "a" * 64 + "\t3\t2026-01-01\n")
    assert Manifest(path).row("x.h5ad")["version"] == "" and Manifest(path).get("x.h5ad") == "a" * 64


def test_wrong_checksum_leaves_nothing(net, tmp_path):
    with pytest.raises(DownloadError, match="sha256 mismatch") as e:
        get(GH, tmp_path / "gene_info.csv", sha256="0" * 64)
    assert "\n" not in str(e.value) and leftovers(tmp_path) == ["fake-internet-ca.pem"]


def test_404_names_the_service_and_leaves_nothing(net, tmp_path):
    url = "https://github.com/YosefLab/scVI-data/raw/master/missing.csv"
    with pytest.raises(DownloadError) as e:
        get(url, tmp_path / "dl" / "missing.csv")
    assert str(e.value) == (
        f"missing.csv: no source gave the file (GitHub github.com: HTTP 404 Not Found); nothing was "
        f"saved. Download {url} in a browser, save it as {tmp_path / 'dl' / 'missing.csv'}, and "
        "rerun (its sha256 is then recorded with the results)"
    )
    assert leftovers(tmp_path / "dl") == []


def test_interrupted_transfer_resumes(net, tmp_path):
    host, path = "raw.githubusercontent.com", "/YosefLab/scVI-data/master/gene_info.csv"
    net.route(host, path, lambda r: Response(200, {"Content-Type": "text/csv"}, DATA, cut_after=300_000))
    net.cuts[(host, path)] = 2  # two dropped connections, then it completes
    get(GH, tmp_path / "g.csv", sha256=SHA, retries=3)
    assert (tmp_path / "g.csv").read_bytes() == DATA
    ranges = [h.get("range") for h_, m, p, h in net.requests if h_ == host]
    assert ranges == [None, "bytes=300000-", "bytes=600000-"]


def test_interrupted_run_resumes_on_next_run(net, tmp_path):
    host, path = "raw.githubusercontent.com", "/YosefLab/scVI-data/master/gene_info.csv"
    net.route(host, path, lambda r: Response(200, {"Content-Type": "text/csv"}, DATA, cut_after=500_000))
    net.cuts[(host, path)] = 1
    with pytest.raises(DownloadError, match="rerun to resume from 500000 bytes"):
        get(GH, tmp_path / "dl" / "g.csv", sha256=SHA, retries=0)
    assert leftovers(tmp_path / "dl") == [".g.csv.part"]  # the final name is never half-written
    get(GH, tmp_path / "dl" / "g.csv", sha256=SHA, retries=0)
    assert (tmp_path / "dl" / "g.csv").read_bytes() == DATA and leftovers(tmp_path / "dl") == ["g.csv"]


def test_html_page_is_refused(net, tmp_path):
    net.file(
        "raw.githubusercontent.com",
        "/YosefLab/scVI-data/master/gene_info.csv",
        b"<html>login</html>",
        content_type="text/html; charset=utf-8",
    )
    with pytest.raises(DownloadError, match=r"GitHub raw.githubusercontent.com: an HTML page instead of the file"):
        get(GH, tmp_path / "dl" / "x.csv")
    assert leftovers(tmp_path / "dl") == []


def test_html_page_sent_as_data_is_refused_by_its_first_bytes(net, tmp_path):
    """A login page labelled application/octet-stream: its first bytes give it away (a BOM, whitespace, any case)."""
    page = b"\xef\xbb\xbf\n  <!DOCTYPE HTML><html><head><title>Sign in</title></head><body>log in</body></html>"
    net.file("raw.githubusercontent.com", "/YosefLab/scVI-data/master/gene_info.csv", page)
    manifest = Manifest(tmp_path / "checksums.tsv")
    dest = tmp_path / "dl" / "gene_info.csv"
    with pytest.raises(DownloadError) as e:
        get(GH, dest, manifest=manifest)
    assert str(e.value) == (
        "gene_info.csv: no source gave the file (GitHub raw.githubusercontent.com: an HTML page instead of the file (a "
        "login, preview, quota or confirmation page), sent as application/octet-stream); nothing was saved. Download "
        f"{GH} in a browser, save it as {dest}, and rerun (its sha256 is then recorded with the results)"
    )
    assert leftovers(dest.parent) == [] and manifest.row("gene_info.csv") is None
    assert not manifest.path.exists() or "gene_info.csv" not in manifest.path.read_text()


@pytest.mark.parametrize(
    "head, html",
    [
        (b"<html lang=en>", True),
        (b"\r\n\t<HEAD>", True),
        (b"<!-- x -->", True),
        (b"<p>moved</p>", True),
        (b"<html\n>", True),
        (b"\x89HDF\r\n\x1a\n<html>", False),
        (b"PK\x03\x04", False),
        (b"<htmlish", False),
        (b"gene_id,symbol\n<b>", False),
        (b"<?xml version='1.0'?>", False),
        (b"", False),
    ],
)
def test_looks_like_html_follows_the_mime_sniffing_signatures(tmp_path, head, html):
    from cellplm.bench.data.services import looks_like_html

    (tmp_path / "body").write_bytes(head + b"\x00" * 2000)
    assert looks_like_html(tmp_path / "body") is html


# ---- figshare: its bot challenge answers an empty 202 or a 403; the API route is a mirror --------------------------

PANCREAS = "https://ndownloader.figshare.com/files/36086813"
PANCREAS_API = "https://api.figshare.com/v2/file/download/36086813"


def test_figshare_challenge_falls_back_to_the_api_mirror(net, tmp_path):
    figshare(net, {36086813: ("human_pancreas_norm_complexBatch.h5ad", DATA)}, ndownloader="challenge")
    manifest = Manifest(tmp_path / "checksums.tsv")
    info = get(PANCREAS, tmp_path / "dl" / "pancreas.h5ad", mirrors=[PANCREAS_API], manifest=manifest)
    assert (tmp_path / "dl" / "pancreas.h5ad").read_bytes() == DATA
    assert info["resolved_url"] == PANCREAS_API and info["service"] == "figshare"
    assert manifest.row("pancreas.h5ad")["url"] == PANCREAS  # the source as configured, whichever mirror served it
    assert net.hits("ndownloader.figshare.com") == ["GET /files/36086813"]  # a 202 is not retried
    assert net.hits("s3-eu-west-1.amazonaws.com")[0].startswith("GET /pfigshare-u-files/36086813/")


def test_figshare_refusing_everywhere_saves_nothing_and_says_what_to_do(net, tmp_path):
    figshare(net, {36086813: ("p.h5ad", DATA)}, ndownloader="challenge", api="forbidden")
    manifest = Manifest(tmp_path / "checksums.tsv")
    dest = tmp_path / "dl" / "pancreas.h5ad"
    with pytest.raises(DownloadError) as e:
        get(PANCREAS, dest, mirrors=[PANCREAS_API], manifest=manifest)
    assert str(e.value) == (
        "pancreas.h5ad: no source gave the file (figshare ndownloader.figshare.com: HTTP 202 Accepted with an empty "
        "body; figshare api.figshare.com: HTTP 403 Forbidden); nothing was saved. Download "
        f"{PANCREAS} in a browser, save it as {dest}, and rerun (its sha256 is then recorded with the results)"
    )
    assert leftovers(dest.parent) == [] and manifest.row("pancreas.h5ad") is None  # no checksum of an empty 202


# ---- Dropbox: dl=1 redirects to a content host that ignores Range ----------------------------------------------

FOLDER, RLKEY = "i5rmxgtqzg7iykt2e9uqm", "o8hi0xads9ol07o48jdityzv1"


def dropbox_url(name, dl=1):
    return f"https://www.dropbox.com/scl/fo/{FOLDER}/h/ckpt/{name}?rlkey={RLKEY}&dl={dl}"


def test_dropbox_cut_off_transfer_restarts_when_the_host_ignores_range(net, tmp_path):
    dropbox_shared_folder(net, FOLDER, RLKEY, {"ckpt/m.best.ckpt": DATA}, cut_after=300_000)
    net.cuts[(DROPBOX_CONTENT, dropbox_blob("ckpt/m.best.ckpt"))] = 1  # the first connection drops
    info = get(dropbox_url("m.best.ckpt"), tmp_path / "m.best.ckpt", sha256=SHA, retries=2)
    assert (tmp_path / "m.best.ckpt").read_bytes() == DATA and info["service"] == "Dropbox"
    assert net.hits("www.dropbox.com") == [f"GET /scl/fo/{FOLDER}/h/ckpt/m.best.ckpt?rlkey={RLKEY}&dl=1"] * 2
    sent = [(h.get("range"), m) for h_, m, p, h in net.requests if h_ == DROPBOX_CONTENT]
    assert sent == [(None, "GET"), ("bytes=300000-", "GET")]  # asked to resume, got the whole file again (200)


def test_dropbox_preview_page_is_refused(net, tmp_path):
    dropbox_shared_folder(net, FOLDER, RLKEY, {"ckpt/m.best.ckpt": DATA})
    with pytest.raises(DownloadError, match=r"Dropbox www.dropbox.com: an HTML page instead of the file"):
        get(dropbox_url("m.best.ckpt", dl=0), tmp_path / "m.best.ckpt")


def test_truncated_checkpoint_without_content_length_is_fetched_again(net, tmp_path):
    """A torch.save checkpoint is a zip: a transfer cut off without Content-Length is caught and restarted."""
    import torch

    buf = io.BytesIO()
    torch.save({"model_state_dict": {"w": torch.arange(200_000, dtype=torch.float32)}}, buf)
    ckpt = buf.getvalue()
    dropbox_shared_folder(
        net, FOLDER, RLKEY, {"ckpt/m.best.ckpt": ckpt}, content_length=False, cut_after=len(ckpt) // 2
    )
    key = (DROPBOX_CONTENT, dropbox_blob("ckpt/m.best.ckpt"))
    net.cuts[key] = 1
    get(dropbox_url("m.best.ckpt"), tmp_path / "m.best.ckpt", retries=2)
    assert (tmp_path / "m.best.ckpt").read_bytes() == ckpt
    net.cuts[key] = 5
    with pytest.raises(
        DownloadError, match=r"incomplete or corrupt zip container .* after 2 attempts; nothing was saved"
    ):
        get(dropbox_url("m.best.ckpt"), tmp_path / "again.ckpt", retries=1)
    assert not (tmp_path / "again.ckpt").exists() and not (tmp_path / ".again.ckpt.part").exists()


# ---- CELLxGENE Discover: /datasets/{id}/versions, version pin or as_of, cell_count -------------------------------

BRAIN = "c05e6940-729c-47bd-a2a6-6ce3730c4919"
V_NEW, V_2023, V_OLD = ("4f5e7a0c-0000-4000-8000-00000000000" + c for c in "321")


def h5ad_bytes(n_cells, tmp_path):
    path = tmp_path / f"cxg{n_cells}.h5ad"
    make_counts_adata(n_cells=n_cells).write_h5ad(path)
    return path.read_bytes()


@pytest.fixture
def brain(net, tmp_path):
    versions = [
        {"dataset_version_id": V_NEW, "published_at": "2024-07-01T10:00:00.000000+00:00", "cell_count": 40},
        {"dataset_version_id": V_2023, "published_at": "2023-06-15T09:30:00.000000+00:00", "cell_count": 30},
        {"dataset_version_id": V_OLD, "published_at": "2023-02-01T00:00:00+00:00", "cell_count": 20},
    ]
    files = {V_NEW: h5ad_bytes(40, tmp_path), V_2023: h5ad_bytes(30, tmp_path), V_OLD: h5ad_bytes(20, tmp_path)}
    cellxgene(net, {BRAIN: versions}, files)
    return files


def test_cellxgene_as_of_picks_the_version_current_then_and_locks_it(net, brain, tmp_path):
    manifest = Manifest(tmp_path / "checksums.tsv")
    dest = tmp_path / "dl" / f"cellxgene_{BRAIN}.h5ad"
    info = get(f"cellxgene://{BRAIN}", dest, as_of="2023-09-27", manifest=manifest)
    assert dest.read_bytes() == brain[V_2023] and info["version"] == V_2023
    assert info["resolved_url"] == f"https://datasets.cellxgene.cziscience.com/{V_2023}.h5ad"
    assert info["detail"]["chosen"] == "newest published on or before 2023-09-27" and info["detail"]["cell_count"] == 30
    assert net.hits("api.cellxgene.cziscience.com") == [f"GET /curation/v1/datasets/{BRAIN}/versions"]
    row = manifest.row(dest.name)
    assert row["version"] == V_2023 and row["sha256"] == hashlib.sha256(brain[V_2023]).hexdigest()
    # a later run reuses the locked version, even without as_of, and verifies its recorded checksum
    dest.unlink()
    info = get(f"cellxgene://{BRAIN}", dest, manifest=manifest)
    assert info["version"] == V_2023 and info["verified_against"] == "manifest"
    assert info["detail"]["chosen"] == "locked in the manifest"
    # no request ever went to GET /datasets/{id}, a route the API does not have
    assert not any(re.fullmatch(r"GET /curation/v1/datasets/[0-9a-f-]+", h) for h in net.hits())


def test_cellxgene_version_pin_newest_and_wrapped_list(net, brain, tmp_path):
    info = get(f"cellxgene://{BRAIN}", tmp_path / "a.h5ad", version_id=V_OLD)
    assert info["version"] == V_OLD and (tmp_path / "a.h5ad").read_bytes() == brain[V_OLD]
    assert info["detail"]["chosen"] == "pinned by version_id"
    assert get(f"cellxgene://{BRAIN}", tmp_path / "b.h5ad")["version"] == V_NEW  # no pin: the newest
    cellxgene(
        net,
        {BRAIN: [{"dataset_version_id": V_NEW, "published_at": "2024-07-01T10:00:00Z", "cell_count": 40}]},
        {V_NEW: brain[V_NEW]},
        wrap=True,
    )  # the older spec's {"datasets": [...]}
    assert get(f"cellxgene://{BRAIN}", tmp_path / "c.h5ad")["version"] == V_NEW
    with pytest.raises(DownloadError, match=f"no version {V_OLD} \\(listed: {V_NEW}\\)"):
        get(f"cellxgene://{BRAIN}", tmp_path / "d.h5ad", version_id=V_OLD)
    with pytest.raises(
        DownloadError,
        match="no version was published on or before 2020-01-01 \\(the oldest listed is from 2024-07-01\\)",
    ):
        get(f"cellxgene://{BRAIN}", tmp_path / "e.h5ad", as_of="2020-01-01")


def test_cellxgene_version_id_alone_and_unknown_ids(net, brain, tmp_path):
    info = get(f"cellxgene://{V_2023}", tmp_path / "v.h5ad")  # a dataset version id, not a dataset id
    assert info["version"] == V_2023 and info["detail"]["dataset_id"] == BRAIN
    assert net.hits("api.cellxgene.cziscience.com") == [
        f"GET /curation/v1/datasets/{V_2023}/versions",
        f"GET /curation/v1/dataset_versions/{V_2023}",
    ]
    assert info["detail"]["chosen"] == "the id names this dataset version"
    again = get(f"cellxgene://{V_OLD}", tmp_path / "w.h5ad", as_of="2023-09-27")  # as_of cannot move a named version
    assert again["version"] == V_OLD
    with pytest.raises(DownloadError, match="CELLxGENE knows no dataset 00000000-0000-4000-8000-0000000000ff"):
        get("cellxgene://00000000-0000-4000-8000-0000000000ff", tmp_path / "x.h5ad", as_of="2023-09-27")


def test_cellxgene_cell_count_is_checked(net, tmp_path):
    cellxgene(
        net,
        {BRAIN: [{"dataset_version_id": V_NEW, "published_at": "2024-07-01T10:00:00Z", "cell_count": 41}]},
        {V_NEW: h5ad_bytes(40, tmp_path)},
    )
    with pytest.raises(
        DownloadError,
        match=f"40 cells, but CELLxGENE Discover announces 41 for version {V_NEW}; the download was deleted",
    ):
        get(f"cellxgene://{BRAIN}", tmp_path / "dl" / "b.h5ad")
    assert leftovers(tmp_path / "dl") == []


# ---- Google Drive, through gdown -----------------------------------------------------------------------------

SCDIFF = "1dI3FS9My-8_TR0C6YSUklHzBHiVVXN4F"


def test_google_drive_large_file_through_the_confirmation_form(net, tmp_path):
    google_drive(net, {SCDIFF: ("reproducibility.tar.gz", DATA)}, large={SCDIFF})
    manifest = Manifest(tmp_path / "checksums.tsv")
    info = get(f"gdrive://{SCDIFF}", tmp_path / "dl" / "scdiff.tar.gz", manifest=manifest)
    assert (tmp_path / "dl" / "scdiff.tar.gz").read_bytes() == DATA and info["service"] == "Google Drive"
    hits = net.hits()
    assert hits[0] == f"GET /uc?id={SCDIFF}" and hits[1] == f"GET /download?id={SCDIFF}&export=download"
    assert re.fullmatch(f"GET /download\\?id={SCDIFF}&export=download&confirm=t&uuid=[0-9a-f-]+", hits[2])
    assert manifest.get("scdiff.tar.gz") == SHA and leftovers(tmp_path / "dl") == ["scdiff.tar.gz"]


def test_google_drive_quota_page_is_one_line_with_the_manual_route(net, tmp_path):
    google_drive(net, {SCDIFF: ("reproducibility.tar.gz", DATA)}, large={SCDIFF}, quota={SCDIFF})
    dest = tmp_path / "dl" / "scdiff.tar.gz"
    with pytest.raises(DownloadError) as e:
        get(f"gdrive://{SCDIFF}", dest, retries=0)
    message = str(e.value)
    assert "\n" not in message and message.startswith("scdiff.tar.gz: Google Drive did not give the file (")
    assert "Too many users have viewed or downloaded this file recently" in message
    assert message.endswith(
        f"download https://drive.google.com/uc?id={SCDIFF} in a browser, save it as {dest}, "
        "and rerun (its sha256 is then recorded with the results)"
    )
    assert not dest.exists()


def test_google_drive_folder_with_gdown(net, tmp_path):
    from cellplm.bench.data.services import gdrive_folder

    ids = {
        "1ArgsJsonAAAAAAAAAAAAAAAAAAAAAA": ("args.json", b'{"embsize": 512}'),
        "1VocabJsonBBBBBBBBBBBBBBBBBBBBBB": ("vocab.json", b'{"<pad>": 0}'),
        "1BestModelCCCCCCCCCCCCCCCCCCCCCC": ("best_model.pt", DATA),
    }
    google_drive(
        net,
        ids,
        folders={"1oWh_-ZRdhtoGQ2Fw24HP41FgLoomVo-y": ("scGPT_human", list(ids))},
        large={"1BestModelCCCCCCCCCCCCCCCCCCCCCC"},
    )
    manifest = Manifest(tmp_path / "checksums.tsv")
    dest = tmp_path / "models" / "scgpt_whole_human"
    info = gdrive_folder(
        "1oWh_-ZRdhtoGQ2Fw24HP41FgLoomVo-y",
        dest,
        {"args.json": None, "vocab.json": None, "best_model.pt": SHA},
        manifest=manifest,
        progress=False,
    )
    assert sorted(p.name for p in dest.iterdir()) == ["args.json", "best_model.pt", "vocab.json"]
    assert (dest / "best_model.pt").read_bytes() == DATA and info["files"]["best_model.pt"][
        "verified_against"
    ] == "config"
    assert manifest.get("scgpt_whole_human/args.json") == hashlib.sha256(b'{"embsize": 512}').hexdigest()
    assert net.hits()[0] == "GET /embeddedfolderview?id=1oWh_-ZRdhtoGQ2Fw24HP41FgLoomVo-y"
    with pytest.raises(DownloadError, match=r"best_model.pt: sha256 mismatch .* expected 0{64} from config"):
        gdrive_folder(
            "1oWh_-ZRdhtoGQ2Fw24HP41FgLoomVo-y",
            tmp_path / "models" / "other",
            {"args.json": None, "vocab.json": None, "best_model.pt": "0" * 64},
            progress=False,
        )
    assert not (tmp_path / "models" / "other").exists()


# A Drive server that sends the headers and then stalls: the job ends within download.timeout. Each case runs in a
# subprocess killed after CAP seconds, so that a transfer without a timeout (gdown's default) fails the test
# instead of hanging it.
STALL_TIMEOUT, SLACK, CAP = 2.0, 4.0, 30


def run_job(args, net, tmp_path):
    """``python args...`` with the emulated internet, this checkout's package, a private HOME (gdown's cookies);
    returns the finished process and the seconds from the first stalled response's headers to its end."""
    env = {
        **os.environ,
        **net.env,
        "HOME": str(tmp_path / "home"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    try:
        out = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=CAP)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a stalled Google Drive transfer was still waiting after {CAP} s (no timeout reached gdown)")
    ended = time.monotonic()
    assert net.stalled, out.stderr[-2000:]
    return out, ended - net.stalled[0]


def test_stalled_google_drive_transfer_ends_within_the_timeout(net, tmp_path):
    google_drive(net, {SCDIFF: ("reproducibility.tar.gz", DATA)}, stall={SCDIFF})
    dest = tmp_path / "dl" / "scdiff.tar.gz"
    manifest = tmp_path / "checksums.tsv"
    out, waited = run_job(
        [
            "-m",
            "cellplm.bench.cli",
            "download",
            f"gdrive://{SCDIFF}",
            str(dest),
            "--retries",
            "0",
            "--timeout",
            str(STALL_TIMEOUT),
            "--manifest",
            str(manifest),
        ],
        net,
        tmp_path,
    )
    assert out.returncode == 1 and out.stdout == ""
    assert STALL_TIMEOUT - 0.5 < waited < STALL_TIMEOUT + SLACK  # gave up because of the timeout, and in time
    errors = [line for line in out.stderr.splitlines() if "ERROR" in line]  # after gdown's progress lines
    assert errors == [out.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith("ERROR: scdiff.tar.gz: Google Drive did not give the file (")
    assert "Read timed out" in errors[0] and errors[0].endswith(
        f"save it as {dest}, and rerun (its sha256 is then recorded with the results)"
    )
    assert leftovers(dest.parent) == [] and not manifest.exists()  # nothing half-written, no checksum


def test_stalled_google_drive_folder_file_ends_within_the_timeout(net, tmp_path):
    ids = {
        "1ArgsJsonAAAAAAAAAAAAAAAAAAAAAA": ("args.json", b'{"embsize": 512}'),
        "1BestModelCCCCCCCCCCCCCCCCCCCCCC": ("best_model.pt", DATA),
    }
    google_drive(
        net,
        ids,
        folders={"1oWh_-ZRdhtoGQ2Fw24HP41FgLoomVo-y": ("scGPT_human", list(ids))},
        stall={"1BestModelCCCCCCCCCCCCCCCCCCCCCC"},
    )
    models = tmp_path / "models"
    spec = {
        "source": {"kind": "gdrive_folder", "folder_id": "1oWh_-ZRdhtoGQ2Fw24HP41FgLoomVo-y"},
        "files": {"args.json": None, "best_model.pt": None},
    }
    code = (
        "import sys; from cellplm.bench.data.services import fetch_model; from cellplm.bench.errors import "
        "DownloadError\ntry:\n    fetch_model(%r, %r, retries=0, timeout=%r, progress=False)\nexcept DownloadError "
        "as e:\n    sys.exit(f'ERROR: {e}')" % (spec, str(models / "scgpt_whole_human"), STALL_TIMEOUT)
    )
    out, waited = run_job(["-c", code], net, tmp_path)
    assert out.returncode == 1 and STALL_TIMEOUT - 0.5 < waited < STALL_TIMEOUT + SLACK
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: scgpt_whole_human: Google Drive did not give the file (")
    assert "Read timed out" in lines[0]
    # the file that arrived is kept for the rerun to resume from; the stalled one left nothing
    assert sorted(p.relative_to(models).as_posix() for p in models.rglob("*")) == [
        ".scgpt_whole_human.partial",
        ".scgpt_whole_human.partial/args.json",
    ]


# ---- Hugging Face, through huggingface_hub at a pinned commit (HF_ENDPOINT) --------------------------------------

REVISION = "04c2b2e84da7c0f385c3f9ad8f3ec24bab6650e5"


def test_hugging_face_snapshot_at_a_pinned_revision(tmp_path, monkeypatch):
    from cellplm.bench.data.services import hf_snapshot

    files = {
        "Geneformer-V1-10M/config.json": b'{"model_type": "bert"}',
        "Geneformer-V1-10M/model.safetensors": DATA,
        "geneformer/gene_dictionaries_30m/token_dictionary_gc30M.pkl": b"\x80\x04}\x94.",
        "Geneformer-V2-316M/model.safetensors": b"big",
        "README.md": b"# Geneformer",
    }
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    with FakeInternet(tmp_path, direct_host="huggingface.co") as hub:
        hugging_face(
            hub,
            "ctheodoris/Geneformer",
            REVISION,
            files,
            lfs={"Geneformer-V1-10M/model.safetensors", "Geneformer-V2-316M/model.safetensors"},
        )
        for k, v in hub.env.items():  # the endpoint directly (HF_ENDPOINT), its LFS CDN through the emulated internet
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        wanted = {
            "Geneformer-V1-10M/config.json": None,
            "Geneformer-V1-10M/model.safetensors": SHA,
            "geneformer/gene_dictionaries_30m/token_dictionary_gc30M.pkl": None,
        }
        manifest = Manifest(tmp_path / "checksums.tsv")
        dest = tmp_path / "models" / "geneformer_v1_10m"
        info = hf_snapshot("ctheodoris/Geneformer", REVISION, dest, wanted, endpoint=hub.url, manifest=manifest)
        for path in wanted:
            assert (dest / path).read_bytes() == files[path]
        assert not (dest / "Geneformer-V2-316M").exists() and not (dest / "README.md").exists()
        assert not (dest / ".cache").exists() and info["version"] == REVISION
        assert manifest.row("geneformer_v1_10m/Geneformer-V1-10M/config.json")["version"] == REVISION
        assert [h for h in hub.hits() if "/tree/" in h][0].startswith(
            f"GET /api/models/ctheodoris/Geneformer/tree/{REVISION}"
        )
        assert any(h == "GET /repos/" + hashlib.sha256(DATA).hexdigest() for h in hub.hits("cdn-lfs.hf.co"))
        with pytest.raises(
            DownloadError,
            match=r"Hugging Face did not give ctheodoris/Geneformer@ffffffffffff "
            r"\(RevisionNotFoundError",
        ):
            hf_snapshot("ctheodoris/Geneformer", "f" * 40, tmp_path / "models" / "again", wanted, endpoint=hub.url)
        assert not (tmp_path / "models" / "again").exists()
        with pytest.raises(DownloadError, match="revision 'main' is not a commit sha"):
            hf_snapshot("ctheodoris/Geneformer", "main", tmp_path / "models" / "x", wanted, endpoint=hub.url)


def test_full_disk_stops_at_once_and_resumes_after_space_is_freed(net, small_disk):
    big = bytes(range(256)) * 12_000  # 3 MB: does not fit the 1 MiB disk
    net.file("raw.githubusercontent.com", "/YosefLab/scVI-data/master/gene_info.csv", big)
    dest = small_disk.path / "big.h5ad"
    with pytest.raises(
        DownloadError,
        match=r"\.big\.h5ad\.part: cannot write the download \(No space left on device\); "
        r"the \d+ bytes already fetched are kept: free space",
    ) as e:
        get(GH, dest, retries=3)
    assert len(net.hits("raw.githubusercontent.com")) == 1  # a full disk is not retried
    kept = int(re.search(r"the (\d+) bytes", str(e.value)).group(1))
    assert kept > 0 and leftovers(small_disk.path) == [".big.h5ad.part"]
    small_disk.resize(8 << 20)
    get(GH, dest, sha256=hashlib.sha256(big).hexdigest())
    assert dest.read_bytes() == big and net.requests[-1][3].get("range") == f"bytes={kept}-"


GENEFORMER = {"Geneformer-V1-10M/config.json": b'{"model_type": "bert"}', "Geneformer-V1-10M/model.safetensors": DATA}


def test_hugging_face_follows_hf_endpoint_unless_the_config_names_an_endpoint(tmp_path, monkeypatch):
    """A user's mirror in HF_ENDPOINT is asked (huggingface.co is not); an endpoint in the config still wins."""
    import huggingface_hub  # noqa: F401 - imported before HF_ENDPOINT is set: our code must read it at each call

    from cellplm.bench.data.services import fetch_model

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    spec = {
        "source": {"kind": "huggingface", "repo_id": "ctheodoris/Geneformer", "revision": REVISION},
        "files": {"Geneformer-V1-10M/config.json": None, "Geneformer-V1-10M/model.safetensors": SHA},
    }
    with FakeInternet(tmp_path, direct_host="hf-mirror.com") as mirror:
        hugging_face(
            mirror,
            "ctheodoris/Geneformer",
            REVISION,
            GENEFORMER,
            host="hf-mirror.com",
            lfs={"Geneformer-V1-10M/model.safetensors"},
        )  # huggingface.co itself answers 404 to all
        for k, v in mirror.env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("HF_ENDPOINT", mirror.url + "/")
        manifest = Manifest(tmp_path / "checksums.tsv")
        info = fetch_model(spec, tmp_path / "models" / "gf", manifest, endpoints={})
        assert (tmp_path / "models" / "gf" / "Geneformer-V1-10M" / "model.safetensors").read_bytes() == DATA
        assert info["url"] == f"{mirror.url}/ctheodoris/Geneformer/tree/{REVISION}"
        assert manifest.row("gf/Geneformer-V1-10M/config.json")["url"] == info["url"]
        assert any(
            h.startswith(f"GET /api/models/ctheodoris/Geneformer/tree/{REVISION}") for h in mirror.hits("hf-mirror.com")
        )
        assert mirror.hits("huggingface.co") == []
        # the config's endpoint wins over HF_ENDPOINT (here a port where nothing listens)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
        again = fetch_model(spec, tmp_path / "models" / "gf2", endpoints={"huggingface": mirror.url})
        assert again["url"].startswith(mirror.url) and (tmp_path / "models" / "gf2" / "Geneformer-V1-10M").is_dir()


def test_the_schema_sets_no_hugging_face_endpoint_so_that_hf_endpoint_applies(tmp_path):
    """Snakemake fills the schema's defaults into the config: a default endpoint there would override HF_ENDPOINT."""
    from snakemake.utils import validate

    from cellplm.bench.data.services import ENDPOINTS

    full = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    schema = {"$schema": full["$schema"], **full["properties"]["download"]}
    (tmp_path / "download.schema.yaml").write_text(yaml.safe_dump(schema))
    settings = {}
    validate(settings, str(tmp_path / "download.schema.yaml"))
    assert settings["endpoints"] == ENDPOINTS and "huggingface" not in settings["endpoints"]
    described = schema["properties"]["endpoints"]["properties"]["huggingface"]["description"]
    assert "HF_ENDPOINT" in described and "huggingface.co" in described
