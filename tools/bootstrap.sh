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
echo "bootstrap: building .venv with $($PYTHON --version) (a few minutes the first time)" >&2
rm -rf .venv
"$PYTHON" -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# torch first, from the pinned CPU-capable release, so that nothing pulls a newer CUDA build.
.venv/bin/pip install --quiet "$(grep '^torch==' requirements/lock.txt)"
.venv/bin/pip install --quiet -r requirements/lock.txt
.venv/bin/pip install --quiet --no-deps -e .
echo "$stamp" > .venv/.stamp
