#!/usr/bin/env bash
# Create (or reuse) the isolated environment .venv-upstream holding the upstream CellPLM package
# (PyPI cellplm==0.1.0.post2, import name CellPLM). The parity tests (tests/test_parity.py, through
# tests/upstream/parity_reference.py), the speed and accuracy benchmarks (benchmarks/speed.py,
# benchmarks/finetune_accuracy.py) and the `cellplm_upstream` method of the workflow use it.
# It is kept apart from .venv on purpose; rebuilt only when requirements/upstream-cellplm.txt or this script change.
set -euo pipefail
cd "$(dirname "$0")/.."
REQ=requirements/upstream-cellplm.txt
source tools/venv_lib.sh
venv_begin upstream_env .venv-upstream logs/upstream_env.log "$REQ" tools/upstream_env.sh
install .venv-upstream/bin/pip install -r "$REQ"
# cellplm's declared dependencies are wrong (pydance, no torch); its real imports are all in $REQ.
install .venv-upstream/bin/pip install --no-deps cellplm==0.1.0.post2
install .venv-upstream/bin/python -c "import CellPLM, CellPLM.pipeline.cell_embedding, CellPLM.pipeline.cell_type_annotation, skmisc"
venv_done
