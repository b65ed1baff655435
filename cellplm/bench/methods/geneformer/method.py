"""Geneformer (Theodoris et al., Nature 2023) in the benchmark: rank-value tokenisation + a fine-tuned BERT.

Geneformer reads a cell as a sentence of genes. Each gene's count is normalised by the cell's total count
(x 10,000) and then by that gene's non-zero median across the pretraining corpus, so that genes which are always
high (housekeeping) rank lower than genes unusually high in this cell; the detected genes, ranked by that value in
descending order, become token ids, truncated to the model's input size. The 2024 models (95M / 104M cells,
input size 4096) wrap the sentence in ``<cls>`` ... ``<eos>``; the 2023 6-layer model (30M cells, 2048) has no
special tokens in the sentence.

The weights are a Hugging Face BERT checkpoint (``params.model_dir``; the workflow fetches the V1 model from Hugging
Face at a pinned commit, config ``models``, or the user supplies one): ``config.json``
plus ``model.safetensors`` or ``pytorch_model.bin``, with Geneformer's two pickled dictionaries next to it
(or wherever ``params.token_dictionary`` / ``params.gene_median_dictionary`` point). Without a model directory the
method is not applicable. Annotation follows Geneformer's cell-classification example: a
``BertForSequenceClassification`` head on the pretrained encoder, all layers fine-tuned (``freeze_layers=0``),
AdamW (lr 5e-5, weight decay 0.001 on all but biases and LayerNorm weights), batch 12, linear schedule with 500
warm-up steps, 10 epochs, gradients clipped at norm 1 (the Hugging Face Trainer default). The loop is plain
torch with dynamic padding and attention masks; validation cells (``obs['is_validation']``) are held out and
pick the best epoch by macro-F1.

The tokeniser is written here from the paper's description and the documented behaviour of Geneformer's
``TranscriptomeTokenizer`` (totals over all genes of the cell, duplicate Ensembl ids summed, ties kept in input
order); ``transformers`` is imported only when a model directory is configured. :func:`embed_cells` gives
zero-shot cell embeddings (mean of the penultimate layer's gene states), used by the speed comparison.
"""

from __future__ import annotations

import functools
import json
import math
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .... import genes as genes_
from ....checksum import sha256_file
from ....metrics import macro_f1
from ...errors import ConfigError, InputError, NotApplicable
from ..base import Annotator

# File names of the real distribution (Geneformer's repository, package folder `geneformer/`): the 2023
# release shipped `token_dictionary.pkl` + `gene_median_dictionary.pkl`; later releases name them after the
# pretraining corpus (`_gc95M`, `_gc104M`; the 2023 model's copies moved to `gene_dictionaries_30m/..._gc30M`).
DICTIONARY_SUFFIXES = ("", "_gc104M", "_gc95M", "_gc30M")
TOKEN_DICTIONARY = "token_dictionary{}.pkl"
GENE_MEDIAN_DICTIONARY = "gene_median_dictionary{}.pkl"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin",  # sharded checkpoints: their index files
                "model.safetensors.index.json", "pytorch_model.bin.index.json")
SPECIAL_TOKENS = ("<pad>", "<mask>", "<cls>", "<eos>")
TARGET_SUM = 10_000



# --------------------------------------------------------------------------------------------------- model files
@dataclass
class GeneformerFiles:
    model_dir: Path
    config: Path
    weights: Path
    token_dictionary: Path
    gene_median_dictionary: Path


def _given_path(value, model_dir: Path) -> Path:
    """A path from params: absolute, relative to the working directory, or else relative to the model folder."""
    p = Path(value)
    if p.is_absolute() or p.exists():
        return p
    return model_dir / p


