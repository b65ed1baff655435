"""Gene identifiers: tell Ensembl ids from symbols, map symbols to Ensembl ids offline, and check how much of a
dataset lands in a model's vocabulary.

The symbol/id table is the GENCODE v44 table that the CellTypist package ships
(``celltypist/data/samples/GENCODEv44_Gene_id2name.csv``), copied gzipped into this package
(``cellplm/resources/GENCODEv44_Gene_id2name.csv.gz``; source and licence in ``cellplm/resources/README.md``),
so no network call and no CellTypist installation is needed. numpy only at import (pandas when the table is read):
importable in the scGPT environment too.
"""

from __future__ import annotations

import functools
import math
import re
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import NotApplicable

ENSEMBL_RE = re.compile(r"^ENS[A-Z]*G\d{11}(\.\d+)?$")
GENCODE_TABLE = "GENCODEv44_Gene_id2name.csv.gz"


def ensembl_fraction(names) -> float:
    """Share of names that look like Ensembl gene ids (``ENSG00000141510`` or versioned)."""
    names = [str(n) for n in names]
    if not names:
        return 0.0
    return sum(bool(ENSEMBL_RE.match(n)) for n in names) / len(names)


def strip_version(ids) -> np.ndarray:
    return np.array([str(i).split(".")[0] if ENSEMBL_RE.match(str(i)) else str(i) for i in ids], dtype=object)


def gencode_table_path() -> Path:
    """Path of the GENCODE v44 id-to-name table shipped with this package (gzipped CSV: gene id, symbol)."""
    return Path(str(resources.files("cellplm") / "resources" / GENCODE_TABLE))


@functools.lru_cache(maxsize=2)
def _gencode_table(path: str | None = None):
    """The table's rows with both an id and a symbol, in file order (columns gene_id, symbol)."""
    import pandas as pd

    return pd.read_csv(path or gencode_table_path(), header=None, names=["gene_id", "symbol"], dtype=str).dropna()


@functools.lru_cache(maxsize=2)
def gencode_symbol_to_id(path: str | None = None) -> dict[str, str]:
    """Symbol -> Ensembl id. Where a symbol has several ids the first row of the table wins."""
    table = _gencode_table(path).drop_duplicates("symbol", keep="first")
    return dict(zip(table["symbol"], strip_version(table["gene_id"])))


@functools.lru_cache(maxsize=2)
def gencode_id_to_symbol(path: str | None = None) -> dict[str, str]:
    """Ensembl id (unversioned) -> symbol. Where an id has several rows the last one wins."""
    table = _gencode_table(path)
    return dict(zip(strip_version(table["gene_id"]), table["symbol"]))


def symbols_to_ensembl(symbols, table: dict[str, str] | None = None) -> np.ndarray:
    """Map symbols to Ensembl ids; unmapped symbols give an empty string."""
    table = gencode_symbol_to_id() if table is None else table
    return np.array([table.get(str(s), "") for s in symbols], dtype=object)


def ensembl_to_symbols(names, table: dict[str, str] | None = None) -> np.ndarray:
    """Map Ensembl ids (versioned or not) to symbols; unmapped ids give an empty string, other names are kept."""
    table = gencode_id_to_symbol() if table is None else table
    names = np.asarray(names, dtype=object).astype(str)
    ids = strip_version(names)
    return np.array([table.get(i, "") if ENSEMBL_RE.match(i) else n for i, n in zip(ids, names)], dtype=object)


# ---- vocabulary coverage ----------------------------------------------------------------------------------------


def count_share(totals, matched) -> float:
    """Share of all counts in the ``matched`` columns (a mask or indices); NaN without counts or with none."""
    if totals is None:
        return float("nan")
    totals = np.asarray(totals)
    if not totals.sum() > 0:
        return float("nan")
    return float(totals[matched].sum() / totals.sum())


def require_coverage(
    source,
    *,
    n_matched: int,
    gene_share: float,
    count_share: float,
    min_gene_share: float,
    min_count_share: float,
    none_matched: str,
    describe: str,
) -> None:
    """Raise :class:`NotApplicable` when too little of the data lands in a model's vocabulary.

    ``none_matched`` says why no gene matched, ``describe`` what matched (the messages name the model); below
    ``min_gene_share`` of the genes or ``min_count_share`` of the counts (when known) the model would see noise.
    """
    if n_matched == 0:
        raise NotApplicable(f"{source}: {none_matched}")
    if gene_share < min_gene_share or (not math.isnan(count_share) and count_share < min_count_share):
        raise NotApplicable(
            f"{source}: only {describe}; below the thresholds "
            f"(genes {min_gene_share:.0%}, counts {min_count_share:.0%})"
        )
