"""Method 'celltypist': see `python celltypist.py --help` and cellplm/bench/methods/celltypist_method.py."""

from cellplm.bench.methods.cli import main
from cellplm.bench.methods.celltypist_method import CellTypistFromScratch

if __name__ == "__main__":
    raise SystemExit(main(CellTypistFromScratch))
