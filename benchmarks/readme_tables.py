#!/usr/bin/env python
"""Regenerate the measured tables of README.md and docs/*.md from the committed result files in benchmarks/results/.

Each table sits between two marker comments that name its result file:

    <!-- benchmarks/results/speed_cpu.json: start -->
    ... generated, do not edit by hand ...
    <!-- benchmarks/results/speed_cpu.json: end -->

and is followed (inside the markers) by the date, machine, versions, commit and command of the run that wrote
it. Every markdown file that holds such markers is processed: README.md and the files under docs/ (one result
file may have its table in more than one of them). A result file that does not exist yet (e.g. the GPU runs)
renders as a line saying so, with the command that writes it. ``--check`` changes nothing and exits 1 when a
file differs from what the result files give (tests/test_benchmarks_readme.py runs it, so a hand-edited figure
fails the tests).

    .venv/bin/python benchmarks/readme_tables.py                      # rewrite the tables of every file with markers
    .venv/bin/python benchmarks/readme_tables.py --check              # exit 1 if any of them is out of date
    .venv/bin/python benchmarks/readme_tables.py --files docs/results.md   # only these files
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MARKER = re.compile(r"<!-- (benchmarks/results/[\w.-]+): start -->\n(.*?)<!-- \1: end -->", re.S)

# The command that writes each result file (shown when the file is missing).
COMMANDS = {
    "speed_cpu.json": "make speed",
    "speed_cuda.json": "bash benchmarks/gpu.sh",
    "scale.json": "make scale",
    "finetune_accuracy.json": "make accuracy",
    "finetune_trajectory.json": "make accuracy",
    "finetune_accuracy_sentences.json": "make accuracy",
    "finetune_replay.json": "make accuracy",
    "finetune_augmentation.json": "make accuracy",
    "embedding_speed_cuda.json": "bash benchmarks/gpu.sh",
    "envs.json": ".venv/bin/python benchmarks/timed.py envs -- make venv upstream-env scgpt-env warm-caches",
    "make_test.json": ".venv/bin/python benchmarks/timed.py make_test -- make test",
    "demo_first_run.json": ".venv/bin/python benchmarks/timed.py --compare demo_first_run "
    "demo_before demo_warm demo_cold",
}


# ---- formatting helpers ----------------------------------------------------------------------------------------


def _num(x, fmt: str) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def table(columns: list[tuple[str, str]], body: list[list[str]]) -> list[str]:
    """Markdown table lines; ``columns`` are (title, alignment: ``---`` or ``---:``)."""
    return ["| " + " | ".join(t for t, _ in columns) + " |", "|" + "|".join(a for _, a in columns) + "|"] + [
        "| " + " | ".join(cells) + " |" for cells in body
    ]


def status(row: dict, reason: bool = False) -> str:
    if row["status"] == "ok":
        return ""
    return f" ({row['status']}: {row.get('reason', '')})" if reason else f" ({row['status']})"


# The vector-instruction flags a footer names (the full list is in the result file): which kernels torch can use.
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def footer(result: dict, name: str) -> str:
    p = result["provenance"]
    m, v = p["machine"], p["versions"]
    up = f", upstream CellPLM {v['upstream_cellplm']}" if v.get("upstream_cellplm") else ""
    state = "" if result.get("complete", True) else " **Partial run (interrupted).**"
    flags = [f for f in m.get("cpu_flags", []) if f in SHOWN_FLAGS]
    cpu = f"{m['cpu']} ({' '.join(flags) or 'no AVX2'})" if "cpu_flags" in m else m["cpu"]
    return (
        f"*Measured {p['date'][:10]} ({p['date']}) on {cpu}, {m['cores']} cores, {m['ram_gib']:g} GiB RAM, "
        f"GPU: {m['gpu'] or 'none'}, {m['os']}; load average at start {' '.join(map(str, m['load_average']))}; "
        f"Python {v['python']}, torch {v['torch']}{up}; commit `{p['git_commit'][:12]}`; "
        f"`{p['command']}` → `benchmarks/results/{name}`.*{state}"
    )


# ---- one renderer per benchmark --------------------------------------------------------------------------------


def render_speed(result: dict) -> str:
    rows = [r for r in result["rows"] if r["section"] != "run"]

    def get(section, metric, impl, precision=None):
        for r in rows:
            if (r["section"], r["metric"], r["implementation"]) == (section, metric, impl) and (
                precision is None or r["precision"] == precision or r["precision"].startswith(precision + "->")
            ):
                return r
        return None

    run = {r["metric"]: r["detail"] for r in result["rows"] if r["section"] == "run"}
    out = ['| | upstream | ours fp32 | ours `precision="auto"` |', "|---|---|---|---|"]
    cps = get("embed", "cells_per_second", "upstream")
    if cps:
        size = re.search(r"(\d+) cells x (\d+) genes", cps["detail"])
        reps = re.search(r"median of (\d+)", cps["detail"]).group(1)
        auto = get("embed", "cells_per_second", "ours", "auto")
        used = auto["precision"].split("->")[-1]
        out[0] = f'| | upstream | ours fp32 | ours `precision="auto"` ({used} here) |'
        cells = []
        for prec in ("fp32", "auto"):
            r = get("embed", "cells_per_second", "ours", prec)
            best = get("embed", "cells_per_second_best", "ours", prec)["ratio_vs_upstream"]
            cpu = get("embed", "cpu_seconds", "ours", prec)["ratio_vs_upstream"]
            cells.append(f"{r['ratio_vs_upstream']:.2f}x ({best:.2f}x by fastest call, {1 / cpu:.2f}x by CPU time)")
        out.append(
            f"| zero-shot embedding, {int(size.group(1)):,} cells x {int(size.group(2)):,} genes, cells/s "
            f"(median of {reps}) | {cps['value']:,.0f} | {cells[0]} | **{cells[1]}** |"
        )
        mem = [
            get("embed", "peak_memory", impl, prec)
            for impl, prec in (("upstream", None), ("ours", "fp32"), ("ours", "auto"))
        ]
        kind = "GPU peak allocated" if "GPU" in mem[0]["detail"] else "RSS increase"
        out.append(
            f"| embedding peak memory ({kind}) | {mem[0]['value']:.2f} GiB | {mem[1]['ratio_vs_upstream']:.2f}x | "
            f"{mem[2]['ratio_vs_upstream']:.2f}x |"
        )
        share = get("agreement", "same_cluster_share", "ours_fp32_vs_upstream")
        diff = get("agreement", "max_abs_diff", "ours_fp32_vs_upstream")
        cmin = next(r for r in rows if r["metric"] == "cosine_min")
        cmed = next(r for r in rows if r["metric"] == "cosine_median")
        out.append(
            f"| agreement | | max \\|Δ\\| {diff['value']:.0e} to upstream (on the {_num(share['value'], '.0%')} of "
            "cells "
            f"where upstream's Gumbel draw picks our cluster) | cosine to our fp32: min {cmin['value']:.4f}, "
            f"median {cmed['value']:.4f} |"
        )
    ft = get("finetune", "seconds_per_epoch", "upstream")
    if ft:
        epochs = get("finetune", "epochs_run", "upstream")["value"]
        data = get("finetune", "genes_used", "upstream")["detail"]
        n_test = re.search(r"(\d+) test cells", get("finetune", "test_macro_f1", "upstream")["detail"]).group(1)
        r32, rauto = (
            get("finetune", "seconds_per_epoch", "ours", "fp32"),
            get("finetune", "seconds_per_epoch", "ours", "auto"),
        )
        out.append(
            f"| fine-tuning, s/epoch ({epochs:.0f} epochs, no early stopping; {data}) | {ft['value']:.2f} | "
            f"{r32['ratio_vs_upstream']:.2f}x | **{rauto['ratio_vs_upstream']:.2f}x** |"
        )
        f1 = [
            get("finetune", "test_macro_f1", impl, prec)["value"]
            for impl, prec in (("upstream", None), ("ours", "fp32"), ("ours", "auto"))
        ]
        out.append(f"| fine-tuning test macro-F1 ({n_test} test cells) | {f1[0]:.3f} | {f1[1]:.3f} | {f1[2]:.3f} |")
    out.append("")
    out.append("Targets: " + "; ".join(result.get("verdicts", [])) + f". Whole run {run.get('total seconds', '?')} s.")
    return "\n".join(out)


def render_scale(result: dict) -> str:
    R = "---:"
    out = table(
        [
            ("step", "---"),
            ("cells", R),
            ("nnz", R),
            ("wall s", R),
            ("peak RSS GiB", R),
            ("peak growth", R),
            ("time growth", R),
            ("cells/s", R),
        ],
        [
            [
                r["step"] + status(r),
                f"{r['n_cells']:,}",
                f"{r['nnz']:,}",
                _num(r["wall_s"], ".1f"),
                _num(r["peak_rss_gib"], ".2f"),
                _num(r["peak_growth"], ".2f") + "x",
                _num(r["wall_growth"], ".2f") + "x",
                _num(r["cells_per_s"], ",.0f"),
            ]
            for r in result["rows"]
        ],
    )
    o, e = result["provenance"]["options"], result.get("embedding", {})
    out += [
        "",
        f"{o['genes']:,} genes; mean {result.get('mean_counts_per_cell', float('nan')):,.0f} counts per cell; "
        f"{o['cell_types']} cell types, {o['batches']} batches; embedding: {e.get('weights', '')} "
        f"({e.get('precision', '')}, {e.get('threads', '')} threads), sentences = batches. "
        f"{result.get('generation', '')}",
    ]
    return "\n".join(out)


def fisher(a, b, low: float = 0.70) -> float:
    """Two-sided Fisher exact p that runs below ``low`` are as frequent in ``a`` as in ``b``."""
    from scipy.stats import fisher_exact

    ka, kb = int((a < low).sum()), int((b < low).sum())
    return float(fisher_exact([[ka, len(a) - ka], [kb, len(b) - kb]]).pvalue)


def render_finetune_accuracy(result: dict) -> str:
    import numpy as np

    from benchmarks.finetune_accuracy import CRITERIA, LOW, paired, spread, verdict

    o = result["provenance"]["options"]
    rows = result["rows"]
    precisions = list(o["precisions"])
    seeds = sorted({r["seed"] for r in rows})
    by = {(r["variant"], r["seed"]): r["test_macro_f1"] for r in rows}
    variants = ["upstream"] + [f"ours_{p}" for p in precisions]
    done = [s for s in seeds if all((v, s) in by for v in variants)]
    vals = {v: np.array([by[(v, s)] for s in done]) for v in variants}

    def ms(x):
        sd = _num(x.std(ddof=1) if len(x) > 1 else float("nan"), ".3f")
        return f"{x.mean():.3f} ± {sd} ({int((x < LOW).sum())} < {LOW})"

    def cmp(a, b):
        c = paired(vals[a], vals[b])
        return (
            f"{c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], p {c['p_value']:.2f} "
            f"(W/T/L {c['wins']}/{c['ties']}/{c['losses']})"
        )

    def ratio(p):
        sp = spread(vals["upstream"], vals[f"ours_{p}"])
        return f"{sp['sd_ratio']:.2f} [{sp['sd_ratio_ci_low']:.2f}, {sp['sd_ratio_ci_high']:.2f}]"

    def met(p):
        c = paired(vals["upstream"], vals[f"ours_{p}"])
        v = verdict(c, spread(vals["upstream"], vals[f"ours_{p}"]))
        failed = [
            name
            for name, key in (
                ("CI contains 0", "ci_contains_0"),
                ("CI half-width", "ci_half_width_ok"),
                ("mean", "mean_diff_ok"),
                ("sd ratio", "sd_ratio_ok"),
            )
            if not v[key]
        ]
        return "**yes**" if v["indistinguishable"] else "no (" + ", ".join(failed) + ")"

    init = f"pretrained {o['pretrained']}" if o.get("pretrained") else f"{o['shape']}, random init"
    sentences = f"{o['batches']} sentences" if o.get("batches", 1) > 1 else "one sentence"
    setting = (
        f"{init}, {o['cells']} cells ({sentences}), marker fold {o.get('marker_fold', 4.0):g}, {o['epochs']} "
        f"epochs, {len(done)} seeds"
    )
    out = table(
        [
            ("setting", "---"),
            ("variant", "---"),
            ("test macro-F1: mean ± sd (runs < 0.70)", "---"),
            ("paired difference vs upstream [95% CI]", "---"),
            ("sd ratio vs upstream [95% CI]", "---"),
            ("indistinguishable?", "---"),
        ],
        [[setting, "upstream (authors' code)", ms(vals["upstream"]), "", "", ""]]
        + [
            ["", f"ours {p}", ms(vals[f"ours_{p}"]), cmp("upstream", f"ours_{p}"), ratio(p), met(p)] for p in precisions
        ],
    )
    out += [
        "",
        f"Indistinguishable: the paired 95% CI contains 0 with a half-width of at most "
        f"{CRITERIA['ci_half_width']}, the mean difference is within ±{CRITERIA['mean_diff']}, and ours' sd is "
        f"at most {CRITERIA['sd_ratio']}x upstream's (sd ratio: a paired bootstrap over seeds). "
        f"Data: {o['cells']} synthetic cells x {o['genes']} vocabulary genes, {o['threads']} thread(s), early "
        f"stopping {o['patience']}; seconds per run (mean): "
        + ", ".join(
            f"{v} {sum(r['seconds'] for r in rows if r['variant'] == v) / max(1, len(done)):.0f}" for v in variants
        )
        + ".",
    ]
    if len(precisions) > 1:
        out[-1] += (
            f" ours {precisions[1]} - ours {precisions[0]}: {cmp(f'ours_{precisions[0]}', f'ours_{precisions[1]}')}."
        )
    out[-1] += (
        " Runs below 0.70 against upstream's (Fisher's exact test, two-sided): "
        + "; ".join(
            f"ours {p} {int((vals[f'ours_{p}'] < LOW).sum())} vs {int((vals['upstream'] < LOW).sum())}, p "
            f"{fisher(vals[f'ours_{p}'], vals['upstream']):.2f}"
            for p in precisions
        )
        + "."
    )
    return "\n".join(out)


def _epoch(e) -> str:
    return "never" if e is None else str(e)


def render_finetune_replay(result: dict) -> str:
    o = result["provenance"]["options"]
    body = []
    for r in result["rows"]:
        equal = r["first_step_beyond_tol"] if r["first_step_beyond_tol"] is not None else f"all {r['steps']}"
        body.append(
            [
                str(r["seed"]),
                r["draws_of"],
                r["replayed_by"],
                f"{r['max_rel_loss_diff_first10']:.1e}",
                str(equal),
                str(r["epochs_valid_f1_equal_from_start"]),
                f"{r['genuine_test_macro_f1']:.3f} / {r['replay_test_macro_f1']:.3f}",
                f"{r['genuine_best_epoch']} / {r['replay_best_epoch']}",
                f"{_epoch(r['genuine_first_epoch_f1_05'])} / {_epoch(r['replay_first_epoch_f1_05'])}",
            ]
        )
    out = table(
        [
            ("seed", "---:"),
            ("draws of", "---"),
            ("replayed by", "---"),
            ("max rel. loss difference, steps 0-9", "---:"),
            (f"steps with loss equal to {o['tolerance']:g}", "---:"),
            ("epochs with equal validation F1", "---:"),
            ("test macro-F1 genuine / replay", "---:"),
            ("best epoch genuine / replay", "---:"),
            ("first epoch of validation F1 >= 0.5, genuine / replay", "---:"),
        ],
        body,
    )
    out += [
        "",
        f"{o['shape']} shape, random init, {o['cells']} cells x {o['genes']} genes (one sentence), "
        f"{o['epochs']} epochs, fp32, one thread. The control rows (ours replaying its own draws from weights "
        "changed in their last float32 digit) show how soon any floating-point difference becomes another run.",
    ]
    return "\n".join(out)


def render_finetune_augmentation(result: dict) -> str:
    o, rows = result["provenance"]["options"], result["rows"]
    out = table(
        [("check", "---"), ("kind", "---"), ("ours", "---"), ("upstream", "---"), ("p", "---:"), ("agree", "---")],
        [
            [
                r["check"],
                r["kind"],
                str(r["ours"]).replace("|", "/"),
                str(r["upstream"]).replace("|", "/"),
                _num(r.get("p"), ".3f"),
                "yes" if r["ok"] else "**NO**",
            ]
            for r in rows
            if not r["check"].startswith(
                ("dropout calls of a step", "cells kept per step", "cells masked per step", "sentences")
            )
        ],
    )
    exact = [
        r
        for r in rows
        if r["check"].startswith(
            ("dropout calls of a step", "cells kept per step", "cells masked per step", "sentences")
        )
    ]
    out += [
        "",
        "Equal in both, step by step (too long to show): "
        + "; ".join(f"{r['check']} ({'equal' if r['ok'] else 'DIFFERENT'})" for r in exact)
        + ". "
        f"Data: {o['cells']} cells ({o['batches']} sentences), marker fold {o['marker_fold']:g}, {o['shape']} shape, "
        f"{o['epochs']} epochs x seeds {o['seeds']} of each implementation, {rows[0]['steps_ours']} training steps "
        "each; "
        "rates compared with a two-proportion z test, uniformity with a chi-square test (agree: p > 0.001).",
    ]
    return "\n".join(out)


def render_finetune_trajectory(result: dict) -> str:
    o, rows = result["provenance"]["options"], result["rows"]
    tol = o["tolerance"]

    def worst(col, upto=None):
        vals = [r[f"rel_diff_{col}"] for r in rows[:upto]]
        return max(vals) if vals else float("nan")

    first = next(
        (
            r["epoch"]
            for r in rows
            if any(r[f"rel_diff_{c}"] > tol for c in ("loss", "lr_embedder", "lr_main", "grad_norm"))
            or abs(r["upstream_valid_f1"] - r["ours_valid_f1"]) > 1e-6
        ),
        None,
    )
    lr_equal = all(r["rel_diff_lr_main"] < 1e-12 and r["rel_diff_lr_embedder"] < 1e-12 for r in rows)
    r0 = rows[0]
    out = [
        "| model | compared | epochs | max rel. difference, epochs 0-9: loss / grad norm | over all epochs | "
        "learning rates equal every epoch | first epoch beyond " + f"{tol:g} (or validation F1 differing) | "
        "test macro-F1 upstream / ours |",
        "|---|---|---:|---|---|---|---|---|",
        f"| {r0['shape']}, {r0['init']} | {r0['compared']} | {len(rows)} | {worst('loss', 10):.1e} / "
        f"{worst('grad_norm', 10):.1e} | {worst('loss'):.1e} / {worst('grad_norm'):.1e} | "
        f"{'yes' if lr_equal else 'no'} | "
        f"{'none' if first is None else first} | {r0['upstream_test_macro_f1']:.3f} / {r0['ours_test_macro_f1']:.3f} |",
    ]
    return "\n".join(out)


def render_embedding_speed(result: dict) -> str:
    L, R = "---", "---:"
    out = table(
        [
            ("model", L),
            ("cells", R),
            ("genes", R),
            ("device", L),
            ("precision", L),
            ("weights", L),
            ("cells/s", R),
            ("speed-up vs scGPT", R),
        ],
        [
            [
                r["method"] + status(r, reason=True),
                _num(r.get("n_cells"), ",.0f"),
                _num(r.get("n_genes"), ",.0f"),
                r.get("device") or "",
                r.get("precision") or "",
                r.get("weights") or "",
                _num(r.get("value"), ",.0f"),
                _num(r.get("speedup_vs_scgpt"), ",.1f") + "x",
            ]
            for r in result["rows"]
        ],
    )
    out += ["", "Targets: " + "; ".join(result.get("verdicts", []))] if result.get("verdicts") else []
    return "\n".join(out)


def render_timed(result: dict) -> str:
    L, R = "---", "---:"
    slowest = [t for r in result["rows"] for t in r.get("slowest_tests", [])]
    if slowest:  # a pytest run: its ten slowest tests under the total
        rows = [
            [f"`{t['test']}`" + ("" if t["phase"] == "call" else f" ({t['phase']})"), f"{t['seconds']:.0f} s"]
            for t in slowest
        ]
        return "\n".join(
            table(
                [("command", L), ("wall time", R)],
                [[f"`{r['command']}`", f"{r['wall_s'] / 60:.1f} min ({r['wall_s']:.0f} s)"] for r in result["rows"]],
            )
            + [
                "",
                "The slowest tests (pytest's `--durations`; a module's demo run is the setup of its first test):",
                "",
            ]
            + table([("test", L), ("time", R)], rows)
        )
    return "\n".join(
        table(
            [("command", L), ("wall time", R), ("jobs", R)],
            [
                [f"`{r['command']}`", f"{r['wall_s'] / 60:.1f} min ({r['wall_s']:.0f} s)", _num(r.get("jobs"), ",.0f")]
                for r in result["rows"]
            ],
        )
    )


def render_timed_compare(result: dict) -> str:
    """The demo's first run: before, warm and cold rows, their ratios and the targets."""
    L, R = "---", "---:"
    words = {
        "before": "before (earlier commit, environments warm)",
        "warm": "now, environments warm (second run)",
        "cold": "now, environments built fresh (first run)",
    }
    rows = [
        [
            words[r["role"]],
            f"`{r['commit'][:12]}`",
            f"{r['wall_s']:.0f} s",
            _num(r.get("jobs"), ",.0f"),
            _num(r.get("jobs_wall_s"), ",.0f") + " s",
            _num(r.get("cpu_s"), ",.0f") + " s",
            _num(r.get("command_cpu_s"), ",.0f") + " s",
        ]
        for r in result["rows"]
    ]
    out = table(
        [
            ("run", L),
            ("commit", L),
            ("workflow wall time", R),
            ("jobs", R),
            ("jobs' wall time, summed", R),
            ("CPU time (all processes)", R),
            ("Snakemake's own CPU", R),
        ],
        rows,
    )
    out += [
        "",
        "Targets: "
        + "; ".join(result["verdicts"])
        + ("" if result.get("one_machine") else " (NOT all on one machine)"),
    ]
    return "\n".join(out)


