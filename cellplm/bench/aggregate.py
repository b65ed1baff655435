"""Tidy tables from the per-run files: scores, summary over seeds, published comparison, runs, speed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import METRIC_LABELS, METRICS
from .workflow import dataset_splits, method_labels

RUN_KEYS = ["dataset", "split", "method"]


def read_tsvs(paths) -> pd.DataFrame:
    frames = [pd.read_csv(p, sep="\t", keep_default_na=True) for p in paths]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def checkpoint_label(extra: dict, params: dict, pretraining: dict | None = None) -> str:
    """Where a CellPLM row's weights came from, in words; "" for methods without a checkpoint.

    "released (20230926_85M)", "pretrained here (tiny, 6 epochs)", "random initialisation (85M shape)" or
    "user-supplied (<path>)", from the run record's ``extra`` (what the method loaded) or, for runs that did not
    finish (the harness keeps no ``extra`` then), from its ``params`` (what the workflow gave it).
    ``pretraining``: pretraining.json contents by checkpoint folder, for the epochs of a checkpoint made here.
    """
    if "checkpoint_kind" not in extra and "checkpoint" not in params and "checkpoint_kind" not in params:
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
        epochs = (pt.get("epochs") or (pt.get("hyperparameters") or {}).get("epochs")
                  or (file_meta.get("pretraining", {}).get("hyperparameters") or {}).get("epochs"))
        shape = pt.get("shape") or file_meta.get("pretraining", {}).get("shape") or "?"
        label = f"pretrained here ({shape}, {epochs if epochs is not None else '?'} epochs)"
    elif kind == "released":
        label = f"released ({folder.name.split('__')[-1] if folder.name.startswith('released__') else Path(str(ckpt)).name})"
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
        rec["versions"] = "; ".join(f"{k} {v}" for k, v in versions.items())
        rec["params"] = json.dumps(params, sort_keys=True)
        rec["extra"] = json.dumps(extra, sort_keys=True) if extra else ""
        rows.append(rec)
    return pd.DataFrame(rows)


def read_benchmarks(paths, runs: list[tuple]) -> pd.DataFrame:
    """Snakemake ``benchmark:`` files (wall seconds, sampled max RSS) with their run ids."""
    rows = []
    for p, (d, s, m, seed) in zip(paths, runs):
        b = pd.read_csv(p, sep="\t")
        rows.append({"dataset": d, "split": s, "method": m, "seed": int(seed),
                     "wall_s": float(b["s"].iloc[0]),
                     "benchmark_max_rss_mb": pd.to_numeric(b["max_rss"], errors="coerce").iloc[0]})
    return pd.DataFrame(rows)


def with_checkpoint(scores: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Scores with the run's ``checkpoint`` provenance column (empty for methods without a checkpoint)."""
    keys = RUN_KEYS + ["seed"]
    if scores.empty or records.empty:
        return scores.assign(checkpoint="")
    ck = records[keys + ["checkpoint"]].drop_duplicates(keys)
    out = scores.drop(columns=["checkpoint"], errors="ignore").merge(ck, on=keys, how="left")
    out["checkpoint"] = out["checkpoint"].fillna("")
    return out


