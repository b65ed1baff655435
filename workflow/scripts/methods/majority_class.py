"""Method 'majority_class': see `python majority_class.py --help` and cellplm/bench/methods/controls.py."""

from cellplm.bench.methods.cli import main
from cellplm.bench.methods.controls import MajorityClass

if __name__ == "__main__":
    raise SystemExit(main(MajorityClass))
