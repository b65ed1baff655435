"""Ours beside the published table, reading for reading: the dataset fingerprint, every reason a pair is not
comparable, the differences, our number under each candidate reading with the "reading uncertain" flag (table,
Markdown and plot), and the published table's reading columns, against values worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from cellplm.bench.errors import InputError
from cellplm.bench.io import write_tsv
from cellplm.bench.report import plots
from cellplm.bench.report.aggregate import (
    checkpoint_reason,
    comparison,
    dataset_table,
    fingerprint,
    markdown,
    read_published,
    read_published_scores,
    with_notes,
)
from cellplm.bench.report.readings import READINGS, readings_text, split_readings
from conftest import ROOT


def test_a_methods_note_goes_on_its_rows(readings):
    """A configured note (methods.<id>.note) travels with the method's rows: a column of the tables, and after the
    method's name (and its checkpoint tag) on its row of every metric table of benchmark.md."""
    cfg, ds, ours, comp = readings
    notes = {"scanvi": "a caveat", "cellplm_finetune": "another"}
    tagged = with_notes(ours, notes).set_index("method")["note"]
    assert (tagged.loc["scanvi"] == "a caveat").all() and (tagged.loc["geneformer"] == "").all()
    runs = (
        ours[["dataset", "split", "method", "checkpoint", "device"]]
        .drop_duplicates()
        .assign(seed=0, status="ok", reason="")
    )
    md = markdown(ours, comp, runs, pd.DataFrame(), cfg, ds, notes=notes)
    assert md.count("| scANVI — a caveat | ") == 3  # one row per metric table the summary has (3 readings)
    assert md.count("| CellPLM (fine-tuned) [released (20230926_85M)] — another | ") == 3
    assert "| Geneformer | " in md and "Geneformer —" not in md
    assert "— a caveat" not in markdown(ours, comp, runs, pd.DataFrame(), cfg, ds)


PUBLISHED = pd.DataFrame(
    [
        {
            "method": "CellPLM",
            "dataset": "PBMC12K",
            "value": 0.975,
            "std": np.nan,
            "reading": "tm_macro_accuracy",
            "plausible_readings": "tm_macro_accuracy;tm_macro_accuracy_swapped",
            "reading_basis": "b1",
            "source": "s",
        },
        {
            "method": "scANVI",
            "dataset": "PBMC12K",
            "value": 0.930,
            "std": 0.0148,
            "reading": "tm_macro_accuracy_swapped",
            "plausible_readings": "tm_macro_accuracy_swapped;accuracy",
            "reading_basis": "b2",
            "source": "s",
        },
        {
            "method": "Geneformer",
            "dataset": "PBMC12K",
            "value": np.nan,
            "std": np.nan,
            "reading": "tm_macro_accuracy",
            "plausible_readings": "tm_macro_accuracy",
            "reading_basis": "b1",
            "source": "s",
        },
        {
            "method": "scDiff",
            "dataset": "PBMC12K",
            "value": 0.967,
            "std": 0.0042,
            "reading": "tm_macro_accuracy_swapped",
            "plausible_readings": "tm_macro_accuracy_swapped",
            "reading_basis": "b2",
            "source": "s",
        },
    ]
)
PUBLISHED_DATASETS = pd.DataFrame([{"dataset": "PBMC12K", "cells": 11990, "genes": 3346, "classes": 9, "source": "s"}])
QC = {
    "n_cells": 11990,
    "n_genes": 3346,
    "n_cell_types": 9,
    "n_batches": 2,
    "source_record": {"files": [], "version": "", "sha256": "ab" * 32},
}


def config(variant="published_file", param_set="default", splits=("published",)):
    return {
        "run": {
            "datasets": ["pbmc12k"],
            "methods": ["cellplm_finetune", "scanvi", "geneformer"],
            "param_set": param_set,
            "seeds": [0],
            "splits": list(splits),
        },
        "splits": {"published": {"strategy": "random"}, "batch_holdout": {"strategy": "batch_holdout"}},
        "datasets": {
            "pbmc12k": {
                "published_as": "PBMC12K",
                "variant": variant,
                "splits": None,
                "source": {"kind": "archive", "filename": "a.tar.gz", "member": "PBMC12K_processed.h5ad"},
            }
        },
        "methods": {
            "cellplm_finetune": {"published_as": "CellPLM", "label": "CellPLM (fine-tuned)"},
            "scanvi": {"published_as": "scANVI", "label": "scANVI"},
            "geneformer": {"published_as": "Geneformer", "label": "Geneformer"},
        },
        "published": "config/published_scores.tsv",
    }


