"""Method 'scanvi': see `python scanvi.py --help` and cellplm/bench/methods/scanvi.py."""

from cellplm.bench.methods.cli import main
from cellplm.bench.methods.scanvi import SCANVIAnnotator

if __name__ == "__main__":
    raise SystemExit(main(SCANVIAnnotator))