def _join(values) -> str:
    return "; ".join(sorted({v for v in values if isinstance(v, str) and v}))


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds (ok runs only), with the count of seeds that succeeded."""
    if "checkpoint" not in scores.columns:
        scores = scores.assign(checkpoint="")
    ok = scores[scores["status"] == "ok"]
    g = ok.groupby(RUN_KEYS + ["metric"], sort=False)["value"]
    summary = g.agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else np.nan,
                    n_seeds="count").reset_index()
    # Runs with no successful seed still get a row (mean NA) with their status.
    status = scores.groupby(RUN_KEYS + ["metric"], sort=False).agg(
        statuses=("status", lambda s: ",".join(sorted(set(s)))),
        reason=("reason", lambda r: next((x for x in r if isinstance(x, str) and x), "")),
        n_runs=("status", "size"),
        checkpoint=("checkpoint", _join),
    ).reset_index()
    out = status.merge(summary, on=RUN_KEYS + ["metric"], how="left")
    out["n_seeds"] = out["n_seeds"].fillna(0).astype(int)
    return out[RUN_KEYS + ["metric", "mean", "std", "n_seeds", "n_runs", "statuses", "reason", "checkpoint"]]


def read_published(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", comment="#")


def comparison(summary: pd.DataFrame, published: pd.DataFrame, config: dict, metric: str) -> pd.DataFrame:
    """Ours beside the published value for every (dataset, method) that has one, with the difference.

    Published rows whose method is not run here are listed too (ours NA), so nothing published is hidden.
    Only splits that follow the published protocol are compared.
    """
    ds_map = {d: c.get("published_as") for d, c in config["datasets"].items() if d in config["run"]["datasets"]}
    m_map = {m: c.get("published_as") for m, c in config["methods"].items() if m in config["run"]["methods"]}
    rows = []
    ours = summary[summary["metric"] == metric]
    for dataset, pub_ds in ds_map.items():
        if not pub_ds:
            continue
        pub = published[published["dataset"] == pub_ds]
        for split in dataset_splits(config, dataset):
            if config["splits"][split]["strategy"] != "random":
                continue
            matched = set()
            for method, pub_m in m_map.items():
                row = ours[(ours["dataset"] == dataset) & (ours["split"] == split) & (ours["method"] == method)]
                if row.empty:
                    continue
                p = pub[pub["method"] == pub_m] if pub_m else pub.iloc[0:0]
                matched.add(pub_m)
                rows.append(_comparison_row(dataset, split, method, pub_m, metric, row.iloc[0], p))
            for _, p in pub[~pub["method"].isin(matched)].iterrows():
                rows.append(_comparison_row(dataset, split, None, p["method"], metric, None, pub[pub.index == p.name]))
    cols = ["dataset", "split", "method", "checkpoint", "published_method", "our_metric", "ours_mean", "ours_std",
            "ours_n_seeds", "ours_status", "published_value", "published_std", "published_metric", "difference", "published_source"]
    return pd.DataFrame(rows, columns=cols)


def _comparison_row(dataset, split, method, pub_method, metric, ours, pub) -> dict:
    pv = float(pub["value"].iloc[0]) if len(pub) and pd.notna(pub["value"].iloc[0]) else np.nan
    ps = float(pub["std"].iloc[0]) if len(pub) and pd.notna(pub["std"].iloc[0]) else np.nan
    mean = float(ours["mean"]) if ours is not None and pd.notna(ours["mean"]) else np.nan
    return {
        "dataset": dataset, "split": split, "method": method if method else "(not run here)",
        "checkpoint": ours.get("checkpoint", "") if ours is not None else "",
        "published_method": pub_method if pub_method else "(none published)", "our_metric": metric,
        "ours_mean": mean, "ours_std": float(ours["std"]) if ours is not None and pd.notna(ours["std"]) else np.nan,
        "ours_n_seeds": int(ours["n_seeds"]) if ours is not None else 0,
        "ours_status": ours["statuses"] if ours is not None else "not run",
        "published_value": pv, "published_std": ps,
        "published_metric": pub["metric_as_published"].iloc[0] if len(pub) else "",
        "difference": mean - pv if np.isfinite(mean) and np.isfinite(pv) else np.nan,
        "published_source": pub["source"].iloc[0] if len(pub) else "",
    }


def speed(records: pd.DataFrame, benchmarks: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, split, method): mean fit and predict seconds, job wall time, peak memory, device."""
    df = records.merge(benchmarks, on=RUN_KEYS + ["seed"], how="left")
    ok = df[df["status"] == "ok"]
    g = ok.groupby(RUN_KEYS, sort=False)
    out = g.agg(fit_s=("fit_s", "mean"), predict_s=("predict_s", "mean"), job_wall_s=("wall_s", "mean"),
                peak_rss_mb=("peak_rss_mb", "max"), peak_gpu_mb=("peak_gpu_mb", "max"),
                device=("device", lambda d: ",".join(sorted(set(map(str, d))))),
                n_train=("n_train", "first"), n_test=("n_test", "first"), n_seeds=("seed", "count")).reset_index()
    out["total_s"] = out["fit_s"] + out["predict_s"]
    return out


