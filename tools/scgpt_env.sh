#!/usr/bin/env bash
# Create (or reuse) the isolated environment for scGPT 0.2.4 (PyPI scgpt), used by the `scgpt` method
# (cellplm/bench/methods/scgpt/), its tests (tests/test_scgpt.py) and the embedding-speed benchmark.
# scGPT needs torchtext, which needs torch 2.3: the venv is ~6 GB (torch 2.3.0 from PyPI is a CUDA build), so it
# lives in a cache outside the checkout, keyed by the hash of its inputs (requirements/scgpt.txt and this script):
#   ${CELLPLM_BENCH_ENV_CACHE:-$HOME/.cache/cellplm-bench}/scgpt-<hash>
# and .venv-scgpt in the repository root is a symbolic link to it, so a fresh clone reuses a build in seconds.
# Install log: logs/scgpt_env.log.
set -euo pipefail
cd "$(dirname "$0")/.."
REQ=requirements/scgpt.txt
SCGPT=scgpt==0.2.4
source tools/venv_lib.sh
CACHE=${CELLPLM_BENCH_ENV_CACHE:-$HOME/.cache/cellplm-bench}
VENV=$CACHE/scgpt-$(venv_stamp "$REQ" tools/scgpt_env.sh)
mkdir -p "$CACHE"
if [ -e .venv-scgpt ] && [ ! -L .venv-scgpt ]; then
  echo "scgpt_env: .venv-scgpt is a real directory, not a link into $CACHE; remove it first" >&2
  exit 1
fi
ln -sfn "$VENV" .venv-scgpt
# One build at a time per cached venv (a CI run and a session on the same machine share the cache).
exec 9>"$VENV.lock"
flock 9
venv_begin scgpt_env "$VENV" logs/scgpt_env.log "$REQ" tools/scgpt_env.sh
install "$VENV/bin/pip" install -r "$REQ"
# scgpt's declared dependencies (scvi-tools<1.0, scib, orbax, wandb, ...) are not imported by what we use.
install "$VENV/bin/pip" install --no-deps "$SCGPT"
install env PYTHONPATH="$PWD" "$VENV/bin/python" -W ignore -c \
  "import scgpt, scgpt.model, scgpt.tokenizer, scgpt.preprocess, cellplm.bench.methods.scgpt.method"
venv_done