def summary(rows):
    """Summary rows: (split, method, metric, mean, std, n_seeds, checkpoint)."""
    return pd.DataFrame(
        [
            {
                "dataset": "pbmc12k",
                "split": s,
                "method": m,
                "metric": metric,
                "mean": mean,
                "std": std,
                "n_seeds": n,
                "n_runs": 3,
                "statuses": "ok" if n else "not_applicable",
                "reason": "" if n else "no model",
                "checkpoint": ck,
                "device": "cuda (NVIDIA H200)",
            }
            for s, m, metric, mean, std, n, ck in rows
        ]
    )


OURS = [
    ("published", "cellplm_finetune", "tm_macro_accuracy", 0.95, 0.01, 3, "released (20230926_85M)"),
    ("published", "cellplm_finetune", "tm_macro_accuracy_swapped", 0.50, 0.01, 3, "released (20230926_85M)"),
    ("published", "scanvi", "tm_macro_accuracy", 0.10, 0.0, 3, ""),
    ("published", "scanvi", "tm_macro_accuracy_swapped", 0.90, 0.02, 3, ""),
    ("published", "geneformer", "tm_macro_accuracy", np.nan, np.nan, 0, ""),
]


def test_each_published_value_meets_our_number_of_its_reading():
    cfg = config()
    ds = dataset_table(cfg, {"pbmc12k": QC}, PUBLISHED_DATASETS)
    assert ds.loc[0, "fingerprint"] == "matches (cells 11,990, genes 3,346, classes 9)" and ds.loc[0, "comparable"]
    assert ds.loc[0, "published_statistics_source"] == "s"  # published numbers keep their source
    comp = comparison(summary(OURS), PUBLISHED, cfg, ds).set_index("published_method")
    # CellPLM: its own reading (tm_macro_accuracy 0.95, not the 0.50 of the other reading), diffed by hand
    assert comp.loc["CellPLM", "reading"] == "tm_macro_accuracy" and comp.loc["CellPLM", "ours_mean"] == 0.95
    assert comp.loc["CellPLM", "difference"] == pytest.approx(0.95 - 0.975) and comp.loc["CellPLM", "comparable"]
    assert comp.loc["CellPLM", "device"] == "cuda (NVIDIA H200)" and comp.loc["scDiff", "device"] == ""
    # scANVI: the copied scDiff row is macro precision: our swapped reading, 0.90 (not the 0.10 of the other)
    assert comp.loc["scANVI", "ours_mean"] == 0.90 and comp.loc["scANVI", "difference"] == pytest.approx(-0.03)
    # nothing published for Geneformer, and our run did not apply: both said, no difference
    assert np.isnan(comp.loc["Geneformer", "difference"])
    assert comp.loc["Geneformer", "not_comparable_reason"] == (
        "nothing published (the table shows '-'); no successful run (not_applicable: no model)"
    )
    # a published method we do not run is listed, not hidden
    assert (
        comp.loc["scDiff", "method"] == "(not run here)"
        and comp.loc["scDiff", "not_comparable_reason"] == "method not run here"
    )
    assert comp.loc["scDiff", "published_value"] == 0.967


@pytest.mark.parametrize(
    "label, reason",
    [
        (
            "random initialisation (85M shape)",
            "random initialisation (85M shape), not the pretrained weights behind the published row",
        ),
        ("pretrained here (tiny, 4 epochs)", "checkpoint pretrained here (tiny, 4 epochs), not the authors' release"),
        (
            "pretrained (/data/scgpt)",
            "weights not known to be the published ones (pretrained (/data/scgpt); set "
            "checkpoint_kind: released if they are)",
        ),
        ("released (20231027_85M)", ""),
    ],
)
def test_weights_that_are_not_the_published_ones(label, reason):
    assert checkpoint_reason(label) == reason
    cfg = config()
    ds = dataset_table(cfg, {"pbmc12k": QC}, PUBLISHED_DATASETS)
    rows = [r[:6] + (label,) for r in OURS[:2]]
    comp = comparison(summary(rows), PUBLISHED, cfg, ds).set_index("published_method")
    assert comp.loc["CellPLM", "not_comparable_reason"] == reason
    assert np.isnan(comp.loc["CellPLM", "difference"]) == bool(reason)


