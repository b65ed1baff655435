"""CellPLM benchmark: our own CellPLM implementation plus the library code of the benchmark workflow.

The benchmark side (data, splits, methods, metrics, report) lives in :mod:`cellplm.bench`.
"""

__version__ = "0.1.0"