RENDERERS = {
    "timed": render_timed,
    "timed_compare": render_timed_compare,
    "speed": render_speed,
    "scale": render_scale,
    "finetune_accuracy": render_finetune_accuracy,
    "finetune_trajectory": render_finetune_trajectory,
    "finetune_replay": render_finetune_replay,
    "finetune_augmentation": render_finetune_augmentation,
    "embedding_speed": render_embedding_speed,
}


def block(relpath: str, root: Path = ROOT) -> str:
    """The generated text between the markers of ``relpath`` (without the markers)."""
    path = root / relpath
    name = path.name
    if not path.exists():
        return (
            f"*Not measured yet: `{relpath}` does not exist. `{COMMANDS.get(name, '?')}` writes it, then "
            f"`.venv/bin/python benchmarks/readme_tables.py` puts it here.*\n"
        )
    result = json.loads(path.read_text())
    return RENDERERS[result["benchmark"]](result).rstrip("\n") + "\n\n" + footer(result, name) + "\n"


def regenerate(text: str, root: Path = ROOT) -> str:
    return MARKER.sub(
        lambda m: f"<!-- {m.group(1)}: start -->\n{block(m.group(1), root)}<!-- {m.group(1)}: end -->", text
    )


def marked_files(root: Path = ROOT) -> list[Path]:
    """The markdown files that hold benchmark markers: README.md, then every ``*.md`` under docs/, sorted."""
    candidates = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [path for path in candidates if path.is_file() and MARKER.search(path.read_text())]