def test_data_split_and_parameters_that_are_not_the_published_ones():
    small = {**QC, "n_cells": 700, "n_genes": 765, "n_cell_types": 10}
    cfg = config(variant="other")
    ds = dataset_table(cfg, {"pbmc12k": small}, PUBLISHED_DATASETS)
    assert ds.loc[0, "fingerprint"] == (
        "differs: cells 700 vs published 11,990; genes 765 vs published 3,346; classes 10 vs published 9"
    )
    comp = comparison(summary(OURS), PUBLISHED, cfg, ds).set_index("published_method")
    assert comp.loc["CellPLM", "not_comparable_reason"] == f"not the published dataset ({ds.loc[0, 'fingerprint']})"
    # origin data needs a published fingerprint to be confirmed; a matching one confirms it
    cfg = config(variant="origin")
    assert dataset_table(cfg, {"pbmc12k": QC}, PUBLISHED_DATASETS).loc[0, "comparable"]
    unknown = dataset_table(cfg, {"pbmc12k": QC}, PUBLISHED_DATASETS.iloc[0:0])
    assert unknown.loc[0, "not_comparable_reason"] == (
        "rebuilt from origin, and no published statistics confirm it is the published data"
    )
    # another split protocol, quick test parameters
    cfg = config(param_set="test", splits=("published", "batch_holdout"))
    ds = dataset_table(cfg, {"pbmc12k": QC}, PUBLISHED_DATASETS)
    rows = OURS + [("batch_holdout",) + r[1:] for r in OURS]
    comp = comparison(summary(rows), PUBLISHED, cfg, ds)
    held = comp[(comp["split"] == "batch_holdout") & (comp["published_method"] == "CellPLM")].iloc[0]
    assert held["not_comparable_reason"] == (
        "split 'batch_holdout' is not the published protocol; quick test "
        "parameters (run.param_set: test), not the protocol's"
    )
    assert comp["difference"].isna().all()


def test_partial_fingerprint_and_the_shipped_tables():
    assert fingerprint(QC, {"cells": 11990, "genes": np.nan, "classes": 9}) == (
        "matches (cells 11,990, classes 9)",
        True,
    )
    assert fingerprint(QC, None) == ("no published statistics", None)
    scores = read_published_scores(ROOT / "config/published_scores.tsv")
    assert set(scores["reading"]) == {"tm_macro_accuracy", "tm_macro_accuracy_swapped"}
    own = scores["method"].isin(["scGPT", "Geneformer", "CellPLM"])
    assert (scores.loc[own, "reading"] == "tm_macro_accuracy").all()
    assert (scores.loc[~own, "reading"] == "tm_macro_accuracy_swapped").all()
    assert len(scores) == 8 * 6 and scores["reading_basis"].str.startswith("inferred").all()
    datasets = read_published(ROOT / "config/published_datasets.tsv").set_index("dataset")
    assert datasets.loc["PBMC12K", ["cells", "genes", "classes"]].tolist() == [11990, 3346, 9]


# ---- every reading, side by side ------------------------------------------------------------------------------

CK = "released (20230926_85M)"
# Our three readings: CellPLM's 0.020 apart (reading uncertain), scANVI's 0.004 apart (they agree), Geneformer none.
READING_ROWS = [
    ("published", "cellplm_finetune", "tm_macro_accuracy", 0.95, 0.01, 3, CK),
    ("published", "cellplm_finetune", "tm_macro_accuracy_swapped", 0.97, 0.02, 3, CK),
    ("published", "cellplm_finetune", "accuracy", 0.96, 0.0, 3, CK),
    ("published", "scanvi", "tm_macro_accuracy", 0.931, 0.01, 3, ""),
    ("published", "scanvi", "tm_macro_accuracy_swapped", 0.930, 0.01, 3, ""),
    ("published", "scanvi", "accuracy", 0.934, 0.002, 3, ""),
    *(("published", "geneformer", r, np.nan, np.nan, 0, "") for r in READINGS),
]