def find_model_files(model_dir, token_dictionary=None, gene_median_dictionary=None) -> GeneformerFiles:
    """Locate config, weights and the two dictionaries; one-line InputError naming what is missing."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise InputError(folder, "Geneformer model directory does not exist")
    config = folder / "config.json"
    if not config.is_file():
        raise InputError(folder, "no config.json (a Hugging Face BERT checkpoint saved with save_pretrained)")
    weights = next((folder / w for w in WEIGHT_FILES if (folder / w).is_file()), None)
    if weights is None:
        raise InputError(folder, f"no model weights (looked for {', '.join(WEIGHT_FILES)})")
    if token_dictionary and gene_median_dictionary:
        pair = (_given_path(token_dictionary, folder), _given_path(gene_median_dictionary, folder))
    else:
        pairs = [(folder / TOKEN_DICTIONARY.format(s), folder / GENE_MEDIAN_DICTIONARY.format(s))
                 for s in DICTIONARY_SUFFIXES]
        if token_dictionary:
            given = _given_path(token_dictionary, folder)
            pairs = [(given, m) for _, m in pairs]
        elif gene_median_dictionary:
            given = _given_path(gene_median_dictionary, folder)
            pairs = [(t, given) for t, _ in pairs]
        found = [p for p in pairs if p[0].is_file() and p[1].is_file()]
        if not found:
            names = ", ".join(f"{TOKEN_DICTIONARY.format(s)} + {GENE_MEDIAN_DICTIONARY.format(s)}"
                              for s in DICTIONARY_SUFFIXES)
            raise InputError(folder, f"no Geneformer token and gene median dictionaries (looked for {names}; or set "
                                     "params token_dictionary and gene_median_dictionary)")
        if len(set(found)) > 1:
            raise InputError(folder, "several Geneformer dictionary pairs ("
                             + "; ".join(f"{t.name} + {m.name}" for t, m in found)
                             + "): set params token_dictionary and gene_median_dictionary to the model's pair")
        pair = found[0]
    for p in pair:
        if not p.is_file():
            raise InputError(p, "Geneformer dictionary file does not exist")
    return GeneformerFiles(folder, config, weights, *pair)


class _DictUnpickler(pickle.Unpickler):
    """Unpickles dicts of strings and numbers only: the one global admitted is numpy's scalar constructor (and
    ``numpy.dtype``), which medians saved as numpy floats need. Any other global, which unpickling would call, is
    refused before anything runs."""

    ALLOWED = {("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused the global {module}.{name} (only dicts of strings and numbers are read)")


def read_pickled_dict(path, what: str) -> dict:
    """A Geneformer dictionary (token ids or gene medians): a non-empty dict of strings to numbers, read with a
    restricted unpickler, so that a swapped or corrupted file cannot run code."""
    try:
        with open(path, "rb") as fh:
            obj = _DictUnpickler(fh).load()
    except pickle.UnpicklingError as e:
        raise InputError(path, f"cannot read the {what}: {e}") from None
    except Exception as e:  # noqa: BLE001 -- any unreadable pickle is the same user error
        raise InputError(path, f"cannot read the {what} ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or not obj:
        raise InputError(path, f"the {what} is not a non-empty dict (got {type(obj).__name__})")
    bad = next((k for k, v in obj.items() if not isinstance(k, str) or isinstance(v, (bool, np.bool_))
                or not isinstance(v, (int, float, np.integer, np.floating))), None)
    if bad is not None:
        raise InputError(path, f"the {what} maps {bad!r} to {type(obj[bad]).__name__}: expected strings to numbers")
    return obj


# ------------------------------------------------------------------------------------------------------ tokeniser
@dataclass
class GeneCoverage:
    n_genes: int  # input columns
    n_matched: int  # input columns whose Ensembl id has a token and a median
    n_tokens_used: int  # distinct vocabulary genes (columns sharing an id are summed, as Geneformer does)
    gene_share: float
    count_share: float  # share of all counts in matched columns (NaN without counts)
    id_source: str

    def describe(self) -> str:
        return (f"{self.n_matched}/{self.n_genes} genes ({self.gene_share:.1%}) in the Geneformer token dictionary, "
                f"{self.count_share:.1%} of counts; ids from {self.id_source}")


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

    def __init__(self, token_dictionary: dict, gene_medians: dict, max_input_size: int = 2048,
                 special_tokens="auto", target_sum: float = TARGET_SUM):
        has_special = "<cls>" in token_dictionary and "<eos>" in token_dictionary
        if special_tokens == "auto":
            special_tokens = has_special
        elif not isinstance(special_tokens, bool):
            raise ConfigError(f"special_tokens must be true, false or \"auto\", got {special_tokens!r}")
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
        return {"target_sum": self.target_sum, "max_input_size": self.max_input_size,
                "special_tokens": self.special_tokens, "max_genes": self.max_genes,
                "vocabulary_genes": len(self.gene_token),
                "normalisation": "counts / cell total x target_sum / gene median",
                "ranking": "descending, ties in input column order", "duplicate_ids": "summed"}

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
        aggregate = sp.csr_matrix((np.ones(len(rows), dtype=np.float64), (np.arange(len(rows)), cols)),
                                  shape=(len(rows), len(used)))
        genes = list(used)
        count_share = genes_.count_share(None if counts is None else np.asarray(counts.sum(axis=0)).ravel(), columns)
        n = len(ids)
        coverage = GeneCoverage(n, len(rows), len(used), len(rows) / n if n else 0.0, count_share, id_source)
        return GeneMapping(columns, aggregate, np.array([self.gene_token[g] for g in genes], dtype=np.int64),
                           np.array([self.gene_median[g] for g in genes], dtype=np.float64), coverage)

    def tokenize(self, counts, mapping: GeneMapping, chunk: int = 2048) -> list[np.ndarray]:
        """One int64 token sequence per cell (row of ``counts``, raw counts over all input genes).

        A cell with no counts in the vocabulary genes gets an empty sequence (Geneformer drops such cells).
        """
        X = counts.tocsr() if sp.issparse(counts) else sp.csr_matrix(np.asarray(counts))
        out: list[np.ndarray] = []
        self.n_truncated = 0  # cells of the last call with more detected genes than max_genes
        for start in range(0, X.shape[0], chunk):
            block = X[start:start + chunk].astype(np.float64)
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
    shape = {k: config.get(k) for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
                                         "max_position_embeddings", "vocab_size")}
    positions = int(config.get("max_position_embeddings", 512))
    if int(max_input_size) > positions:
        raise ConfigError(f"max_input_size {max_input_size} exceeds the model's max_position_embeddings {positions} "
                          f"({files.config})")
    tokens = read_pickled_dict(files.token_dictionary, "Geneformer token dictionary")
    medians = read_pickled_dict(files.gene_median_dictionary, "Geneformer gene median dictionary")
    tokenizer = RankValueTokenizer(tokens, medians, int(max_input_size), special_tokens)
    if tokenizer.max_token >= int(config.get("vocab_size", 0)):
        raise InputError(files.token_dictionary, f"token ids go up to {tokenizer.max_token} but the model's "
                         f"vocab_size is {config.get('vocab_size')}: dictionary and model do not belong together")
    return tokenizer, shape


def anndata_ensembl_ids(adata, gene_ids=None) -> tuple[np.ndarray, str]:
    """Ensembl ids of the columns (a var column, var_names, or symbols mapped offline with GENCODE v44)."""
    from ....data import ensembl_ids

    try:
        return ensembl_ids(adata.var, adata.var_names, gene_ids)
    except KeyError:
        columns = ", ".join(map(str, adata.var.columns))
        raise ConfigError(f"gene_ids: column {gene_ids!r} not in var (columns: {columns})") from None


# -------------------------------------------------------------------------------------------------- fine-tuning
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


def training_batches(lengths, batch_size: int, generator: np.random.Generator, group_by_length: bool):
    """Shuffled mini-batches; with ``group_by_length`` each run of 50 batches is sorted by length (as the Hugging
    Face Trainer's length-grouped sampler does), so that padding stays short."""
    order = generator.permutation(len(lengths))
    if group_by_length:
        mega = 50 * batch_size
        order = np.concatenate([sorted(order[i:i + mega], key=lambda j: -lengths[j])
                                for i in range(0, len(order), mega)]) if len(order) else order
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        generator.shuffle(batches)
    return batches


def linear_schedule(warmup_steps: int, total_steps: int):
    """Learning-rate factor: linear warm-up from 0, then linear decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor




class Geneformer(Annotator):
    """Geneformer fine-tuned for cell-type annotation (see the module docstring; defaults: ``params`` in method.yaml).

    Other params: ``model_dir`` (required; null -> not applicable; the workflow sets it, the dictionaries and
    ``checkpoint_kind: released`` for the model it fetches, config ``models``), ``token_dictionary`` and
    ``gene_median_dictionary`` (paths; default: found in ``model_dir``), ``gene_ids`` (a ``var`` column with
    Ensembl ids, or "var_names"; default: detected, symbols mapped offline with GENCODE v44).
    """

    packages = ("torch", "transformers", "safetensors")

    # --- model directory and tokeniser (no transformers needed) ---------------------------------------------------
    def _model_files(self) -> GeneformerFiles:
        model_dir = self.params.get("model_dir")
        if not model_dir:
            raise NotApplicable("no Geneformer model directory configured (methods.geneformer.params.model_dir); "
                                "set methods.geneformer.model: geneformer_v1_10m to have the workflow fetch it from "
                                "Hugging Face (as the full config does), or point model_dir at a copy of your own")
        files = find_model_files(model_dir, self.params.get("token_dictionary"),
                                 self.params.get("gene_median_dictionary"))
        self.extra.update({"checkpoint": str(files.model_dir), "checkpoint_kind": self.param("checkpoint_kind"),
                           "weights_file": files.weights.name, "token_dictionary": str(files.token_dictionary),
                           "gene_median_dictionary": str(files.gene_median_dictionary)})
        if files.weights.suffix != ".json":  # a single weights file (not a sharded index)
            self.extra["checkpoint_sha256"] = sha256_file(files.weights)
        return files

    def _make_tokenizer(self, files: GeneformerFiles) -> RankValueTokenizer:
        tokenizer, self.extra["model"] = make_tokenizer(files, int(self.param("max_input_size")),
                                                        self.param("special_tokens"))
        self.extra["tokenisation"] = tokenizer.settings()
        return tokenizer

    def _tokenize(self, adata, source: str, check: bool) -> list[np.ndarray]:
        """Token sequences of the cells; with ``check``, record the gene coverage and refuse too little of it."""
        ids, id_source = anndata_ensembl_ids(adata, self.params.get("gene_ids"))
        mapping = self.tokenizer.map_genes(ids, id_source, counts=adata.X if check else None)
        cov = mapping.coverage
        if check:
            self.extra["genes"] = asdict(cov)
            print(f"geneformer: {source}: {cov.describe()}")
            genes_.require_coverage(
                source, n_matched=cov.n_matched, gene_share=cov.gene_share, count_share=cov.count_share,
                min_gene_share=float(self.param("min_gene_share")), min_count_share=float(self.param("min_count_share")),
                describe=cov.describe(),
                none_matched=f"no genes in the Geneformer token dictionary ({cov.n_genes} genes; ids from {cov.id_source})")
        return self.tokenizer.tokenize(adata.X, mapping)

    # --- the BERT --------------------------------------------------------------------------------------------------
    def _load_model(self, files: GeneformerFiles, n_labels: int):
        """BertForSequenceClassification with the pretrained encoder; refuses weights that leave it half random."""
        import torch
        from transformers import BertForSequenceClassification
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        torch.manual_seed(self.seed)  # the new pooler and classifier
        model, info = BertForSequenceClassification.from_pretrained(
            str(files.model_dir), num_labels=n_labels, output_loading_info=True, ignore_mismatched_sizes=True,
            dtype=torch.float32)
        missing = sorted(info["missing_keys"])
        mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info["mismatched_keys"])
        bad = [k for k in missing if k.startswith(("bert.embeddings", "bert.encoder"))]
        bad += [k for k in mismatched if not k.startswith("classifier")]
        if bad:
            raise InputError(files.weights, f"the weights do not fit the BERT encoder of config.json: {len(bad)} "
                                            f"encoder tensors missing or of another shape (e.g. {bad[0]})")
        self.extra["loading"] = {"newly_initialised": missing + mismatched, "unused": sorted(info["unexpected_keys"])}
        model.config.id2label = dict(enumerate(self.classes_))
        model.config.label2id = {c: i for i, c in enumerate(self.classes_)}
        return model

    # --- fit / predict -------------------------------------------------------------------------------------------
    def fit(self, train, solution=None, unlabelled=None):
        files = self._model_files()  # not applicable without a model directory, before anything heavy is imported
        self.tokenizer = self._make_tokenizer(files)
        sequences = self._tokenize(train, "training data", check=True)
        self.n_genes_used = self.extra["genes"]["n_tokens_used"]
        lengths = np.array([len(s) for s in sequences])
        labels = train.obs["cell_type"].astype(str).to_numpy()
        self.classes_ = np.array(sorted(set(labels)), dtype=object)
        y = np.searchsorted(self.classes_, labels)
        self.majority_ = self.classes_[np.bincount(y).argmax()]
        is_valid = (train.obs["is_validation"].to_numpy(bool) if "is_validation" in train.obs
                    else np.zeros(train.n_obs, bool))
        fit_idx = np.flatnonzero((lengths > 0) & ~is_valid)
        valid_idx = np.flatnonzero((lengths > 0) & is_valid)
        if fit_idx.size == 0:
            raise NotApplicable("no training cell has a gene of the Geneformer token dictionary")
        self.extra["sequence_length"] = {"mean": float(lengths[lengths > 0].mean()), "max": int(lengths.max()),
                                         "truncated_cells": self.tokenizer.n_truncated,
                                         "cells_without_tokens": int((lengths == 0).sum())}

        from ....runtime import Runtime

        self.runtime_ = Runtime.resolve(self.param("device"), self.param("precision"))
        self.device = self.runtime_.device.type
        model = self._load_model(files, len(self.classes_)).to(self.runtime_.device)
        self.extra.update(precision=self.runtime_.precision, device_detail=self.runtime_.describe())
        self.model_ = self._train(model, sequences, y, fit_idx, valid_idx)
        return self

    def _train(self, model, sequences, y, fit_idx, valid_idx):
        """Geneformer's fine-tuning: AdamW + linear warm-up/decay, dynamic padding; best validation epoch kept."""
        import torch

        p, rt = self.param, self.runtime_
        for layer in model.bert.encoder.layer[: int(p("freeze_layers"))]:
            layer.requires_grad_(False)
        batch_size, epochs, warmup = int(p("batch_size")), int(p("epochs")), int(p("warmup_steps"))
        total_steps = math.ceil(fit_idx.size / batch_size) * epochs
        no_decay = ("bias", "LayerNorm.weight")  # as the Hugging Face Trainer: no weight decay on these
        named = [(n, w) for n, w in model.named_parameters() if w.requires_grad]
        optimiser = torch.optim.AdamW(
            [{"params": [w for n, w in named if not n.endswith(no_decay)], "weight_decay": float(p("weight_decay"))},
             {"params": [w for n, w in named if n.endswith(no_decay)], "weight_decay": 0.0}], lr=float(p("max_lr")))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, linear_schedule(warmup, total_steps))
        rng = np.random.default_rng(self.seed)
        lengths = np.array([len(sequences[i]) for i in fit_idx])
        clip = p("max_grad_norm")
        history, best_state, best_score, best_epoch = [], None, -1.0, None
        for epoch in range(1, epochs + 1):
            model.train()
            loss_sum = 0.0
            for batch in training_batches(lengths, batch_size, rng, bool(p("group_by_length"))):
                cells = fit_idx[batch]
                ids, mask = pad_batch([sequences[i] for i in cells], self.tokenizer.pad_token)
                with rt.autocast():
                    logits = model(input_ids=ids.to(rt.device), attention_mask=mask.to(rt.device)).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), torch.as_tensor(y[cells], device=rt.device))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
                optimiser.step()
                scheduler.step()
                loss_sum += loss.detach().item() * len(cells)
            entry = {"epoch": epoch, "train_loss": round(loss_sum / fit_idx.size, 5)}
            if valid_idx.size:
                pred = self._predict_ids(model, [sequences[i] for i in valid_idx])
                entry["valid_macro_f1"] = round(macro_f1(y[valid_idx], pred), 5)
                entry["valid_accuracy"] = round(float(np.mean(pred == y[valid_idx])), 5)
                if entry["valid_macro_f1"] > best_score:
                    best_score, best_epoch = entry["valid_macro_f1"], epoch
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            history.append(entry)
            print(f"geneformer: epoch {epoch}/{epochs}", *(f"{k} {v}" for k, v in entry.items() if k != "epoch"))
        if best_state is not None:
            model.load_state_dict(best_state)
        self.extra["training"] = {
            "epochs": epochs, "batch_size": batch_size, "max_lr": float(p("max_lr")), "schedule": "linear",
            "warmup_steps": warmup, "total_steps": total_steps, "weight_decay": float(p("weight_decay")),
            "freeze_layers": int(p("freeze_layers")), "max_grad_norm": clip, "n_fit_cells": int(fit_idx.size),
            "n_valid_cells": int(valid_idx.size), "best_epoch": best_epoch,
            "selection": "best validation macro-F1" if valid_idx.size else "last epoch (no validation cells)",
            "history": history}
        return model

    def _predict_ids(self, model, sequences) -> np.ndarray:
        """Class index per sequence; sequences are batched by length so that padding stays short."""
        import torch

        model.eval()
        rt, size = self.runtime_, int(self.param("eval_batch_size"))
        order = np.argsort([-len(s) for s in sequences], kind="stable")
        out = np.empty(len(sequences), dtype=np.int64)
        with torch.no_grad():
            for i in range(0, len(order), size):
                cells = order[i:i + size]
                ids, mask = pad_batch([sequences[j] for j in cells], self.tokenizer.pad_token)
                with rt.autocast():
                    logits = model(input_ids=ids.to(rt.device), attention_mask=mask.to(rt.device)).logits
                out[cells] = logits.float().argmax(-1).cpu().numpy()
        return out

    def predict(self, test):
        sequences = self._tokenize(test, "test data", check=False)
        has_tokens = np.array([len(s) > 0 for s in sequences], dtype=bool)
        # A cell without any dictionary gene cannot be encoded: it gets the majority training label (counted).
        labels = np.full(test.n_obs, self.majority_, dtype=object)
        if has_tokens.any():
            idx = np.flatnonzero(has_tokens)
            labels[idx] = self.classes_[self._predict_ids(self.model_, [sequences[i] for i in idx])]
        self.extra["n_test_cells_without_tokens"] = int((~has_tokens).sum())
        return labels


