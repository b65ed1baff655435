# Two entry points for a fresh machine (Python 3.11, no conda needed):
#   make demo   builds .venv, runs the offline demo end to end and writes results/report.html
#   make test   builds .venv and runs the test suite
# .venv is rebuilt only when requirements/lock.txt or pyproject.toml change.
SNAKEMAKE = .venv/bin/snakemake
CORES ?= 2

.PHONY: venv demo test lint report clean-demo

venv:
	bash tools/bootstrap.sh

demo: venv
	$(SNAKEMAKE) --cores $(CORES) --configfile config/demo.yaml
	$(SNAKEMAKE) --configfile config/demo.yaml --report results/report.html
	@echo "demo done: results/tables/benchmark.md, results/plots/, results/report.html"

test: venv
	.venv/bin/python -m pytest

lint: venv
	$(SNAKEMAKE) --lint
	$(SNAKEMAKE) --lint --configfile config/demo.yaml

report: venv
	$(SNAKEMAKE) --report results/report.html