@pytest.fixture
def readings():
    """(config, datasets, summary, comparison) of the hand-made readings above."""
    cfg = config()
    ds = dataset_table(cfg, {"pbmc12k": QC}, PUBLISHED_DATASETS)
    ours = summary(READING_ROWS)
    return cfg, ds, ours, comparison(ours, PUBLISHED, cfg, ds)


def test_every_published_value_beside_our_three_readings(readings):
    comp = readings[3].set_index("published_method")
    cellplm, scanvi = comp.loc["CellPLM"], comp.loc["scANVI"]
    assert [cellplm[f"ours_{r}"] for r in READINGS] == [0.95, 0.97, 0.96]
    assert [cellplm[f"ours_{r}_std"] for r in READINGS] == [0.01, 0.02, 0.0]
    assert [scanvi[f"ours_{r}"] for r in READINGS] == [0.931, 0.930, 0.934]
    # the headline stays the favoured reading's: CellPLM's tm_macro_accuracy, scANVI's swapped one
    assert cellplm["ours_mean"] == 0.95 and cellplm["difference"] == pytest.approx(0.95 - 0.975)
    assert scanvi["ours_mean"] == 0.930 and scanvi["difference"] == pytest.approx(0.0)
    assert cellplm["plausible_readings"] == "tm_macro_accuracy;tm_macro_accuracy_swapped"
    # 0.97 - 0.95 > 0.005: flagged, and said in the notes; 0.934 - 0.930 is not
    assert cellplm["reading_uncertain"] and cellplm["readings_spread"] == pytest.approx(0.02)
    assert cellplm["notes"] == (
        "reading uncertain: our readings range from 0.950 (tm_macro_accuracy) to 0.970 "
        "(tm_macro_accuracy_swapped), 0.020 apart (more than 0.005)"
    )
    assert not scanvi["reading_uncertain"] and scanvi["readings_spread"] == pytest.approx(0.004)
    assert scanvi["notes"] == "" and cellplm["comparable"] and scanvi["comparable"]
    # no reading at all (a run that did not apply, a method not run here): nothing to flag
    for method in ("Geneformer", "scDiff"):
        row = comp.loc[method]
        assert all(np.isnan(row[f"ours_{r}"]) for r in READINGS) and np.isnan(row["readings_spread"])
        assert not row["reading_uncertain"] and row["notes"] == ""


def test_markdown_shows_the_three_readings_and_the_flag(readings):
    cfg, ds, ours, comp = readings
    runs = (
        ours[["dataset", "split", "method", "checkpoint", "device"]]
        .drop_duplicates()
        .assign(seed=0, status="ok", reason="")
    )
    md = markdown(ours, comp, runs, pd.DataFrame(), cfg, ds)
    assert (
        "| ours, `tm_macro_accuracy` | ours, `tm_macro_accuracy_swapped` | ours, `accuracy` | favoured reading | "
        "difference under the favoured reading | reading uncertain |" in md
    )
    # bold: the favoured reading; in parentheses: a reading the row's plausible_readings leave out
    assert (
        "| pbmc12k | cellplm_finetune (released (20230926_85M)) | published: 0.975 (CellPLM) | **0.950 ± 0.010** | "
        "0.970 ± 0.020 | (0.960 ± 0.000) | `tm_macro_accuracy` | -0.025 | **yes**: 0.020 apart | – | s |"
    ) in md
    assert (
        "| pbmc12k | scanvi | published: 0.930 ± 0.015 (scANVI) | (0.931 ± 0.010) | **0.930 ± 0.010** | "
        "0.934 ± 0.002 | `tm_macro_accuracy_swapped` | +0.000 | no: 0.004 apart | – | s |"
    ) in md
    assert (
        "| pbmc12k | (not run here) | published: 0.967 ± 0.004 (scDiff) | – | – | – | `tm_macro_accuracy_swapped` "
        "| – | – | method not run here | s |" in md
    )
    assert readings_text("config/published_scores.tsv") in md and "macro-averaged (balanced accuracy)" not in md


def test_plot_marks_every_reading_and_the_uncertain_rows(readings, tmp_path, monkeypatch):
    comp = readings[3]
    write_tsv(comp, tmp_path / "comparison.tsv")  # as the plots job reads it back
    back = pd.read_csv(tmp_path / "comparison.tsv", sep="\t")
    plots.published_comparison(back, {}, tmp_path / "published.png")
    assert (tmp_path / "published.png").stat().st_size > 5000
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    plots.published_comparison(back, {}, tmp_path / "unused.png")
    ax = figures[0].axes[0]
    points = {c.get_label(): c for c in ax.collections}

    def at(label):  # (x, y) of one marker kind; x: 0 CellPLM, 1 scANVI, 2 Geneformer (no reading), offset per reading
        return [tuple(np.round(xy, 3)) for xy in points[label].get_offsets().tolist()]

    # the three readings side by side in READINGS order; filled (and blue: comparable): the favoured one
    assert at("ours, tm_macro_accuracy (favoured, comparable)") == [(-0.22, 0.95)]
    assert at("ours, tm_macro_accuracy") == [(0.78, 0.931)]
    assert at("ours, tm_macro_accuracy_swapped (favoured, comparable)") == [(1.0, 0.93)]
    assert at("ours, tm_macro_accuracy_swapped") == [(0.0, 0.97)]
    assert at("ours, accuracy") == [(0.22, 0.96), (1.22, 0.934)]
    assert [np.round(s[0], 3).tolist() for s in points["published"].get_segments()] == [[-0.42, 0.975], [0.58, 0.93]]
    band = [p.get_x() for p in ax.patches if p.get_label() == plots.UNCERTAIN_LABEL]
    assert np.allclose(band, [-0.45])  # behind CellPLM only
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0].endswith("reading uncertain") and "uncertain" not in ticks[1] + ticks[2]
    assert ax.get_ylim()[0] > 0.85  # zoomed on the values: gaps of a few thousandths stay visible
    plots.plt.close(figures[0])


def test_shipped_table_has_plausible_readings_for_every_row():
    scores = read_published_scores(ROOT / "config/published_scores.tsv")
    plausible = scores.set_index(["method", "dataset"])["plausible_readings"].map(split_readings)
    assert plausible.map(lambda p: bool(p) and set(p) <= set(READINGS)).all()
    assert all(r in p for r, p in zip(scores["reading"], plausible))
    by_method = scores.groupby("method")["plausible_readings"].agg(set)
    assert (by_method.map(len) == 1).all()  # one attribution per method, the same on every dataset
    expected = {
        "CellPLM": "tm_macro_accuracy;tm_macro_accuracy_swapped",
        "scGPT": "tm_macro_accuracy;tm_macro_accuracy_swapped;accuracy",
        "Geneformer": "tm_macro_accuracy;tm_macro_accuracy_swapped;accuracy",
        "SingleCellNet": "tm_macro_accuracy_swapped;accuracy",
        "ACTINN": "tm_macro_accuracy_swapped;accuracy",
        "CellTypist": "tm_macro_accuracy_swapped;accuracy",
        "scANVI": "tm_macro_accuracy_swapped",
        "scDiff": "tm_macro_accuracy_swapped",
    }
    assert by_method.map(lambda s: next(iter(s))).to_dict() == expected
    dance = scores[scores["method"].isin(["SingleCellNet", "ACTINN", "CellTypist"])]
    assert dance["reading_basis"].str.contains("dance/utils/metrics.py::acc").all()


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"plausible_readings": "tm_macro_accuracy;macro_recall"},
            "unknown reading 'macro_recall' (known readings: tm_macro_accuracy, tm_macro_accuracy_swapped, accuracy)",
        ),
        ({"reading": "balanced_accuracy"}, "unknown reading 'balanced_accuracy'"),
        (
            {"reading": "accuracy"},
            "the favoured reading 'accuracy' is not among its plausible_readings "
            "'tm_macro_accuracy;tm_macro_accuracy_swapped'",
        ),
        ({"plausible_readings": np.nan}, "plausible_readings is empty"),
    ],
)
def test_a_bad_reading_in_the_published_table_is_one_line_naming_the_file(tmp_path, change, message):
    path = tmp_path / "scores.tsv"
    PUBLISHED.head(1).assign(**change).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError) as e:
        read_published_scores(path)
    assert str(e.value).startswith(f"{path}: CellPLM / PBMC12K: ") and message in str(e.value)
    assert "\n" not in str(e.value)
    PUBLISHED.drop(columns="plausible_readings").to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match=r"scores.tsv: missing column\(s\) plausible_readings \("):
        read_published_scores(path)


