# Two entry points for a fresh machine (Python 3.11, no conda needed):
#   make demo   builds .venv, runs the offline demo end to end and writes results/report.html
#   make test   builds .venv (and .venv-upstream, the authors' CellPLM package for the parity tests) and runs the tests
# .venv is rebuilt only when requirements/lock.txt or pyproject.toml change.
SNAKEMAKE = .venv/bin/snakemake
CORES ?= 2

.PHONY: venv upstream-env demo test lint report clean-demo speed

venv:
	bash tools/bootstrap.sh

demo: venv
	$(SNAKEMAKE) --cores $(CORES) --configfile config/demo.yaml
	$(SNAKEMAKE) --configfile config/demo.yaml --report results/report.html
	@echo "demo done: results/tables/benchmark.md, results/plots/, results/report.html"

upstream-env:
	bash tools/upstream_env.sh

test: venv upstream-env
	.venv/bin/python -m pytest

lint: venv
	$(SNAKEMAKE) --lint
	$(SNAKEMAKE) --lint --configfile config/demo.yaml

report: venv
	$(SNAKEMAKE) --report results/report.html

# CellPLM speed, ours vs the authors' package, side by side in one process (see README, "CellPLM speed").
speed: venv upstream-env
	PYTHONPATH=$(CURDIR) .venv-upstream/bin/python tools/benchmark_speed.py
