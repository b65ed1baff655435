"""Downloads against a local HTTP server on 127.0.0.1: good file, wrong checksum, 404, interrupted transfer."""

import hashlib
import re

import pytest

from cellplm.bench.download import Manifest, fetch
from cellplm.bench.errors import DownloadError
from httpserver import LocalServer

DATA = bytes(range(256)) * 4000  # about 1 MB
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server():
    with LocalServer() as s:
        s.state.files["/data.h5ad"] = DATA
        yield s


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_good_file_with_checksum(server, tmp_path):
    info = fetch(f"{server.url}/data.h5ad", tmp_path / "data.h5ad", sha256=SHA, backoff=0, progress=False)
    assert (tmp_path / "data.h5ad").read_bytes() == DATA
    assert info["verified_against"] == "config" and leftovers(tmp_path) == ["data.h5ad"]


def test_first_download_recorded_then_verified(server, tmp_path):
    manifest = Manifest(tmp_path / "checksums.tsv")
    dest = tmp_path / "dl" / "data.h5ad"
    assert fetch(f"{server.url}/data.h5ad", dest, manifest=manifest, progress=False)["verified_against"] == "recorded now"
    assert manifest.get("data.h5ad") == SHA
    dest.unlink()
    server.state.files["/data.h5ad"] = DATA[:-1] + b"x"  # the remote file changed
    with pytest.raises(DownloadError, match=f"sha256 mismatch .* expected {SHA} from manifest"):
        fetch(f"{server.url}/data.h5ad", dest, manifest=manifest, backoff=0, progress=False)
    assert leftovers(dest.parent) == []


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="sha256 mismatch") as e:
        fetch(f"{server.url}/data.h5ad", tmp_path / "data.h5ad", sha256="0" * 64, backoff=0, progress=False)
    assert "\n" not in str(e.value)
    assert leftovers(tmp_path) == []


def test_404_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match=r"/missing.h5ad: HTTP 404 Not Found; nothing was saved"):
        fetch(f"{server.url}/missing.h5ad", tmp_path / "missing.h5ad", backoff=0, progress=False)
    assert leftovers(tmp_path) == []


def test_interrupted_transfer_resumes(server, tmp_path):
    server.state.cut_after["/data.h5ad"] = 300_000
    server.state.cuts_left["/data.h5ad"] = 2  # two dropped connections, then it completes
    fetch(f"{server.url}/data.h5ad", tmp_path / "data.h5ad", sha256=SHA, retries=3, backoff=0, progress=False)
    assert (tmp_path / "data.h5ad").read_bytes() == DATA
    ranges = [r for p, r in server.state.requests if p == "/data.h5ad"]
    assert ranges == [None, "bytes=300000-", "bytes=600000-"]


def test_interrupted_run_resumes_on_next_run(server, tmp_path):
    server.state.cut_after["/data.h5ad"] = 500_000
    server.state.cuts_left["/data.h5ad"] = 1
    with pytest.raises(DownloadError, match="rerun to resume from 500000 bytes"):
        fetch(f"{server.url}/data.h5ad", tmp_path / "data.h5ad", sha256=SHA, retries=0, backoff=0, progress=False)
    assert leftovers(tmp_path) == [".data.h5ad.part"]  # the final name is never half-written
    fetch(f"{server.url}/data.h5ad", tmp_path / "data.h5ad", sha256=SHA, retries=0, backoff=0, progress=False)
    assert (tmp_path / "data.h5ad").read_bytes() == DATA and leftovers(tmp_path) == ["data.h5ad"]


def test_html_page_is_refused(server, tmp_path):
    server.state.files["/drive"] = b"<html>quota exceeded</html>"
    server.state.html.add("/drive")
    with pytest.raises(DownloadError, match="HTML page instead of the file"):
        fetch(f"{server.url}/drive", tmp_path / "x.tar.gz", backoff=0, progress=False)
    assert leftovers(tmp_path) == []


def test_cellxgene_dataset_id_resolved(server, tmp_path):
    dataset_id = "c05e6940-729c-47bd-a2a6-6ce3730c4919"
    server.state.json[f"/curation/v1/datasets/{dataset_id}"] = {
        "assets": [{"filetype": "RDS", "url": f"{server.url}/x.rds"},
                   {"filetype": "H5AD", "url": f"{server.url}/data.h5ad"}]}
    info = fetch(f"cellxgene://{dataset_id}", tmp_path / "cxg.h5ad", sha256=SHA, progress=False,
                 cellxgene_api=f"{server.url}/curation/v1")
    assert info["resolved_url"].endswith("/data.h5ad") and (tmp_path / "cxg.h5ad").read_bytes() == DATA


def test_full_disk_stops_at_once_and_resumes_after_space_is_freed(server, small_disk):
    big = bytes(range(256)) * 12_000  # 3 MB: does not fit the 1 MiB disk
    server.state.files["/big.h5ad"] = big
    dest = small_disk.path / "big.h5ad"
    with pytest.raises(DownloadError, match=r"\.big\.h5ad\.part: cannot write the download \(No space left on device\); "
                                            r"the \d+ bytes already fetched are kept: free space") as e:
        fetch(f"{server.url}/big.h5ad", dest, retries=3, backoff=0, progress=False)
    assert len(server.state.requests) == 1  # a full disk is not retried
    kept = int(re.search(r"the (\d+) bytes", str(e.value)).group(1))
    assert kept > 0 and leftovers(small_disk.path) == [".big.h5ad.part"]
    small_disk.resize(8 << 20)
    fetch(f"{server.url}/big.h5ad", dest, sha256=hashlib.sha256(big).hexdigest(), backoff=0, progress=False)
    assert dest.read_bytes() == big and server.state.requests[-1] == ("/big.h5ad", f"bytes={kept}-")
