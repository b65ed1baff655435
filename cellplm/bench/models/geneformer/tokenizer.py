"""The rank-value tokeniser: counts normalised per cell and by each gene's corpus median, genes ranked into tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .... import genes as genes_
from ...errors import ConfigError, InputError
from .files import GeneformerFiles, read_pickled_dict


SPECIAL_TOKENS = ("<pad>", "<mask>", "<cls>", "<eos>")
TARGET_SUM = 10_000


@dataclass
class GeneCoverage:
    n_genes: int  # input columns
    n_matched: int  # input columns whose Ensembl id has a token and a median
    n_tokens_used: int  # distinct vocabulary genes (columns sharing an id are summed, as Geneformer does)
    gene_share: float
    count_share: float  # share of all counts in matched columns (NaN without counts)
    id_source: str

    def describe(self) -> str:
        return (
            f"{self.n_matched}/{self.n_genes} genes ({self.gene_share:.1%}) in the Geneformer token dictionary, "
            f"{self.count_share:.1%} of counts; ids from {self.id_source}"
        )

    def require(self, source: str, min_gene_share: float, min_count_share: float) -> None:
        """NotApplicable when below ``min_gene_share`` of the genes or ``min_count_share`` of the counts matched."""
        genes_.require_coverage(
            source,
            n_matched=self.n_matched,
            gene_share=self.gene_share,
            count_share=self.count_share,
            min_gene_share=min_gene_share,
            min_count_share=min_count_share,
            describe=self.describe(),
            none_matched=f"no genes in the Geneformer token dictionary ({self.n_genes} genes; ids from "
            f"{self.id_source})",
        )


@dataclass
class GeneMapping:
    """Input columns -> vocabulary genes: a sparse 0/1 matrix that sums columns sharing an Ensembl id."""

    columns: np.ndarray  # matched input columns
    aggregate: sp.csr_matrix  # (len(columns), n_tokens_used)
    tokens: np.ndarray  # token id of each used vocabulary gene
    medians: np.ndarray  # its non-zero median
    coverage: GeneCoverage


class RankValueTokenizer:
    """Geneformer's rank-value encoding, written from the paper: one token-id sequence per cell.

    ``token_dictionary``: Ensembl id -> token id, including ``<pad>`` (and ``<mask>``, and ``<cls>``/``<eos>`` in
    the 2024 models). ``gene_medians``: Ensembl id -> non-zero median of the gene's normalised expression in the
    pretraining corpus. ``special_tokens``: wrap each cell in ``<cls>`` ... ``<eos>`` (``"auto"``: when the
    dictionary has both). ``max_input_size``: sequence length including special tokens.
    """

    def __init__(
        self,
        token_dictionary: dict,
        gene_medians: dict,
        max_input_size: int = 2048,
        special_tokens="auto",
        target_sum: float = TARGET_SUM,
    ):
        has_special = "<cls>" in token_dictionary and "<eos>" in token_dictionary
        if special_tokens == "auto":
            special_tokens = has_special
        elif not isinstance(special_tokens, bool):
            raise ConfigError(f'special_tokens must be true, false or "auto", got {special_tokens!r}')
        if special_tokens and not has_special:
            raise ConfigError("special_tokens is true but the token dictionary has no <cls> and <eos> tokens")
        self.special_tokens = special_tokens
        self.max_input_size = int(max_input_size)
        if self.max_input_size < (3 if special_tokens else 1):
            raise ConfigError(f"max_input_size {max_input_size} leaves no room for genes")
        self.target_sum = float(target_sum)
        self.pad_token = int(token_dictionary.get("<pad>", 0))
        self.cls_token = int(token_dictionary["<cls>"]) if special_tokens else None
        self.eos_token = int(token_dictionary["<eos>"]) if special_tokens else None
        genes = [g for g in token_dictionary if g not in SPECIAL_TOKENS and g in gene_medians]
        medians = np.array([float(gene_medians[g]) for g in genes])
        ok = np.isfinite(medians) & (medians > 0)
        self.gene_token = {g: int(token_dictionary[g]) for g, good in zip(genes, ok) if good}
        self.gene_median = {g: float(m) for g, m, good in zip(genes, medians, ok) if good}
        self.n_dropped_vocabulary = len(token_dictionary) - len(self.gene_token)  # special, no median, median <= 0
        self.max_token = max(int(v) for v in token_dictionary.values())

    @property
    def max_genes(self) -> int:
        return self.max_input_size - (2 if self.special_tokens else 0)

    def settings(self) -> dict:
        return {
            "target_sum": self.target_sum,
            "max_input_size": self.max_input_size,
            "special_tokens": self.special_tokens,
            "max_genes": self.max_genes,
            "vocabulary_genes": len(self.gene_token),
            "normalisation": "counts / cell total x target_sum / gene median",
            "ranking": "descending, ties in input column order",
            "duplicate_ids": "summed",
        }

    def map_genes(self, ensembl_ids, id_source: str = "given", counts=None) -> GeneMapping:
        """Which input columns are tokens; columns with the same Ensembl id are summed into one gene."""
        ids = [str(g) for g in ensembl_ids]
        used: dict[str, int] = {}  # vocabulary gene -> position, in order of first input column
        rows, cols = [], []
        for j, g in enumerate(ids):
            if g in self.gene_token:
                rows.append(j)
                cols.append(used.setdefault(g, len(used)))
        columns = np.asarray(rows, dtype=np.int64)
        aggregate = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float64), (np.arange(len(rows)), cols)), shape=(len(rows), len(used))
        )
        genes = list(used)
        count_share = genes_.count_share(None if counts is None else np.asarray(counts.sum(axis=0)).ravel(), columns)
        n = len(ids)
        coverage = GeneCoverage(n, len(rows), len(used), len(rows) / n if n else 0.0, count_share, id_source)
        return GeneMapping(
            columns,
            aggregate,
            np.array([self.gene_token[g] for g in genes], dtype=np.int64),
            np.array([self.gene_median[g] for g in genes], dtype=np.float64),
            coverage,
        )

    def tokenize(self, counts, mapping: GeneMapping, chunk: int = 2048) -> list[np.ndarray]:
        """One int64 token sequence per cell (row of ``counts``, raw counts over all input genes).

        A cell with no counts in the vocabulary genes gets an empty sequence (Geneformer drops such cells).
        """
        X = counts.tocsr() if sp.issparse(counts) else sp.csr_matrix(np.asarray(counts))
        out: list[np.ndarray] = []
        self.n_truncated = 0  # cells of the last call with more detected genes than max_genes
        for start in range(0, X.shape[0], chunk):
            block = X[start : start + chunk].astype(np.float64)
            totals = np.asarray(block.sum(axis=1)).ravel()  # the cell's total over ALL genes ("n_counts")
            genes = (block[:, mapping.columns] @ mapping.aggregate).tocsr()
            genes.sort_indices()
            scale = np.divide(self.target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
            for i in range(genes.shape[0]):
                lo, hi = genes.indptr[i], genes.indptr[i + 1]
                idx, val = genes.indices[lo:hi], genes.data[lo:hi]
                keep = val > 0
                idx, val = idx[keep], val[keep] * scale[i] / mapping.medians[idx[keep]]
                self.n_truncated += int(val.size > self.max_genes)
                order = np.argsort(-val, kind="stable")[: self.max_genes]
                tokens = mapping.tokens[idx[order]]
                if self.special_tokens and tokens.size:
                    tokens = np.concatenate([[self.cls_token], tokens, [self.eos_token]]).astype(np.int64)
                out.append(tokens)
        return out


def make_tokenizer(files: GeneformerFiles, max_input_size: int = 2048, special_tokens="auto"):
    """The tokeniser of a model directory, checked against its config.json (input size within the positions,
    token ids within the vocabulary); returns it with the model's shape from config.json."""
    try:
        config = json.loads(files.config.read_text())
    except (OSError, ValueError) as e:
        raise InputError(files.config, f"not a JSON model config ({e})") from None
    if config.get("model_type") != "bert":
        raise InputError(files.config, f"model_type is {config.get('model_type')!r}; Geneformer checkpoints are BERT")
    shape = {
        k: config.get(k)
        for k in (
            "num_hidden_layers",
            "hidden_size",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "vocab_size",
        )
    }
    positions = int(config.get("max_position_embeddings", 512))
    if int(max_input_size) > positions:
        raise ConfigError(
            f"max_input_size {max_input_size} exceeds the model's max_position_embeddings {positions} ({files.config})"
        )
    tokens = read_pickled_dict(files.token_dictionary, "Geneformer token dictionary")
    medians = read_pickled_dict(files.gene_median_dictionary, "Geneformer gene median dictionary")
    tokenizer = RankValueTokenizer(tokens, medians, int(max_input_size), special_tokens)
    if tokenizer.max_token >= int(config.get("vocab_size", 0)):
        raise InputError(
            files.token_dictionary,
            f"token ids go up to {tokenizer.max_token} but the model's "
            f"vocab_size is {config.get('vocab_size')}: dictionary and model do not belong together",
        )
    return tokenizer, shape


def anndata_ensembl_ids(adata, gene_ids=None) -> tuple[np.ndarray, str]:
    """Ensembl ids of the columns (a var column, var_names, or symbols mapped offline with GENCODE v44)."""
    from ....data import ensembl_ids

    try:
        return ensembl_ids(adata.var, adata.var_names, gene_ids)
    except KeyError:
        columns = ", ".join(map(str, adata.var.columns))
        raise ConfigError(f"gene_ids: column {gene_ids!r} not in var (columns: {columns})") from None


def pad_batch(sequences, pad_token: int):
    """Dynamic padding: (input_ids, attention_mask) as int64 tensors padded to the longest sequence."""
    import torch

    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_token, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask
