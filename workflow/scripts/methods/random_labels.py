"""Method 'random_labels': see `python random_labels.py --help` and cellplm/bench/methods/controls.py."""

from cellplm.bench.methods.cli import main
from cellplm.bench.methods.controls import RandomLabels

if __name__ == "__main__":
    raise SystemExit(main(RandomLabels))