# ----------------------------------------------------------------------------------------- zero-shot embeddings
@functools.lru_cache(maxsize=1)
def _pretrained_encoder(model_dir: str, weights: str, device: str):
    """The pretrained BertModel of a model directory (cached: repeated calls, e.g. speed timings, load it once)."""
    import torch
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model, info = BertModel.from_pretrained(model_dir, add_pooling_layer=False, output_loading_info=True,
                                            dtype=torch.float32)
    missing = [k for k in info["missing_keys"] if k.startswith(("embeddings", "encoder"))]
    if missing or info["mismatched_keys"]:
        bad = missing or [str(k) for k in info["mismatched_keys"]]
        raise InputError(weights, f"the weights do not fit the BERT encoder of config.json: {len(bad)} encoder "
                                  f"tensors missing or of another shape (e.g. {bad[0]})")
    return model.to(device).eval()


def embed_cells(adata, model_dir, device: str = "auto", batch_size: int = 32, max_input_size: int = 2048,
                special_tokens="auto", token_dictionary=None, gene_median_dictionary=None, gene_ids=None,
                layer: int = -2) -> np.ndarray:
    """Zero-shot Geneformer cell embeddings (n_cells x hidden_size), float32.

    As Geneformer's embedding extractor does by default: the mean over a cell's gene tokens of the hidden states
    of ``layer`` (-2: the penultimate layer), padding and ``<cls>``/``<eos>`` excluded. A cell without any
    dictionary gene gets zeros.
    """
    import torch

    from ....runtime import resolve_device

    files = find_model_files(model_dir, token_dictionary, gene_median_dictionary)
    tokenizer, _ = make_tokenizer(files, max_input_size, special_tokens)
    ids, id_source = anndata_ensembl_ids(adata, gene_ids)
    sequences = tokenizer.tokenize(adata.X, tokenizer.map_genes(ids, id_source))
    dev = resolve_device(device)
    model = _pretrained_encoder(str(Path(model_dir).resolve()), str(files.weights), str(dev))
    special = [t for t in (tokenizer.pad_token, tokenizer.cls_token, tokenizer.eos_token) if t is not None]
    out = np.zeros((len(sequences), model.config.hidden_size), dtype=np.float32)
    cells = [i for i in np.argsort([-len(s) for s in sequences], kind="stable") if len(sequences[i])]
    with torch.no_grad():
        for start in range(0, len(cells), batch_size):
            batch = cells[start:start + batch_size]
            input_ids, mask = pad_batch([sequences[i] for i in batch], tokenizer.pad_token)
            input_ids, mask = input_ids.to(dev), mask.to(dev)
            hidden = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
            genes = (mask.bool() & ~torch.isin(input_ids, torch.as_tensor(special, device=dev))).unsqueeze(-1)
            mean = (hidden * genes).sum(1) / genes.sum(1).clamp(min=1)
            out[batch] = mean.float().cpu().numpy()
    return out
