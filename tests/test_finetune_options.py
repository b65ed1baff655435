"""The fine-tuning command line is derived from FinetuneConfig: one option per field, with the field's default."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict, fields

import pytest

from cellplm.cli import build_parser
from cellplm.finetune_options import FinetuneConfig, from_args
from conftest import ROOT

BASE = ["finetune", "train.h5ad", "--test", "test.h5ad", "--out", "pred.h5ad"]


def parsed(*args: str) -> dict:
    return from_args(build_parser().parse_args([*BASE, *args]))


def test_defaults_are_finetune_config_defaults():
    assert parsed() == asdict(FinetuneConfig())


@pytest.mark.parametrize(
    "args, expected",
    [
        # the options the command line had before it was derived, spelled as then
        (
            [
                "--shape",
                "tiny",
                "--max-epochs",
                "3",
                "--patience",
                "7",
                "--eval-every",
                "2",
                "--n-hvg",
                "0",
                "--seed",
                "5",
            ],
            {"shape": "tiny", "max_epochs": 3, "patience": 7, "eval_every": 2, "n_hvg": 0, "seed": 5},
        ),
        (
            [
                "--inductive",
                "--no-progress",
                "--device",
                "cpu",
                "--precision",
                "fp32",
                "--group-key",
                "tissue",
                "--min-gene-share",
                "0.1",
                "--min-count-share",
                "0.2",
            ],
            {
                "transductive": False,
                "progress": False,
                "device": "cpu",
                "precision": "fp32",
                "group_key": "tissue",
                "min_gene_share": 0.1,
                "min_count_share": 0.2,
            },
        ),
        # fields the command line now reaches too
        (
            ["--lr", "0.01", "--warmup-epochs", "0", "--dropout", "0.1", "--valid-fraction", "0.2"],
            {"lr": 0.01, "warmup_epochs": 0, "dropout": 0.1, "valid_fraction": 0.2},
        ),
    ],
)
def test_options_parse_to_their_fields(args, expected):
    assert parsed(*args) == {**asdict(FinetuneConfig()), **expected}


def test_every_field_has_one_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["finetune", "--help"])
    help_text = capsys.readouterr().out
    for f in fields(FinetuneConfig):
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        assert help_text.count(flag + " ") + help_text.count(flag + "\n") >= 1, flag
        if not isinstance(f.default, bool):
            assert f"(default: {f.default})" in " ".join(help_text.split()), f.name


def test_bad_choice_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*BASE, "--shape", "huge"])
    assert e.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err


def test_options_import_without_torch():
    code = (
        "import sys, cellplm.finetune_options, cellplm.cli; cellplm.cli.build_parser(); "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
