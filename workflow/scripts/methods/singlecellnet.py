"""Method 'singlecellnet': see `python singlecellnet.py --help` and cellplm/bench/methods/singlecellnet.py."""

from cellplm.bench.methods.cli import main
from cellplm.bench.methods.singlecellnet import SingleCellNet

if __name__ == "__main__":
    raise SystemExit(main(SingleCellNet))
