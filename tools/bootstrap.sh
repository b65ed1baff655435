#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv.
# The environment is rebuilt only when requirements/lock.txt or pyproject.toml change.
set -euo pipefail
cd "$(dirname "$0")/.."
REQ=requirements/lock.txt
source tools/venv_lib.sh
venv_begin bootstrap .venv logs/bootstrap.log "$REQ" pyproject.toml
install .venv/bin/pip install -r "$REQ"
install .venv/bin/pip install --no-deps -e .
venv_done
