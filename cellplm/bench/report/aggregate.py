"""Tidy tables from the per-run files: scores, summary over seeds, published comparison, runs, speed."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics import METRIC_LABELS, METRICS
from ..config import dataset_splits, method_labels
from .readings import READING_TOLERANCE, READINGS, check_published, readings_text, split_readings

RUN_KEYS = ["dataset", "split", "method"]


def read_tsvs(paths) -> pd.DataFrame:
    frames = [pd.read_csv(p, sep="\t", keep_default_na=True) for p in paths]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def checkpoint_label(extra: dict, params: dict, pretraining: dict | None = None) -> str:
    """Where a CellPLM row's weights came from, in words; "" for methods without a checkpoint.

    "released (20230926_85M)", "pretrained here (tiny, 6 epochs)", "random initialisation (85M shape)" or
    "user-supplied (<path>)", from the run record's ``extra`` (what the method loaded) or, for CellPLM runs that did
    not finish (the harness keeps no ``extra`` then), from its ``params`` (the ``checkpoint`` the workflow gave it).
    A run of another method that loaded nothing (scGPT or Geneformer without a model, whose params hold only the
    default ``checkpoint_kind``) gets "". ``pretraining``: pretraining.json contents by checkpoint folder, for the
    epochs of a checkpoint made here.
    """
    if "checkpoint_kind" not in extra and "checkpoint" not in params:
        return ""
    loaded = "checkpoint_kind" in extra
    ckpt = extra.get("checkpoint") if loaded else params.get("checkpoint")
    kind = extra.get("checkpoint_kind") if loaded else params.get("checkpoint_kind")
    if not ckpt or ckpt == "random initialisation" or kind == "random initialisation":
        return f"random initialisation ({extra.get('shape') or params.get('shape', '85M')} shape)"
    folder = Path(str(ckpt)).parent
    if kind == "pretrained here":
        pt = dict(extra.get("pretraining") or {})
        file_meta = (pretraining or {}).get(str(folder), {})
        epochs = (
            pt.get("epochs")
            or (pt.get("hyperparameters") or {}).get("epochs")
            or (file_meta.get("pretraining", {}).get("hyperparameters") or {}).get("epochs")
        )
        shape = pt.get("shape") or file_meta.get("pretraining", {}).get("shape") or "?"
        label = f"pretrained here ({shape}, {epochs if epochs is not None else '?'} epochs)"
    elif kind == "released":
        name = folder.name.split("__")[-1] if folder.name.startswith("released__") else Path(str(ckpt)).name
        label = f"released ({name})"
    else:
        label = f"{kind or 'user-supplied'} ({ckpt})"
    return label


def read_records(paths, pretraining: dict | None = None) -> pd.DataFrame:
    rows = []
    for p in paths:
        rec = json.loads(Path(p).read_text())
        versions = rec.pop("versions", {})
        extra = rec.pop("extra", {})
        params = rec.pop("params", {})
        rec["checkpoint"] = checkpoint_label(extra or {}, params or {}, pretraining)
        rec["precision"] = str((extra or {}).get("precision") or "")
        rec["sentences"] = str((extra or {}).get("sentences") or "")
        rec["versions"] = "; ".join(f"{k} {v}" for k, v in versions.items())
        rec["params"] = json.dumps(params, sort_keys=True)
        rec["extra"] = json.dumps(extra, sort_keys=True) if extra else ""
        rows.append(rec)
    return pd.DataFrame(rows)


def read_benchmarks(paths, runs: list[tuple]) -> pd.DataFrame:
    """Snakemake ``benchmark:`` files (wall seconds, sampled max RSS) with their run ids; a file shared by several
    runs (a batch job's) gives each of them an equal share of its wall time."""
    rows = []
    shared = Counter(map(str, paths))
    for p, (d, s, m, seed) in zip(paths, runs):
        b = pd.read_csv(p, sep="\t")
        rows.append(
            {
                "dataset": d,
                "split": s,
                "method": m,
                "seed": int(seed),
                "wall_s": float(b["s"].iloc[0]) / shared[str(p)],
                "benchmark_max_rss_mb": pd.to_numeric(b["max_rss"], errors="coerce").iloc[0],
            }
        )
    return pd.DataFrame(rows)


# What each run record says produced its scores: the weights, the device, the arithmetic (fp32/bf16, for the models
# that record it) and, for CellPLM rows, which column made its sentences (empty where it does not apply).
PROVENANCE = ("checkpoint", "device", "precision", "sentences")
# How the authors grouped each dataset into CellPLM sentences is not published: our grouping is an assumption.
SENTENCES_ASSUMED = "assumed: how the authors grouped this dataset into sentences is not published"


def with_provenance(scores: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Scores with the run's provenance columns (:data:`PROVENANCE`; empty where a method has none)."""
    keys = RUN_KEYS + ["seed"]
    if scores.empty or records.empty:
        return scores.assign(**{c: "" for c in PROVENANCE})
    prov = records[keys + list(PROVENANCE)].drop_duplicates(keys)
    out = scores.drop(columns=list(PROVENANCE), errors="ignore").merge(prov, on=keys, how="left")
    for c in PROVENANCE:
        out[c] = out[c].fillna("").astype(str)
    return out


def with_notes(table: pd.DataFrame, notes: dict[str, str]) -> pd.DataFrame:
    """``table`` with the ``note`` column: the configured note of each row's method (``methods.<id>.note``; a
    zero-shot row's is its embedding's), "" for none, so that a caveat travels with the row it is about."""
    if "method" not in table.columns:
        return table
    return table.assign(note=table["method"].map(notes).fillna("").astype(str))


def labelled(name: str, tags: str = "", note: str = "") -> str:
    """A method's name as benchmark.md shows it: ``name [tags] — note`` (tags: checkpoint, precision)."""
    return name + (f" [{tags}]" if tags else "") + (f" — {note}" if note else "")


def _join(values) -> str:
    return "; ".join(sorted({v for v in values if isinstance(v, str) and v}))


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds (ok runs only), with the count of seeds that succeeded."""
    scores = scores.assign(**{c: "" for c in PROVENANCE if c not in scores.columns})
    ok = scores[scores["status"] == "ok"]
    g = ok.groupby(RUN_KEYS + ["metric"], sort=False)["value"]
    summary = g.agg(
        mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else np.nan, n_seeds="count"
    ).reset_index()
    # Runs with no successful seed still get a row (mean NA) with their status.
    status = (
        scores.groupby(RUN_KEYS + ["metric"], sort=False)
        .agg(
            statuses=("status", lambda s: ",".join(sorted(set(s)))),
            reason=("reason", lambda r: next((x for x in r if isinstance(x, str) and x), "")),
            n_runs=("status", "size"),
            **{c: (c, _join) for c in PROVENANCE},
        )
        .reset_index()
    )
    out = status.merge(summary, on=RUN_KEYS + ["metric"], how="left")
    out["n_seeds"] = out["n_seeds"].fillna(0).astype(int)
    return out[RUN_KEYS + ["metric", "mean", "std", "n_seeds", "n_runs", "statuses", "reason", *PROVENANCE]]


def read_published(path) -> pd.DataFrame:
    """A published table (scores or dataset statistics): tab-separated, lines that start with ``#`` are its header
    comment. A ``#`` inside a row (a source URL's fragment) is data: pandas' ``comment`` would cut the row there."""
    lines = [line for line in Path(path).read_text().splitlines(keepends=True) if not line.startswith("#")]
    return pd.read_csv(io.StringIO("".join(lines)), sep="\t")


def read_published_scores(path) -> pd.DataFrame:
    """The published scores table, its reading columns checked (:func:`.readings.check_published`)."""
    return check_published(read_published(path), path)


# ---- datasets: what each one is, and whether it is the published one ----------------------------------------------

FINGERPRINT = (("cells", "n_cells"), ("genes", "n_genes"), ("classes", "n_cell_types"))
VARIANT_LABELS = {
    "published_file": "published file",
    "origin": "rebuilt from origin",
    "other": "not the published data",
}


def data_label(spec: dict, qc: dict) -> str:
    """The data behind a dataset's rows, in words: variant, source and version."""
    src, rec = spec["source"], qc.get("source_record") or {}
    kind = src["kind"]
    if kind == "archive":
        what = f"{src['member']} in {src['filename']}"
    elif kind == "cellxgene":
        what = f"CELLxGENE {src.get('dataset_id') or src.get('version_id')}, version {rec.get('version') or '?'}"
    elif kind in ("download", "pbmc12k"):
        what = ", ".join(f["filename"] for f in rec.get("files", [])) or kind
    else:
        what = src.get("name") or src.get("path") or kind
    return f"{VARIANT_LABELS[spec.get('variant', 'other')]}: {what}"


def fingerprint(qc: dict, published: dict | None) -> tuple[str, bool | None]:
    """Our cells/genes/classes against the published ones, where known: (text, all known ones match or None)."""
    if not published:
        return "no published statistics", None
    known = [(name, int(qc[key]), int(published[name])) for name, key in FINGERPRINT if pd.notna(published.get(name))]
    if not known:
        return "no published statistics", None
    diffs = [f"{name} {ours:,} vs published {pub:,}" for name, ours, pub in known if ours != pub]
    if diffs:
        return "differs: " + "; ".join(diffs), False
    return "matches (" + ", ".join(f"{name} {ours:,}" for name, ours, _ in known) + ")", True


def dataset_comparability(variant: str, matches: bool | None, text: str) -> tuple[bool, str]:
    """Whether rows of this dataset may be diffed against the published scores, and if not, why."""
    if matches is False:
        return False, f"not the published dataset ({text})"
    if variant == "published_file":
        return True, ""
    if variant == "origin":
        if matches:
            return True, ""
        return False, "rebuilt from origin, and no published statistics confirm it is the published data"
    return False, "not the published data (variant: other)"


def dataset_table(config: dict, qc: dict, published_datasets: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset of the run: source, version, sha256, shape after preprocessing, published fingerprint."""
    pub = {r["dataset"]: r for r in published_datasets.to_dict("records")} if not published_datasets.empty else {}
    rows = []
    for name in config["run"]["datasets"]:
        spec, q = config["datasets"][name], qc[name]
        rec = q.get("source_record") or {}
        files = rec.get("files", [])
        pinned = [f for f in files if f.get("pinned_sha256")]
        p = pub.get(spec.get("published_as")) or {}
        text, matches = fingerprint(q, p)
        comparable, why = dataset_comparability(spec.get("variant", "other"), matches, text)
        if spec.get("published_as") is None:
            comparable, why = False, "no published counterpart (published_as: null)"
        rows.append(
            {
                "dataset": name,
                "published_as": spec.get("published_as") or "",
                "variant": spec.get("variant", "other"),
                "data": data_label(spec, q),
                "source_kind": spec["source"]["kind"],
                "version": rec.get("version", ""),
                "downloads": "; ".join(
                    f"{f['filename']} sha256 {f['sha256'] or '?'}"
                    + (" (pinned)" if f.get("pinned_sha256") == f.get("sha256") and f.get("sha256") else "")
                    for f in files
                ),
                "pinned_sha256_ok": (all(f["pinned_sha256"] == f["sha256"] for f in pinned) if pinned else np.nan),
                "source_sha256": rec.get("sha256", ""),
                "cells": q["n_cells"],
                "genes": q["n_genes"],
                "classes": q["n_cell_types"],
                "batches": q["n_batches"],
                "published_cells": p.get("cells", np.nan),
                "published_genes": p.get("genes", np.nan),
                "published_classes": p.get("classes", np.nan),
                "published_statistics_source": p.get("source", ""),
                "fingerprint": text,
                "comparable": comparable,
                "not_comparable_reason": why,
            }
        )
    return pd.DataFrame(rows)


# ---- ours beside the published table, reading for reading -----------------------------------------------------------


def checkpoint_reason(label: str) -> str:
    """Why a foundation-model row's weights are not those behind the published row ("" when they are)."""
    if not label or label.startswith("released"):
        return ""
    if label.startswith("random initialisation"):
        return f"{label}, not the pretrained weights behind the published row"
    if label.startswith("pretrained here"):
        return f"checkpoint {label}, not the authors' release"
    return f"weights not known to be the published ones ({label}; set checkpoint_kind: released if they are)"


def _not_comparable(pub, ours, dataset, other_split: str | None, test_params: bool, checkpoint: str) -> list[str]:
    """Every reason a published value and our number cannot be diffed (none: they can)."""
    reasons = ["nothing published (the table shows '-')"] if pd.isna(pub["value"]) else []
    if ours is None:
        return reasons + ["method not run here"]
    if not dataset["comparable"]:
        reasons.append(dataset["not_comparable_reason"])
    if other_split:
        reasons.append(f"split '{other_split}' is not the published protocol")
    if test_params:
        reasons.append("quick test parameters (run.param_set: test), not the protocol's")
    if ours["n_seeds"] == 0:
        reasons.append(f"no successful run ({ours['statuses']}: {ours['reason']})")
    if why := checkpoint_reason(checkpoint):
        reasons.append(why)
    return reasons


def _by_reading(mine: pd.DataFrame) -> dict:
    """Our mean and std under each reading (NaN where we have none), from one run's summary rows by metric."""
    out = {}
    for r in READINGS:
        row = mine.loc[r] if r in mine.index else None
        out[f"ours_{r}"] = float(row["mean"]) if row is not None and pd.notna(row["mean"]) else np.nan
        out[f"ours_{r}_std"] = float(row["std"]) if row is not None and pd.notna(row["std"]) else np.nan
    return out


def reading_spread(values: dict) -> tuple[float, bool, str]:
    """How far apart our readings are (max - min over those we have), whether that exceeds
    :data:`.readings.READING_TOLERANCE` ("reading uncertain"), and the note saying so ("" when it does not)."""
    have = {r: values[f"ours_{r}"] for r in READINGS if pd.notna(values[f"ours_{r}"])}
    if len(have) < 2:
        return np.nan, False, ""
    low, high = min(have, key=have.get), max(have, key=have.get)
    spread = have[high] - have[low]
    if spread <= READING_TOLERANCE:
        return spread, False, ""
    return (
        spread,
        True,
        (
            f"reading uncertain: our readings range from {have[low]:.3f} ({low}) to {have[high]:.3f} "
            f"({high}), {spread:.3f} apart (more than {READING_TOLERANCE})"
        ),
    )


def comparison(summary: pd.DataFrame, published: pd.DataFrame, config: dict, datasets: pd.DataFrame) -> pd.DataFrame:
    """Every published value of a dataset in this run beside our number under each candidate reading.

    Columns ``ours_<reading>`` (and ``_std``) give our mean under each reading of :data:`.readings.READINGS`;
    ``ours_mean``/``ours_std`` repeat the one the evidence favours (``reading``). The difference is ours minus
    published under that favoured reading only, and only where the two are the same quantity on comparable setups;
    otherwise it is empty and ``not_comparable_reason`` says why (data, split, parameters, weights, failed run,
    nothing published). ``reading_uncertain`` flags rows whose readings are more than ``READING_TOLERANCE`` apart
    (``readings_spread``, with a note in ``notes``): there the published value cannot be tied to one reading with
    confidence. Published rows whose method is not run here are listed too, so nothing published is hidden.
    """
    ds = datasets.set_index("dataset") if not datasets.empty else datasets
    m_map = {m: c.get("published_as") for m, c in config["methods"].items() if m in config["run"]["methods"]}
    test_params = config["run"]["param_set"] == "test"
    rows = []
    for dataset, d in ds.iterrows():
        if not d["published_as"]:
            continue
        pub = published[published["dataset"] == d["published_as"]]
        for split in dataset_splits(config, dataset):
            protocol = config["splits"][split]["strategy"] == "random"
            for _, p in pub.iterrows():
                ours_methods = [m for m, pm in m_map.items() if pm == p["method"]] or [None]
                for method in ours_methods:
                    mine = summary[
                        (summary["dataset"] == dataset) & (summary["split"] == split) & (summary["method"] == method)
                    ].set_index("metric")
                    ours = mine.loc[p["reading"]] if p["reading"] in mine.index else None
                    checkpoint = ours.get("checkpoint") if ours is not None else ""
                    checkpoint = checkpoint if isinstance(checkpoint, str) else ""
                    sentences = ours.get("sentences") if ours is not None else ""
                    sentences = f"{sentences}; {SENTENCES_ASSUMED}" if isinstance(sentences, str) and sentences else ""
                    reasons = _not_comparable(p, ours, d, split if not protocol else None, test_params, checkpoint)
                    readings = _by_reading(mine)
                    spread, uncertain, note = reading_spread(readings)
                    mean = readings[f"ours_{p['reading']}"]
                    rows.append(
                        {
                            "dataset": dataset,
                            "data": d["data"],
                            "split": split,
                            "method": method or "(not run here)",
                            "checkpoint": checkpoint,
                            "device": (ours.get("device") or "") if ours is not None else "",
                            "precision": (ours.get("precision") or "") if ours is not None else "",
                            "published_method": p["method"],
                            "published_dataset": d["published_as"],
                            "reading": p["reading"],
                            "plausible_readings": p["plausible_readings"],
                            "reading_basis": p.get("reading_basis", ""),
                            "ours_mean": mean,
                            "ours_std": readings[f"ours_{p['reading']}_std"],
                            **readings,
                            "readings_spread": spread,
                            "reading_uncertain": uncertain,
                            "ours_n_seeds": int(ours["n_seeds"]) if ours is not None else 0,
                            "ours_status": ours["statuses"] if ours is not None else "not run",
                            "published_value": float(p["value"]) if pd.notna(p["value"]) else np.nan,
                            "published_std": float(p["std"]) if pd.notna(p["std"]) else np.nan,
                            "comparable": not reasons,
                            "difference": mean - float(p["value"]) if not reasons else np.nan,
                            "not_comparable_reason": "; ".join(reasons),
                            "notes": note,
                            "published_source": p["source"],
                            "sentences": sentences,
                        }
                    )
    cols = [
        "dataset",
        "data",
        "split",
        "method",
        "checkpoint",
        "device",
        "precision",
        "published_method",
        "published_dataset",
        "reading",
        "plausible_readings",
        "reading_basis",
        "ours_mean",
        "ours_std",
        *(f"ours_{r}{s}" for r in READINGS for s in ("", "_std")),
        "readings_spread",
        "reading_uncertain",
        "ours_n_seeds",
        "ours_status",
        "published_value",
        "published_std",
        "comparable",
        "difference",
        "not_comparable_reason",
        "notes",
        "published_source",
        "sentences",
    ]
    return pd.DataFrame(rows, columns=cols)


def speed(records: pd.DataFrame, benchmarks: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, split, method): mean fit and predict seconds, job wall time, peak memory, device."""
    df = records.merge(benchmarks, on=RUN_KEYS + ["seed"], how="left")
    ok = df[df["status"] == "ok"]
    g = ok.groupby(RUN_KEYS, sort=False)
    out = g.agg(
        fit_s=("fit_s", "mean"),
        predict_s=("predict_s", "mean"),
        job_wall_s=("wall_s", "mean"),
        peak_rss_mb=("peak_rss_mb", "max"),
        peak_gpu_mb=("peak_gpu_mb", "max"),
        device=("device", lambda d: ",".join(sorted(set(map(str, d))))),
        n_train=("n_train", "first"),
        n_test=("n_test", "first"),
        n_seeds=("seed", "count"),
    ).reset_index()
    out["total_s"] = out["fit_s"] + out["predict_s"]
    return out


def runs_table(records: pd.DataFrame) -> pd.DataFrame:
    cols = [
        "dataset",
        "split",
        "method",
        "seed",
        "checkpoint",
        "precision",
        "sentences",
        "param_set",
        "status",
        "reason",
        "device",
        "fit_s",
        "predict_s",
        "peak_rss_mb",
        "peak_gpu_mb",
        "n_train",
        "n_test",
        "n_genes_used",
        "implementation",
        "params",
        "extra",
        "versions",
        "host",
        "finished",
    ]
    return records.reindex(columns=cols).sort_values(["dataset", "split", "method", "seed"])


def _fmt(mean, std) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if pd.notna(std) else f"{mean:.3f}"


def with_data(table: pd.DataFrame, datasets: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the ``data`` column (which data produced the row) after ``dataset``."""
    if table.empty or datasets.empty or "dataset" not in table.columns:
        return table
    out = table.drop(columns=["data"], errors="ignore")
    out.insert(out.columns.get_loc("dataset") + 1, "data", out["dataset"].map(datasets.set_index("dataset")["data"]))
    return out


def markdown(
    summary: pd.DataFrame,
    comp: pd.DataFrame,
    runs: pd.DataFrame,
    speed_df: pd.DataFrame,
    config: dict,
    datasets: pd.DataFrame,
    zeroshot: list[str] = (),
    fidelity: list[str] = (),
    notes: dict[str, str] | None = None,
    context: list[str] = (),
    context_cost: list[str] = (),
) -> str:
    """The benchmark as one Markdown page: provenance first, then methods x datasets per metric, the fidelity
    section (``fidelity``: its lines, :func:`.fidelity.markdown_lines`), the zero-shot track's section
    (``zeroshot``: its lines, :func:`.zeroshot.markdown_lines`), the tissue-context track's (``context``:
    :func:`.context.markdown_lines`) and speed, with the cost of context last (``context_cost``:
    :func:`.context.cost_lines`). ``notes``: method id -> its note, shown
    on the method's row of every metric table (:func:`labelled`)."""
    notes = notes or {}
    run = config["run"]
    label = method_labels(config)
    devices = ", ".join(sorted(set(map(str, runs["device"].dropna())))) or "n/a"
    lines = [
        "# CellPLM annotation benchmark: results",
        "",
        f"- Parameter set: `{run['param_set']}`; seeds: {', '.join(map(str, run['seeds']))}; devices: {devices}.",
        "- Every number below was computed by this workflow from its own predictions, except the columns marked"
        f" *published*, which are copied from `{config['published']}` with their source.",
        "- Metric definitions: " + "; ".join(f"`{m}` = {METRIC_LABELS[m]}" for m in METRICS) + ".",
        "- " + readings_text(config["published"]) + " See the comparison section.",
    ]
    lines += _checkpoint_lines(runs, config, label)
    lines += [
        "",
        "## Datasets",
        "",
        "| dataset | data | version | cells | genes | cell types | batches | published fingerprint | comparable |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, d in datasets.iterrows():
        ok = "yes" if d["comparable"] else f"no: {d['not_comparable_reason']}"
        lines.append(
            f"| {d['dataset']} | {d['data']} | {d['version'] or '–'} | {d['cells']:,} | {d['genes']:,} | "
            f"{d['classes']} | {d['batches']} | {d['fingerprint']} | {ok} |"
        )
    for split, sub in summary.groupby("split", sort=False):
        strategy = config["splits"][split]["strategy"]
        tag = "published protocol" if strategy == "random" else "NOT the published protocol"
        for m in METRICS:
            piv = sub[sub["metric"] == m]
            datasets_here = list(dict.fromkeys(piv["dataset"]))
            lines += [
                "",
                f"## {METRIC_LABELS[m]}, split `{split}` ({strategy}, {tag})",
                "",
                "| method | " + " | ".join(datasets_here) + " |",
                "|---" * (len(datasets_here) + 1) + "|",
            ]
            for method in dict.fromkeys(piv["method"]):
                cells = []
                for d in datasets_here:
                    r = piv[(piv["dataset"] == d) & (piv["method"] == method)]
                    if r.empty:
                        cells.append("")
                    elif r["n_seeds"].iloc[0] == 0:
                        cells.append(f"{r['statuses'].iloc[0]}")
                    else:
                        cells.append(_fmt(r["mean"].iloc[0], r["std"].iloc[0]))
                name = label.get(method, method)
                mine = piv[piv["method"] == method]
                tags = ", ".join(
                    t for t in (_join(mine.get(c, pd.Series(dtype=str))) for c in ("checkpoint", "precision")) if t
                )
                lines.append(f"| {labelled(name, tags, notes.get(method, ''))} | " + " | ".join(cells) + " |")
    lines += _comparison_lines(comp)
    bad = runs[runs["status"] != "ok"]
    lines += ["", "## Runs that did not produce predictions", ""]
    if bad.empty:
        lines.append("None: every run succeeded.")
    else:
        lines += ["| dataset | split | method | seed | status | reason |", "|---|---|---|---|---|---|"]
        for _, r in bad.iterrows():
            lines.append(
                f"| {r['dataset']} | {r['split']} | {r['method']} | {r['seed']} | {r['status']} | {r['reason']} |"
            )
    lines += list(fidelity)
    lines += list(zeroshot)
    lines += list(context)
    lines += _speed_lines(speed_df, label)
    lines += list(context_cost)
    return "\n".join(lines) + "\n"


def _comparison_lines(comp: pd.DataFrame) -> list[str]:
    """The comparison section: each published value beside our number under every reading, the favoured one in
    bold (readings not plausible for the row in parentheses), the difference under the favoured reading only, and
    the "reading uncertain" flag."""
    if comp.empty:
        return []
    lines = [
        "",
        "## Ours beside the published table, reading for reading",
        "",
        "The *published* column is copied from the source named in the last column, never computed here. Our"
        " number follows under each reading: **bold** is the reading the evidence favours for that published row,"
        " and a reading in parentheses is not among its plausible ones (`plausible_readings`). The difference"
        " (ours minus published) is computed under the favoured reading only, and only where both are the same"
        " quantity on comparable setups; otherwise the row says why not. *Reading uncertain*: our readings are"
        f" more than {READING_TOLERANCE} apart, so the published value cannot be tied to one reading with"
        " confidence.",
        "",
        "| dataset | method (our checkpoint, precision; CellPLM: sentences) | published | "
        + " | ".join(f"ours, `{r}`" for r in READINGS)
        + " | favoured reading | difference under the favoured reading | reading uncertain | why not comparable"
        " | published source |",
        "|---" * (len(READINGS) + 8) + "|",
    ]
    for _, r in comp.iterrows():
        pub = "published: " + _fmt(r["published_value"], r["published_std"]) + f" ({r['published_method']})"
        plausible = split_readings(r["plausible_readings"])
        cells = []
        for reading in READINGS:
            text = _fmt(r[f"ours_{reading}"], r[f"ours_{reading}_std"])
            cells.append(
                "–"
                if text == "–"
                else f"**{text}**"
                if reading == r["reading"]
                else text
                if reading in plausible
                else f"({text})"
            )
        diff = f"{r['difference']:+.3f}" if pd.notna(r["difference"]) else "–"
        tags = ", ".join(t for t in (r.get("checkpoint"), r.get("precision")) if isinstance(t, str) and t)
        method = f"{r['method']} ({tags})" if tags else r["method"]
        if isinstance(r.get("sentences"), str) and r["sentences"]:
            method += f"; sentences: {r['sentences']}"
        why = r["not_comparable_reason"] if isinstance(r["not_comparable_reason"], str) else ""
        spread = r["readings_spread"]
        flag = (
            "–"
            if pd.isna(spread)
            else (f"**yes**: {spread:.3f} apart" if r["reading_uncertain"] else f"no: {spread:.3f} apart")
        )
        lines.append(
            f"| {r['dataset']} | {method} | {pub} | " + " | ".join(cells) + f" | `{r['reading']}` | {diff} | "
            f"{flag} | {why or '–'} | {r['published_source']} |"
        )
    return lines


def _speed_lines(speed_df: pd.DataFrame, label: dict) -> list[str]:
    """Embedding throughput (one job, same cells and device) and per-run wall times, with speed-ups over scGPT."""
    if speed_df.empty:
        return []
    lines = []
    emb = speed_df[speed_df["measure"] == "embedding_throughput"]
    if not emb.empty:
        first = emb.iloc[0]
        lines += [
            "",
            "## Zero-shot embedding speed",
            "",
            f"All models embedded the same {first['n_cells']:.0f} cells x {first['n_genes']:.0f} genes on the same"
            " device, one after the other in one job (median of repeated calls after a warm-up).",
            "",
            "| model | weights | cells/s | speed-up vs scGPT | device | precision | peak RSS MB | peak GPU MB | status "
            "|",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in emb.iterrows():
            status = r["status"] + (f": {r['reason']}" if isinstance(r["reason"], str) and r["reason"] else "")
            lines.append(
                f"| {r['method']} | {_text(r['weights'])} | {_num(r['value'], '.1f')} | "
                f"{_num(r['speedup_vs_scgpt'], '.1f', 'x')} | {_text(r['device'])} | {_text(r['precision'])} | "
                f"{_num(r['peak_rss_mb'], '.0f')} | {_num(r['peak_gpu_mb'], '.0f')} | {status} |"
            )
    fit = speed_df[speed_df["measure"] == "fit_wall"]
    if not fit.empty:
        pred = speed_df[speed_df["measure"] == "predict_wall"].set_index(["dataset", "split", "method"])["value"]
        lines += [
            "",
            "## Time per run (mean over seeds)",
            "",
            "| dataset | split | method | fit s | fit speed-up vs scGPT | predict s | job wall s | peak RSS MB | "
            "device |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in fit.iterrows():
            p = pred.get((r["dataset"], r["split"], r["method"]), float("nan"))
            lines.append(
                f"| {r['dataset']} | {r['split']} | {label.get(r['method'], r['method'])} | {r['value']:.2f} | "
                f"{_num(r['speedup_vs_scgpt'], '.1f', 'x')} | {_num(p, '.2f')} | {_num(r['job_wall_s'], '.1f')} | "
                f"{_num(r['peak_rss_mb'], '.0f')} | {r['device']} |"
            )
    return lines


def _num(x, spec: str, suffix: str = "") -> str:
    return f"{x:{spec}}{suffix}" if pd.notna(x) else "–"


def _text(x) -> str:
    return str(x) if isinstance(x, str) and x else "–"


def _checkpoint_lines(runs: pd.DataFrame, config: dict, label: dict) -> list[str]:
    """One line per method with a checkpoint (CellPLM, scGPT, Geneformer): which weights produced its rows."""
    if "checkpoint" not in runs.columns:
        return []
    ck = runs[runs["checkpoint"].fillna("") != ""]
    if ck.empty:
        return []
    lines = [
        "",
        "## Checkpoints",
        "",
        "Which weights produced the rows of each foundation-model method (also the `checkpoint` column of every "
        "table):",
        "",
    ]
    for method, sub in ck.groupby("method", sort=False):
        statuses = ", ".join(f"{n} {s}" for s, n in sub["status"].value_counts().items())
        lines.append(f"- {label.get(method, method)} (`{method}`): {_join(sub['checkpoint'])} ({statuses} runs).")
    source = config.get("cellplm", {}).get("checkpoint", {}).get("source")
    if source:
        lines.append(f"- CellPLM checkpoint source configured: `cellplm.checkpoint.source: {source}`.")
    if "sentences" in runs.columns and runs["sentences"].fillna("").ne("").any():
        lines.append(
            "- CellPLM sentences: one per value of `obs['batch']`, the dataset's `batch_key` column (column "
            "`sentences` of runs.tsv, summary.tsv and comparison.tsv); how the authors grouped these datasets "
            "into sentences is not published, so this grouping is an assumption."
        )
    return lines
