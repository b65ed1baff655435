"""The CellPLM checkpoint a run uses: release URLs in the authors' Dropbox folder, and the released-architecture
check that every checkpoint claiming to be a release must pass."""

import json
import shutil

import pytest
import torch

from cellplm.bench.checkpoints import link, released_architecture, verify
from cellplm.bench.errors import InputError
from cellplm.bench.checkpoint_plan import release_urls
from conftest import ROOT, released_shaped_state

RELEASES = {
    "folder_url": "https://www.dropbox.com/scl/fo/i5rmxgtqzg7iykt2e9uqm/h",
    "rlkey": "o8hi0xads9ol07o48jdityzv1",
    "sha256": {"20231027_85M.best.ckpt": "a" * 64},
}


def test_release_urls_follow_the_shared_folder_pattern():
    old = release_urls(RELEASES, "20230926_85M")
    assert old == {
        "weights_url": "https://www.dropbox.com/scl/fo/i5rmxgtqzg7iykt2e9uqm/h/ckpt/20230926_85M.best.ckpt"
        "?rlkey=o8hi0xads9ol07o48jdityzv1&dl=1",
        "sha256": None,
        "name": "20230926_85M",
    }
    new = release_urls(RELEASES, "20231027_85M")  # its config is not public: read from the same folder
    assert new["config_url"] == (
        "https://www.dropbox.com/scl/fo/i5rmxgtqzg7iykt2e9uqm/h/ckpt/20231027_85M.config.json"
        "?rlkey=o8hi0xads9ol07o48jdityzv1&dl=1"
    )
    assert new["sha256"] == "a" * 64 and new["config_sha256"] is None


def released_shaped(prefix):
    """A checkpoint of the released architecture at almost no size (expanded zeros) with the packaged config."""
    torch.save({"model_state_dict": released_shaped_state()}, f"{prefix}.best.ckpt")
    shutil.copy(ROOT / "cellplm/resources/20230926_85M.config.json", f"{prefix}.config.json")


def test_released_architecture_is_required_of_a_release(tiny_checkpoint, tmp_path):
    assert len(released_architecture()) == 105
    with pytest.raises(
        InputError,
        match=r"not the released CellPLM 85M architecture \(\d+ of 105 parameters differ, "
        r"e\.g\. .*\): not the authors' file",
    ):
        verify(tiny_checkpoint, "released")
    mine = verify(tiny_checkpoint, "user-supplied")  # not a release: loaded and reported, not refused
    assert not mine["architecture"]["released_architecture"] and "loaded" in mine["load_report"]
    released_shaped(tmp_path / "rel")
    report = verify(tmp_path / "rel", "released")
    assert report["architecture"] == {
        "released_architecture": True,
        "n_keys": 105,
        "n_released_keys": 105,
        "missing": [],
        "extra": [],
        "other_shape": [],
    }
    assert report["loaded_with"] == "weights_only"


def test_a_failed_check_leaves_no_link(tiny_checkpoint, tmp_path):
    out = tmp_path / "released__20230926_85M"
    with pytest.raises(InputError, match="not the released CellPLM 85M architecture"):
        link(
            f"{tiny_checkpoint}.config.json",
            f"{tiny_checkpoint}.best.ckpt",
            out / "model.config.json",
            out / "model.best.ckpt",
            out / "provenance.json",
            source="release",
            kind="released",
            urls={},
        )
    assert sorted(p.name for p in out.iterdir()) == []
    record = link(
        f"{tiny_checkpoint}.config.json",
        f"{tiny_checkpoint}.best.ckpt",
        out / "model.config.json",
        out / "model.best.ckpt",
        out / "provenance.json",
        source="path",
        kind="user-supplied",
        urls={},
    )
    assert (out / "model.best.ckpt").is_symlink() and json.loads((out / "provenance.json").read_text()) == json.loads(
        json.dumps(record)
    )