def runs_table(records: pd.DataFrame) -> pd.DataFrame:
    cols = ["dataset", "split", "method", "seed", "checkpoint", "param_set", "status", "reason", "device", "fit_s", "predict_s",
            "peak_rss_mb", "peak_gpu_mb", "n_train", "n_test", "n_genes_used", "implementation", "params", "extra",
            "versions", "host", "finished"]
    return records.reindex(columns=cols).sort_values(["dataset", "split", "method", "seed"])


def _fmt(mean, std) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if pd.notna(std) else f"{mean:.3f}"


def markdown(summary: pd.DataFrame, comp: pd.DataFrame, runs: pd.DataFrame, speed_df: pd.DataFrame,
             config: dict, qc: dict) -> str:
    """The benchmark as one Markdown page: provenance first, then methods x datasets per metric."""
    run = config["run"]
    metric = run["compare_metric"]
    label = method_labels(config)
    devices = ", ".join(sorted(set(map(str, runs["device"].dropna())))) or "n/a"
    lines = [
        "# CellPLM annotation benchmark: results",
        "",
        f"- Parameter set: `{run['param_set']}`; seeds: {', '.join(map(str, run['seeds']))}; devices: {devices}.",
        "- Every number below was computed by this workflow from its own predictions, except the columns marked"
        " *published*, which are copied from `config/published_scores.tsv` with their source.",
        "- Metric definitions: " + "; ".join(f"`{m}` = {METRIC_LABELS[m]}" for m in METRICS) + ".",
        f"- The published table's \"accuracy\" is compared with our `{metric}` ({METRIC_LABELS[metric]}).",
    ]
    lines += _checkpoint_lines(runs, config, label)
    lines += [
        "",
        "## Datasets",
        "",
        "| dataset | cells | genes | cell types | batches | counts from | Ensembl-mapped genes |",
        "|---|---|---|---|---|---|---|",
    ]
    for d, q in qc.items():
        lines.append(f"| {d} | {q['n_cells']} | {q['n_genes']} | {q['n_cell_types']} | {q['n_batches']} | "
                     f"{q['counts_from']} | {q['ensembl_mapped_fraction']:.1%} |")
    for split, sub in summary.groupby("split", sort=False):
        strategy = config["splits"][split]["strategy"]
        tag = "published protocol" if strategy == "random" else "NOT the published protocol"
        for m in METRICS:
            piv = sub[sub["metric"] == m]
            datasets = list(dict.fromkeys(piv["dataset"]))
            lines += ["", f"## {METRIC_LABELS[m]}, split `{split}` ({strategy}, {tag})", "",
                      "| method | " + " | ".join(datasets) + " |", "|---" * (len(datasets) + 1) + "|"]
            for method in dict.fromkeys(piv["method"]):
                cells = []
                for d in datasets:
                    r = piv[(piv["dataset"] == d) & (piv["method"] == method)]
                    if r.empty:
                        cells.append("")
                    elif r["n_seeds"].iloc[0] == 0:
                        cells.append(f"{r['statuses'].iloc[0]}")
                    else:
                        cells.append(_fmt(r["mean"].iloc[0], r["std"].iloc[0]))
                name = label.get(method, method)
                ck = _join(piv[piv["method"] == method].get("checkpoint", pd.Series(dtype=str)))
                lines.append(f"| {name + f' [{ck}]' if ck else name} | " + " | ".join(cells) + " |")
    if not comp.empty:
        lines += ["", f"## Ours ({metric}) beside the published table", "",
                  "The *published* column is copied from the source named in the last column, never computed here;"
                  " for CellPLM it is the authors' number with their released checkpoint, whatever checkpoint ours used.",
                  "", "| dataset | method (our checkpoint) | ours | published | difference | published source |",
                  "|---|---|---|---|---|---|"]
        for _, r in comp.iterrows():
            pub = "published: " + _fmt(r["published_value"], r["published_std"]) + f" ({r['published_method']})"
            diff = f"{r['difference']:+.3f}" if pd.notna(r["difference"]) else "–"
            ck = r.get("checkpoint", "")
            method = f"{r['method']} ({ck})" if isinstance(ck, str) and ck else r["method"]
            lines.append(f"| {r['dataset']} | {method} | {_fmt(r['ours_mean'], r['ours_std'])} | {pub} | "
                         f"{diff} | {r['published_source']} |")
    bad = runs[runs["status"] != "ok"]
    lines += ["", "## Runs that did not produce predictions", ""]
    if bad.empty:
        lines.append("None: every run succeeded.")
    else:
        lines += ["| dataset | split | method | seed | status | reason |", "|---|---|---|---|---|---|"]
        for _, r in bad.iterrows():
            lines.append(f"| {r['dataset']} | {r['split']} | {r['method']} | {r['seed']} | {r['status']} | {r['reason']} |")
    lines += _speed_lines(speed_df, label)
    return "\n".join(lines) + "\n"


