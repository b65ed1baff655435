# Two entry points for a fresh machine (Python 3.11, no conda needed):
#   make demo   builds .venv, .venv-upstream and .venv-scgpt, runs the offline demo end to end and writes results/report.html
#   make test   builds .venv (and .venv-upstream, the authors' CellPLM package for the parity tests) and runs the tests
# .venv is rebuilt only when requirements/lock.txt or pyproject.toml change.
# A run killed at any point (make demo, or the README's full-run command) resumes with the same command: the
# Snakefile removes the lock a killed run left (one line says so), profiles/default reruns its unfinished jobs.
SNAKEMAKE = .venv/bin/snakemake
PYTHON = .venv/bin/python
CORES ?= 2

.PHONY: venv upstream-env scgpt-env warm-caches slurm-packages demo test lint report clean-demo speed scale accuracy readme-tables

venv:
	bash tools/bootstrap.sh

demo: venv upstream-env scgpt-env warm-caches
	$(SNAKEMAKE) --cores $(CORES) --configfile config/demo.yaml
	$(SNAKEMAKE) --configfile config/demo.yaml --report results/report.html
	@echo "demo done: results/tables/benchmark.md, results/plots/, results/report.html"

# Deletes every file the demo's jobs wrote (outputs, logs, benchmark files) and results/report.html, nothing else:
# a full run's files in the same folders stay (tools/clean_demo.py). No venv prerequisite: it never builds one.
clean-demo:
	$(PYTHON) tools/clean_demo.py

upstream-env:
	bash tools/upstream_env.sh

# scGPT 0.2.4 needs torch 2.3 (torchtext): its own ~6 GB venv, cached in ~/.cache/cellplm-bench, linked as .venv-scgpt
scgpt-env:
	bash tools/scgpt_env.sh

# numba's compiled code of the jobs, once per environment (a fresh machine's first demo is then not slower)
warm-caches: venv scgpt-env
	bash tools/warm_numba.sh

# slurm-wlm + munge for tests/test_slurm.py (a live one-node SLURM cluster); apt-get only when missing and root.
slurm-packages:
	bash tools/slurm_localhost.sh install

test: venv upstream-env scgpt-env slurm-packages
	.venv/bin/python -m pytest

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(SNAKEMAKE) --lint
	$(SNAKEMAKE) --lint --configfile config/demo.yaml

report: venv
	$(SNAKEMAKE) --report results/report.html

# CellPLM speed, ours vs the authors' package, side by side in one process (see docs/results.md, "CellPLM speed").
speed: venv upstream-env
	PYTHONPATH=$(CURDIR) .venv-upstream/bin/python benchmarks/speed.py

# Preprocessing, splitting and CellPLM embedding of synthetic cells, peak memory (see docs/results.md, "Scale");
# the committed configuration by default, SCALE_CELLS="50000 100000 200000 500000" for the 24 GB question.
SCALE_CELLS ?= 20000 50000
scale: venv
	.venv/bin/python benchmarks/scale.py --cells $(SCALE_CELLS)

# Fine-tuning against upstream (docs/results.md): the deterministic loop, the random draws compared and replayed, and
# test macro-F1 over many seeds in two settings (one sentence with strong markers; three sentences with the demo's
# weaker markers). About 2.5 h on 2 cores (the two seed studies run side by side, one thread each). REPLAY_SEEDS:
# seed 0 and the seeds of the committed study where ours (1, 34, 40, 69, 77, 86) or upstream (122) scored below 0.70.
ACCURACY_SEEDS ?= 0-127
REPLAY_SEEDS ?= 0,1,34,40,69,77,86,122
UPSTREAM_PY = PYTHONPATH=$(CURDIR) OMP_NUM_THREADS=1 .venv-upstream/bin/python
accuracy: venv upstream-env
	$(UPSTREAM_PY) benchmarks/finetune_accuracy.py trajectory --shape tiny --epochs 150
	$(UPSTREAM_PY) benchmarks/finetune_accuracy.py augmentation --shape tiny --cells 1000 --batches 3 --marker-fold 2.5 --epochs 20 --seeds 0-3
	$(UPSTREAM_PY) benchmarks/finetune_accuracy.py replay --shape tiny --epochs 100 --seeds $(REPLAY_SEEDS)
	$(UPSTREAM_PY) benchmarks/finetune_accuracy.py seeds --shape tiny --epochs 100 --seeds $(ACCURACY_SEEDS) & \
	$(UPSTREAM_PY) benchmarks/finetune_accuracy.py seeds --shape tiny --epochs 100 --cells 1000 --batches 3 --marker-fold 2.5 \
	  --seeds $(ACCURACY_SEEDS) --out benchmarks/results/finetune_accuracy_sentences.json & wait

# The measured tables of README.md and docs/ from benchmarks/results/ (--check: only compare).
readme-tables: venv
	.venv/bin/python benchmarks/readme_tables.py
