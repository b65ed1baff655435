#!/usr/bin/env bash
# Run by snakemake --use-conda inside the freshly created scgpt.yaml environment (a post-deployment script).
# scgpt 0.2.4 goes in without its declared dependencies (scvi-tools<1.0, scib, orbax, wandb, ...), which none of
# the modules the method imports need and which would pull in a second torch stack; see scgpt.yaml.
set -euo pipefail
python -m pip install --no-deps --no-input scgpt==0.2.4
python -c "import scgpt, scgpt.model, scgpt.tokenizer, scgpt.preprocess" >/dev/null  # as tools/scgpt_env.sh checks
