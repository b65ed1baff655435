"""Method 'true_labels': see `python true_labels.py --help` and cellplm/bench/methods/controls.py."""

from cellplm.bench.methods.cli import main
from cellplm.bench.methods.controls import TrueLabels

if __name__ == "__main__":
    raise SystemExit(main(TrueLabels))
