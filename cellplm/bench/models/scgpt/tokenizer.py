"""scGPT's input: values binned per cell by scgpt's Preprocessor (one chunk of cells at a time), and token batches
made by scgpt's ``tokenize_and_pad_batch``."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager

import numpy as np
import scipy.sparse as sp

from .upstream import Preprocessor, tokenize_and_pad_batch, torch

PAD_TOKEN = "<pad>"
SPECIAL_TOKENS = [PAD_TOKEN, "<cls>", "<eoc>"]  # the tutorial's special tokens, in its order
PAD_VALUE = -2  # tutorial: pad_value = -2, mask_value = -1 (args.json of the released model says the same)
MASK_VALUE = -1
PREPROCESS_CHUNK = 2_000  # cells normalised and binned at a time (every step is per cell, so chunks are exact)


@contextmanager
def quiet_scgpt():
    """scgpt logs every preprocessing step (and every all-zero cell) at INFO/WARNING on stdout; and scanpy's
    normalisation resets torch's thread count to the number of cores, so it is restored afterwards."""
    logger = logging.getLogger("scGPT")
    level, threads = logger.level, torch.get_num_threads()
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
        torch.set_num_threads(threads)


def bin_values(counts: sp.csr_matrix, n_bins: int) -> sp.csr_matrix:
    """Per-cell value bins (1..n_bins-1 for expressed genes, 0 for zeros) as scgpt's Preprocessor makes them.

    Normalise to 1e4 per cell, log1p, then bin each cell's non-zero values by its own quantiles
    (``Preprocessor(normalize_total=1e4, log1p=True, binning=n_bins)``, the tutorial's settings for raw data).
    """
    import anndata as ad

    preprocessor = Preprocessor(
        use_key="X",
        filter_gene_by_counts=False,
        filter_cell_by_counts=False,
        normalize_total=1e4,
        result_normed_key="X_normed",
        log1p=True,
        result_log1p_key="X_log1p",
        subset_hvg=False,
        binning=int(n_bins),
        result_binned_key="X_binned",
    )
    chunks = []
    with quiet_scgpt(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(0, counts.shape[0], PREPROCESS_CHUNK):
            part = ad.AnnData(counts[start : start + PREPROCESS_CHUNK].copy())
            preprocessor(part, batch_key=None)
            chunks.append(sp.csr_matrix(part.layers["X_binned"].astype(np.float32)))
    if not chunks:
        return sp.csr_matrix((0, counts.shape[1]), dtype=np.float32)
    return sp.vstack(chunks, format="csr")


def tokenize(
    binned: sp.csr_matrix,
    gene_ids: np.ndarray,
    vocab,
    batch_size: int,
    max_seq_len: int,
    include_zero_gene: bool,
    pad_value: int = PAD_VALUE,
) -> list[dict]:
    """``tokenize_and_pad_batch`` per batch of cells: ``<cls>`` first, then the (expressed) genes, padded."""
    batches = []
    for start in range(0, binned.shape[0], batch_size):
        rows = binned[start : start + batch_size].toarray()
        t = tokenize_and_pad_batch(
            rows,
            gene_ids,
            max_len=max_seq_len,
            vocab=vocab,
            pad_token=PAD_TOKEN,
            pad_value=pad_value,
            append_cls=True,
            include_zero_gene=include_zero_gene,
        )
        batches.append({"genes": t["genes"].to(torch.int32), "values": t["values"]})
    return batches


def token_stats(binned: sp.csr_matrix, max_seq_len: int) -> dict:
    """How many tokens the cells have (their expressed genes and ``<cls>``) against ``max_seq_len``."""
    lengths = np.diff(binned.indptr) + 1
    return {
        "max_seq_len": max_seq_len,
        "mean_per_cell": float(np.minimum(lengths, max_seq_len).mean()),
        "share_of_cells_truncated": float((lengths > max_seq_len).mean()),
    }
