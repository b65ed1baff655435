"""Collect every run into the tidy tables of results/tables/."""

import json
from pathlib import Path

import pandas as pd

from cellplm.bench.config import method_labels
from cellplm.bench.embedding_metrics import AGGREGATES, METRICS
from cellplm.bench.io import write_text, write_tsv
from cellplm.bench.job import job
from cellplm.bench.report import aggregate as agg
from cellplm.bench.report import context as ctx
from cellplm.bench.report import fidelity as fid
from cellplm.bench.report import zeroshot as zs
from cellplm.bench.speed import speed_table

with job(snakemake):
    cfg = snakemake.config
    notes = snakemake.params.notes  # method id -> its note, on its rows of every table
    inp, out = snakemake.input, snakemake.output
    pretraining = {str(Path(p).parent): json.load(open(p)) for p in inp.pretraining}
    qc = {d: json.load(open(p)) for d, p in zip(snakemake.params.datasets, inp.qc)}
    datasets = agg.dataset_table(cfg, qc, agg.read_published(inp.published_datasets))
    records = agg.read_records(inp.records, pretraining)
    scores = agg.with_provenance(agg.read_tsvs(inp.scores), records)
    bench = agg.read_benchmarks(inp.benchmarks, snakemake.params.runs)
    summary = agg.summarise(scores)
    comp = agg.comparison(summary, agg.read_published_scores(inp.published), cfg, datasets)
    runs = agg.runs_table(records)
    fidelity = fid.fidelity_table(scores, records)
    per_run = agg.speed(records, bench)
    embedding = pd.read_csv(inp.speed_embedding[0], sep="\t") if inp.speed_embedding else pd.DataFrame()
    speed = speed_table(embedding, per_run)
    emb_records = zs.read_embedding_records(inp.embedding_records)
    labels, controls = snakemake.params.embeddings, snakemake.params.control_embeddings
    zeroshot = zs.zeroshot_table(agg.read_tsvs(inp.scib), emb_records, labels, controls)
    emb_speed = zs.embedding_speed_table(emb_records, labels, controls)
    write_tsv(datasets, out.datasets)
    write_tsv(agg.with_data(agg.with_notes(scores, notes), datasets), out.scores)
    write_tsv(agg.with_data(agg.with_notes(summary, notes), datasets), out.summary)
    write_tsv(comp, out.comparison)
    write_tsv(agg.with_data(fidelity, datasets), out.fidelity)
    write_tsv(agg.with_data(runs, datasets), out.runs)
    write_tsv(speed, out.speed)
    write_tsv(agg.with_data(zeroshot, datasets), out.zeroshot)
    write_tsv(agg.with_data(emb_speed, datasets), out.embedding_speed)
    zeroshot_lines = (
        zs.markdown_lines(zeroshot, emb_speed, {**METRICS, **AGGREGATES}) if snakemake.params.embeddings else []
    )
    fidelity_lines = fid.markdown_lines(fidelity, method_labels(cfg))
    curve = ctx.context_curve(zeroshot, emb_records, summary)
    write_tsv(agg.with_data(curve, datasets), out.context_curve)
    stability = pd.read_csv(inp.context_stability, sep="\t")
    context_lines = ctx.markdown_lines(curve, stability, method_labels(cfg), ctx.checkpoint_note(cfg), records)
    page = agg.markdown(
        summary,
        comp,
        runs,
        speed,
        cfg,
        datasets,
        zeroshot_lines,
        fidelity_lines,
        notes,
        context_lines,
        ctx.cost_lines(curve),
    )
    write_text(page, out.markdown)
