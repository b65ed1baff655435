"""Gene identifiers: moved to :mod:`cellplm.genes` (the model package ships the GENCODE v44 table).

Re-exported here for scripts that still import them from the benchmark.
"""

from ..genes import (ENSEMBL_RE, ensembl_fraction, ensembl_to_symbols, gencode_id_to_symbol, gencode_symbol_to_id,
                     gencode_table_path, strip_version, symbols_to_ensembl)

__all__ = ["ENSEMBL_RE", "ensembl_fraction", "ensembl_to_symbols", "gencode_id_to_symbol", "gencode_symbol_to_id",
           "gencode_table_path", "strip_version", "symbols_to_ensembl"]