def _name(path: Path) -> str:
    """``path`` as the messages show it: relative to the repository when it lies inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Markers: <!-- benchmarks/results/NAME.json: start --> ... <!-- ...: end -->",
    )
    p.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a file's tables differ from the result files"
    )
    p.add_argument(
        "--files",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="markdown files to process (default: README.md and docs/**/*.md, those that hold markers)",
    )
    args = p.parse_args(argv)
    files = args.files or marked_files()
    if not files:
        print(f"{ROOT}: no markdown file holds benchmark markers (README.md, docs/)", file=sys.stderr)
        return 1
    stale = []
    for path in files:
        name = _name(path)
        text = path.read_text()
        found = MARKER.findall(text)
        if not found:
            print(f"{name}: no benchmark markers", file=sys.stderr)
            return 1
        new = regenerate(text)
        if args.check:
            if new != text:
                sys.stdout.writelines(
                    difflib.unified_diff(
                        text.splitlines(True), new.splitlines(True), name, f"{name} (from benchmarks/results)"
                    )
                )
                stale.append(name)
            else:
                print(f"{name}: {len(found)} benchmark tables up to date")
            continue
        if new != text:
            from cellplm.bench.io import write_text

            write_text(new, path)
        print(f"{name}: {len(found)} benchmark tables regenerated ({', '.join(f[0] for f in found)})")
    if stale:
        print(
            f"{', '.join(stale)}: benchmark tables differ from benchmarks/results/: run benchmarks/readme_tables.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
