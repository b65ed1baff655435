"""Method 'knn_pca': see `python knn_pca.py --help` and cellplm/bench/methods/classic.py."""

from cellplm.bench.methods.cli import main
from cellplm.bench.methods.classic import KNNOnPCA

if __name__ == "__main__":
    raise SystemExit(main(KNNOnPCA))
