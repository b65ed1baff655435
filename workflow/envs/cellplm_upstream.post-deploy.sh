#!/usr/bin/env bash
# Run by snakemake --use-conda inside the freshly created cellplm_upstream.yaml environment (a post-deployment script).
# cellplm 0.1.0.post2 goes in without its declared dependencies (pydance, and no torch), which are wrong; its real
# imports are in cellplm_upstream.yaml, as tools/upstream_env.sh does for .venv-upstream.
set -euo pipefail
python -m pip install --no-deps --no-input cellplm==0.1.0.post2
python -c "import CellPLM, CellPLM.pipeline.cell_embedding, CellPLM.pipeline.cell_type_annotation, skmisc" >/dev/null