def test_a_hash_inside_a_published_row_is_data_not_a_comment(tmp_path):
    """Only lines that start with # are comments: a source URL's #fragment stays in its row."""
    path = tmp_path / "scores.tsv"
    path.write_text("# the header comment\n")
    with path.open("a") as out:
        PUBLISHED.head(2).assign(source="https://example.org/paper#table-2").to_csv(out, sep="\t", index=False)
    table = read_published_scores(path)
    assert len(table) == 2 and (table["source"] == "https://example.org/paper#table-2").all()
    assert table["value"].tolist() == PUBLISHED["value"].head(2).tolist()


def test_source_record_of_a_file_placed_by_hand_is_checked_against_its_pin(tmp_path):
    """The manual route (a download saved by hand): its sha256 is still compared with the config's pin."""
    import hashlib

    from cellplm.bench.data.download import Manifest
    from cellplm.bench.data.sources import source_record

    path = tmp_path / "pancreas.h5ad"
    path.write_bytes(b"placed by hand")
    digest = hashlib.sha256(b"placed by hand").hexdigest()
    source = {
        "kind": "download",
        "url": "https://ndownloader.figshare.com/files/36086813",
        "filename": "pancreas.h5ad",
        "sha256": "0" * 64,
    }
    rec = source_record(source, path, Manifest(tmp_path / "checksums.tsv"))
    assert rec["sha256"] == digest and rec["files"][0]["sha256"] == digest
    assert rec["files"][0]["recorded"] == "not in the manifest (placed by hand?)"
    cfg = config(variant="origin")
    cfg["datasets"]["pbmc12k"]["source"] = source
    table = dataset_table(cfg, {"pbmc12k": {**QC, "source_record": rec}}, PUBLISHED_DATASETS)
    assert table.loc[0, "pinned_sha256_ok"] == False  # noqa: E712 - the pin says another file
    assert table.loc[0, "downloads"] == f"pancreas.h5ad sha256 {digest}"


def test_two_of_our_methods_meet_one_published_row_and_say_how_their_sentences_were_made():
    """cellplm_finetune (ours) and cellplm_upstream (the authors' code) are both CellPLM: each gets its own row beside
    the published CellPLM value, with the sentence grouping each used disclosed as an assumption."""
    cfg = config()
    cfg["run"]["methods"].append("cellplm_upstream")
    cfg["methods"]["cellplm_upstream"] = {"published_as": "CellPLM"}
    ds = dataset_table(cfg, {"pbmc12k": QC}, PUBLISHED_DATASETS)
    grouping = "one per obs['batch'] value (= dataset column 'batch'; 2 sentences)"
    ours = summary(
        OURS + [("published", "cellplm_upstream", "tm_macro_accuracy", 0.96, 0.02, 3, "released (20230926_85M)")]
    ).assign(sentences="")
    ours.loc[ours["method"].str.startswith("cellplm"), "sentences"] = grouping
    comp = comparison(ours, PUBLISHED, cfg, ds)
    cellplm = comp[comp["published_method"] == "CellPLM"].set_index("method")
    assert sorted(cellplm.index) == ["cellplm_finetune", "cellplm_upstream"]
    assert cellplm.loc["cellplm_upstream", "ours_mean"] == 0.96
    assert cellplm.loc["cellplm_upstream", "difference"] == pytest.approx(0.96 - 0.975)
    assert cellplm.loc["cellplm_finetune", "difference"] == pytest.approx(0.95 - 0.975)
    assert (
        cellplm["sentences"] == f"{grouping}; assumed: how the authors grouped this dataset into sentences is not "
        "published"
    ).all()
    assert (comp.loc[comp["published_method"] != "CellPLM", "sentences"] == "").all()
