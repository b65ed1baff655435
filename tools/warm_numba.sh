#!/usr/bin/env bash
# Compile the numba code of the workflow's jobs once per environment (tools/warm_numba.py), so that a fresh
# machine's first `make demo` is not slower than its second. .venv: scanpy's preprocessing, the UMAP figures and
# scib-metrics' neighbour graphs;
# .venv-scgpt (cached in ~/.cache/cellplm-bench, shared by clones): scanpy's preprocessing. Skipped for an
# environment whose stamp (<env>/.numba-warm) matches this script, tools/warm_numba.py and
# cellplm/bench/compile_cache.py (which umap-learn functions are cached).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/venv_lib.sh
STAMP=$(venv_stamp tools/warm_numba.py tools/warm_numba.sh cellplm/bench/compile_cache.py)
warm() {  # warm ENV STEP...
  local env=$1; shift
  [ -x "$env/bin/python" ] || return 0
  local dir; dir=$(cd "$env" && pwd -P)
  if [ -f "$dir/.numba-warm" ] && [ "$(cat "$dir/.numba-warm")" = "$STAMP" ]; then
    return 0
  fi
  echo "warm_numba: compiling $env's numba code once (about a minute)" >&2
  PYTHONPATH="$PWD" "$env/bin/python" tools/warm_numba.py --steps "$@" >&2
  echo "$STAMP" > "$dir/.numba-warm"
}
warm .venv scanpy umap scib
warm .venv-scgpt scanpy
