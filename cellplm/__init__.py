"""CellPLM benchmark: our own CellPLM implementation plus the library code of the benchmark workflow.

The model and its task APIs (:mod:`cellplm.model`, :mod:`cellplm.embed`, :mod:`cellplm.finetune`,
:mod:`cellplm.pretrain`, :mod:`cellplm.genes`, :mod:`cellplm.cli`, ...) never import the benchmark side (data,
splits, methods, metrics, report), which lives in :mod:`cellplm.bench` and may import the model.
"""

__version__ = "0.1.0"
