"""The pretraining command line is defined once: the workflow's arguments parse back to the config's values."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest
import yaml

from cellplm.pretrain.options import WORKFLOW_KEYS, build_parser, config_args
from conftest import ROOT


def schema_defaults() -> dict:
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]["cellplm"]["properties"]["pretrain"]["properties"]
    return {k: props[k]["default"] for k in WORKFLOW_KEYS}


def old_pretrain_args(p) -> str:
    """The command line rules/common.smk::pretrain_args() spelled by hand before config_args (the same string
    keeps the pretraining jobs of earlier runs from rerunning)."""
    args = (
        f"--shape {p['shape']} --epochs {p['epochs']} --seed {p['seed']} --lr {p['lr']} --warmup-steps "
        f"{p['warmup_steps']}"
        f" --max-cells-per-sentence {p['max_cells_per_sentence']} --val-sentences {p['val_sentences']}"
        f" --device {p['device']} --precision {p['precision']} --sentence-key batch --spatial-key spatial --no-progress"
    )
    return args + (" --spatial-pe" if p["spatial_pe"] else "") + (" --resume" if p["resume"] else "")


SECTIONS = [
    {},
    {
        "shape": "tiny",
        "epochs": 3,
        "seed": 7,
        "lr": 0.001,
        "warmup_steps": 0,
        "max_cells_per_sentence": 50,
        "val_sentences": 0,
        "device": "cuda:1",
        "precision": "bf16",
        "spatial_pe": True,
        "resume": True,
    },
    {"lr": 2e-05, "precision": "fp32", "resume": True},
]


@pytest.mark.parametrize("overrides", SECTIONS)
def test_config_args_parse_back_to_the_config(overrides):
    section = {**schema_defaults(), **overrides, "corpus": {}, "threads": 4, "gpu": False}  # workflow-only keys too
    args = config_args(section)
    parsed = build_parser().parse_args(["corpus.h5ad", "--out", "run", *args])
    for key in WORKFLOW_KEYS:
        assert getattr(parsed, key) == section[key], key
    assert (parsed.sentence_key, parsed.spatial_key, parsed.no_progress) == ("batch", "spatial", True)
    assert shlex.join(args) == old_pretrain_args(section)  # the same command line: no job reruns


def test_config_args_names_missing_settings():
    with pytest.raises(KeyError, match="missing epochs"):
        config_args({k: v for k, v in schema_defaults().items() if k != "epochs"})


def test_options_import_without_torch():
    code = "import sys, cellplm.pretrain.options; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_cli_help_lists_every_option():
    out = subprocess.run([sys.executable, "-m", "cellplm.pretrain", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--warmup-steps", "--spatial-pe", "--max-cells-per-sentence", "--resume", "--no-progress"):
        assert flag in out.stdout
