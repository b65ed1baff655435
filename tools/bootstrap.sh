#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv.
# The environment is rebuilt only when requirements/lock.txt or pyproject.toml change.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
stamp=$(cat requirements/lock.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f .venv/.stamp ] && [ "$(cat .venv/.stamp)" = "$stamp" ]; then
  exit 0
fi
echo "bootstrap: building .venv with $($PYTHON --version) (a few minutes the first time; log: logs/bootstrap.log)" >&2
mkdir -p logs
log=logs/bootstrap.log
install() {
  if ! "$@" >>"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" | tail -n 30 >&2
    echo "bootstrap: failed: $*" >&2
    exit 1
  fi
}
: >"$log"
rm -rf .venv
install "$PYTHON" -m venv .venv
install .venv/bin/pip install --upgrade pip
# torch first, from the pinned CPU-capable release, so that nothing pulls a newer CUDA build.
install .venv/bin/pip install "$(grep '^torch==' requirements/lock.txt)"
install .venv/bin/pip install -r requirements/lock.txt
install .venv/bin/pip install --no-deps -e .
echo "$stamp" > .venv/.stamp
echo "bootstrap: .venv ready" >&2