def _speed_lines(speed_df: pd.DataFrame, label: dict) -> list[str]:
    """Embedding throughput (one job, same cells and device) and per-run wall times, with speed-ups over scGPT."""
    if speed_df.empty:
        return []
    lines = []
    emb = speed_df[speed_df["measure"] == "embedding_throughput"]
    if not emb.empty:
        first = emb.iloc[0]
        lines += ["", "## Zero-shot embedding speed", "",
                  f"All models embedded the same {first['n_cells']:.0f} cells x {first['n_genes']:.0f} genes on the same"
                  " device, one after the other in one job (median of repeated calls after a warm-up).", "",
                  "| model | weights | cells/s | speed-up vs scGPT | device | precision | peak RSS MB | peak GPU MB | status |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for _, r in emb.iterrows():
            status = r["status"] + (f": {r['reason']}" if isinstance(r["reason"], str) and r["reason"] else "")
            lines.append(f"| {r['method']} | {_text(r['weights'])} | {_num(r['value'], '.1f')} | "
                         f"{_num(r['speedup_vs_scgpt'], '.1f', 'x')} | {_text(r['device'])} | {_text(r['precision'])} | "
                         f"{_num(r['peak_rss_mb'], '.0f')} | {_num(r['peak_gpu_mb'], '.0f')} | {status} |")
    fit = speed_df[speed_df["measure"] == "fit_wall"]
    if not fit.empty:
        pred = speed_df[speed_df["measure"] == "predict_wall"].set_index(["dataset", "split", "method"])["value"]
        lines += ["", "## Time per run (mean over seeds)", "",
                  "| dataset | split | method | fit s | fit speed-up vs scGPT | predict s | job wall s | peak RSS MB | device |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for _, r in fit.iterrows():
            p = pred.get((r["dataset"], r["split"], r["method"]), float("nan"))
            lines.append(f"| {r['dataset']} | {r['split']} | {label.get(r['method'], r['method'])} | {r['value']:.2f} | "
                         f"{_num(r['speedup_vs_scgpt'], '.1f', 'x')} | {_num(p, '.2f')} | {_num(r['job_wall_s'], '.1f')} | "
                         f"{_num(r['peak_rss_mb'], '.0f')} | {r['device']} |")
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
    lines = ["", "## Checkpoints", "",
             "Which weights produced the rows of each foundation-model method (also the `checkpoint` column of every table):", ""]
    for method, sub in ck.groupby("method", sort=False):
        statuses = ", ".join(f"{n} {s}" for s, n in sub["status"].value_counts().items())
        lines.append(f"- {label.get(method, method)} (`{method}`): {_join(sub['checkpoint'])} ({statuses} runs).")
    source = config.get("cellplm", {}).get("checkpoint", {}).get("source")
    if source:
        lines.append(f"- CellPLM checkpoint source configured: `cellplm.checkpoint.source: {source}`.")
    return lines
