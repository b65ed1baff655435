"""Method 'cellplm_zeroshot': see `python cellplm_zeroshot.py --help` and cellplm/bench/methods/cellplm_methods.py."""

from cellplm.bench.methods.cellplm_methods import CellPLMZeroShot
from cellplm.bench.methods.cli import main

if __name__ == "__main__":
    raise SystemExit(main(CellPLMZeroShot))
