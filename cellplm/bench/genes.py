"""Gene identifiers: tell Ensembl ids from symbols and map symbols to Ensembl ids offline.

The symbol-to-id table is the GENCODE v44 table that the CellTypist package ships
(``celltypist/data/samples/GENCODEv44_Gene_id2name.csv``), so no network call is needed.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

ENSEMBL_RE = re.compile(r"^ENS[A-Z]*G\d{11}(\.\d+)?$")


def ensembl_fraction(names) -> float:
    """Share of names that look like Ensembl gene ids (``ENSG00000141510`` or versioned)."""
    names = [str(n) for n in names]
    if not names:
        return 0.0
    return sum(bool(ENSEMBL_RE.match(n)) for n in names) / len(names)


def strip_version(ids) -> np.ndarray:
    return np.array([str(i).split(".")[0] if ENSEMBL_RE.match(str(i)) else str(i) for i in ids], dtype=object)


def gencode_table_path() -> Path:
    """Path of the GENCODE v44 id-to-name table shipped inside the installed CellTypist package."""
    try:
        root = resources.files("celltypist")
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "mapping gene symbols to Ensembl ids needs the celltypist package (it ships the GENCODE table); "
            "install it or provide an Ensembl id column (gene_ids) in the dataset config"
        ) from None
    return Path(str(root / "data" / "samples" / "GENCODEv44_Gene_id2name.csv"))


@functools.lru_cache(maxsize=2)
def gencode_symbol_to_id(path: str | None = None) -> dict[str, str]:
    """Symbol -> Ensembl id. Where a symbol has several ids the first row of the table wins."""
    table = pd.read_csv(path or gencode_table_path(), header=None, names=["gene_id", "symbol"], dtype=str)
    table = table.dropna().drop_duplicates("symbol", keep="first")
    return dict(zip(table["symbol"], strip_version(table["gene_id"])))


def symbols_to_ensembl(symbols, table: dict[str, str] | None = None) -> np.ndarray:
    """Map symbols to Ensembl ids; unmapped symbols give an empty string."""
    table = gencode_symbol_to_id() if table is None else table
    return np.array([table.get(str(s), "") for s in symbols], dtype=object)
