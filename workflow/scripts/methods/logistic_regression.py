"""Method 'logistic_regression': see `python logistic_regression.py --help` and cellplm/bench/methods/classic.py."""

from cellplm.bench.methods.cli import main
from cellplm.bench.methods.classic import LogisticRegressionHVG

if __name__ == "__main__":
    raise SystemExit(main(LogisticRegressionHVG))
