"""Method 'cellplm_finetune': see `python cellplm_finetune.py --help` and cellplm/bench/methods/cellplm_methods.py."""

from cellplm.bench.methods.cellplm_methods import CellPLMFinetune
from cellplm.bench.methods.cli import main

if __name__ == "__main__":
    raise SystemExit(main(CellPLMFinetune))
