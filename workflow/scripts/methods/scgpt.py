"""Method 'scgpt': see `python scgpt.py --help` and cellplm/bench/methods/scgpt_method.py (runs in .venv-scgpt)."""

import sys
from pathlib import Path

# This file is named like the package it wraps: without PYTHONSAFEPATH=1 its folder would shadow `scgpt`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from cellplm.bench.methods.cli import main  # noqa: E402

try:
    from cellplm.bench.methods.scgpt_method import ScGPTAnnotator
except ImportError as error:  # not the scGPT environment: every run becomes a failed row that says why
    from cellplm.bench.methods.base import Annotator

    IMPORT_ERROR = str(error)

    class ScGPTAnnotator(Annotator):
        label = "scGPT (fine-tuned)"
        implementation = "scgpt 0.2.4 (not importable by this interpreter)"

        def fit(self, train, solution=None, unlabelled=None):
            raise RuntimeError(f"{sys.executable} cannot import scgpt ({IMPORT_ERROR}); build .venv-scgpt with "
                               "`make scgpt-env` and set methods.scgpt.python to .venv-scgpt/bin/python")

if __name__ == "__main__":
    raise SystemExit(main(ScGPTAnnotator))
