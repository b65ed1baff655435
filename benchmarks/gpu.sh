#!/usr/bin/env bash
# The GPU rows of the speed tables in docs/results.md, in one short session (~15 minutes of device time on one
# GPU):
#   1. our CellPLM (fp32 and precision="auto", bf16 on a GPU) against upstream CellPLM 0.1.0.post2, zero-shot
#      embedding of 48,082 cells x 3,000 genes (benchmarks/speed.py --device cuda, embedding only)
#      -> benchmarks/results/speed_cuda.json; target: our bf16 cells/s >= 3x upstream's
#   2. the workflow's own embedding-speed job (CellPLM against scGPT on the same GPU, rules/speed.smk) with
#      benchmarks/gpu_speed.yaml on top of config/demo.yaml, copied by benchmarks/workflow_speed.py
#      -> benchmarks/results/embedding_speed_cuda.json; target: CellPLM >= 100x scGPT's cells/s
#   3. benchmarks/readme_tables.py regenerates the tables of README.md and docs/ from the result files.
# Needs .venv, .venv-upstream and .venv-scgpt with CUDA builds of torch (make venv upstream-env scgpt-env, run
# with network before the GPU session: the GPU machine may have none). Then commit benchmarks/results/ and docs/.
#   bash benchmarks/gpu.sh            # SPEED_TIMEOUT / WORKFLOW_TIMEOUT (seconds) bound each step
set -euo pipefail
cd "$(dirname "$0")/.."
SPEED_TIMEOUT=${SPEED_TIMEOUT:-420}
WORKFLOW_TIMEOUT=${WORKFLOW_TIMEOUT:-420}

for py in .venv/bin/python .venv-upstream/bin/python .venv-scgpt/bin/python; do
  [ -x "$py" ] || { echo "missing $py: run make venv upstream-env scgpt-env first" >&2; exit 2; }
  "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else f"{sys.executable}: torch {torch.__version__} sees no CUDA GPU")'
done
nvidia-smi -L || true

echo "== 1/3 ours vs upstream CellPLM, 48,082 cells x 3,000 genes, embedding ($(date -u +%H:%M:%S))"
PYTHONPATH=$PWD timeout "$SPEED_TIMEOUT" .venv-upstream/bin/python benchmarks/speed.py \
  --device cuda --cells 48082 --genes 3000 --repeats 5 --skip-finetune --out benchmarks/results/speed_cuda.json

echo "== 2/3 the workflow's embedding-speed job, CellPLM vs scGPT ($(date -u +%H:%M:%S))"
rm -f results/speed/embedding.tsv results/speed/cells.h5ad
timeout "$WORKFLOW_TIMEOUT" .venv/bin/snakemake --cores 8 --resources gpu=1 \
  --configfile config/demo.yaml benchmarks/gpu_speed.yaml -- results/speed/embedding.tsv
.venv/bin/python benchmarks/workflow_speed.py results/speed/embedding.tsv --device cuda

echo "== 3/3 README and docs tables ($(date -u +%H:%M:%S))"
.venv/bin/python benchmarks/readme_tables.py
git status --short benchmarks/results README.md docs
