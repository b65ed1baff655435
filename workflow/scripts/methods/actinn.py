"""Method 'actinn': see `python actinn.py --help` and cellplm/bench/methods/actinn.py."""

from cellplm.bench.methods.actinn import ACTINN
from cellplm.bench.methods.cli import main

if __name__ == "__main__":
    raise SystemExit(main(ACTINN))
