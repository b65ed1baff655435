"""Method 'geneformer': see `python geneformer.py --help` and cellplm/bench/methods/geneformer.py."""

from cellplm.bench.methods.cli import main
from cellplm.bench.methods.geneformer import Geneformer

if __name__ == "__main__":
    raise SystemExit(main(Geneformer))
