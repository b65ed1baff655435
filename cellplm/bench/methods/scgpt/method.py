"""scGPT (Cui et al., Nature Methods 2024) in the benchmark, with the authors' package ``scgpt==0.2.4``.

Runs only in its own environment (``.venv-scgpt``, built by ``tools/scgpt_env.sh``): scGPT needs torchtext, hence
torch 2.3. Importing this module elsewhere raises ImportError, so the method registry simply leaves it out.

:class:`ScGPTAnnotator` fine-tunes scGPT for cell-type annotation with the defaults of scGPT's annotation tutorial
(``tutorials/Tutorial_Annotation.ipynb``): 10 epochs, Adam lr 1e-4, batch 32, StepLR gamma 0.9 per epoch, 51 value
bins, no masking (mask_ratio 0), dropout 0.2, only the expressed genes as tokens (include_zero_gene False), at most
3,001 tokens with ``<cls>``, the cell-type classifier on the ``<cls>`` embedding (CLS on; MVC, ECS, DAB, batch
labels and domain-specific batch norm off), nothing frozen, fp16 autocast on a GPU (amp), and the model with the
lowest validation loss kept. It uses scgpt's own classes: ``TransformerModel``, ``GeneVocab``,
``tokenize_and_pad_batch``, ``random_mask_value``, ``Preprocessor`` (normalise to 1e4, log1p, per-cell binning) and
``load_pretrained``. Where this module differs from the notebook it says so in the run record:

- validation cells are the split's ``obs['is_validation']`` (the notebook draws a random 10% of its reference;
  that is the fallback when the split has none);
- the genes: the notebook's reference data came with 3,000 highly variable genes already selected; on raw data
  we select ``n_hvg`` (3,000) genes with scanpy's seurat_v3 on the training counts, among the genes in the
  vocabulary (``n_hvg: null`` keeps all of them);
- each batch is padded to its longest cell rather than the whole set's longest: padding is masked, so the
  outputs are the same;
- the notebook's fallback loader skips the attention weights of the flash-attention checkpoints (key ``Wqkv``)
  when flash-attn is missing; here they are renamed as ``scgpt.utils.load_pretrained`` does, and loading is
  refused when any transformer weight stays at random initialisation.

Weights: ``model_dir`` (a directory in the layout of scGPT's released "whole-human" checkpoint: ``args.json``,
``vocab.json``, ``best_model.pt``) or, without it, random initialisation of a named ``shape`` (:data:`SHAPES`) over a
vocabulary of the training genes. Genes are matched by symbol (Ensembl ids are mapped to symbols offline); too low
coverage of the vocabulary makes the method not applicable.

:func:`embed_cells` is the zero-shot counterpart for the speed benchmark: the L2-normalised ``<cls>`` embedding of
every cell, as ``scgpt.tasks.embed_data`` computes it.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import re
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

with warnings.catch_warnings():  # torchtext's deprecation notice and scgpt's "flash_attn is not installed"
    warnings.simplefilter("ignore")
    import torch
    import torchtext

    torchtext.disable_torchtext_deprecation_warning()
    import scgpt
    from scgpt.model import TransformerModel
    from scgpt.model import model as scgpt_model_module
    from scgpt.preprocess import Preprocessor
    from scgpt.tokenizer import random_mask_value, tokenize_and_pad_batch
    from scgpt.tokenizer.gene_tokenizer import GeneVocab
    from scgpt.utils import load_pretrained

from .... import genes as genes_
from .... import runtime
from ....hvg import highly_variable_genes
from ....genes import ensembl_fraction, ensembl_to_symbols
from ...errors import InputError, NotApplicable
from ..base import Annotator


PAD_TOKEN = "<pad>"
SPECIAL_TOKENS = [PAD_TOKEN, "<cls>", "<eoc>"]  # the tutorial's special tokens, in its order
PAD_VALUE = -2  # tutorial: pad_value = -2, mask_value = -1 (args.json of the released model says the same)
MASK_VALUE = -1
MODEL_FILES = ("args.json", "vocab.json", "best_model.pt")

# Shapes for random initialisation (args.json key names). "small" is the notebook's own from-scratch model
# (layer_size 128, nlayers 4, nhead 4); "whole_human" is the released whole-human checkpoint's shape.
SHAPES = {
    "tiny": {"embsize": 32, "nheads": 2, "d_hid": 32, "nlayers": 2, "n_layers_cls": 3},
    "small": {"embsize": 128, "nheads": 4, "d_hid": 128, "nlayers": 4, "n_layers_cls": 3},
    "whole_human": {"embsize": 512, "nheads": 8, "d_hid": 512, "nlayers": 12, "n_layers_cls": 3},
}

SYMBOL_COLUMNS = ("feature_name", "gene_symbols", "gene_symbol", "gene_name", "symbol", "gene_names")
PREPROCESS_CHUNK = 2_000  # cells normalised and binned at a time (every step is per cell, so chunks are exact)


# ---- genes ----------------------------------------------------------------------------------------------------

def gene_symbols(adata) -> tuple[np.ndarray, str]:
    """Gene symbols of ``adata``'s columns, and where they came from.

    ``var_names`` when they are symbols; for Ensembl ids a symbol column of ``var`` (CELLxGENE's
    ``feature_name`` and the like) or, failing that, the GENCODE v44 table that CellTypist ships (offline).
    Unmapped ids give an empty string.
    """
    names = np.asarray(adata.var_names, dtype=object).astype(str)
    if ensembl_fraction(names) <= 0.5:
        return names, "var_names (symbols)"
    for col in SYMBOL_COLUMNS:
        if col in adata.var.columns and ensembl_fraction(adata.var[col].astype(str)) < 0.5:
            return adata.var[col].astype(str).to_numpy(dtype=object), f"var['{col}']"
    return ensembl_to_symbols(names), "Ensembl ids mapped to symbols with GENCODE v44 (CellTypist's table)"


def counts_of(adata, source: str) -> sp.csr_matrix:
    """Raw counts (``layers['counts']`` if present, else X) as CSR float32; refuses negative values."""
    X = adata.layers["counts"] if "counts" in adata.layers else adata.X
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.nnz and X.data.min() < 0:
        raise InputError(source, "negative values where raw counts are required (is X scaled?)")
    return X


def match_vocabulary(symbols: np.ndarray, counts: sp.csr_matrix, vocab) -> tuple[np.ndarray, dict]:
    """Columns whose symbol is in ``vocab`` (the first of duplicated symbols) and the coverage they give."""
    seen: set[str] = set()
    keep = np.zeros(len(symbols), dtype=bool)
    for j, s in enumerate(symbols):
        if s and s not in seen and s not in SPECIAL_TOKENS and s in vocab:
            keep[j] = True
            seen.add(s)
    totals = np.asarray(counts.sum(axis=0)).ravel()
    coverage = {
        "n_genes": int(len(symbols)),
        "n_in_vocabulary": int(keep.sum()),
        "gene_share": float(keep.mean()) if len(symbols) else 0.0,
        "count_share": genes_.count_share(totals, keep),
        "vocabulary_size": int(len(vocab)),
    }
    return keep, coverage


def require_coverage(coverage: dict, source: str, min_gene_share: float, min_count_share: float) -> None:
    """Raise :class:`NotApplicable` when too little of the data lands in the scGPT vocabulary (``coverage``: see
    :func:`match_vocabulary`)."""
    genes_.require_coverage(
        source, n_matched=coverage["n_in_vocabulary"], gene_share=coverage["gene_share"],
        count_share=coverage["count_share"], min_gene_share=min_gene_share, min_count_share=min_count_share,
        none_matched=(f"none of its {coverage['n_genes']} genes is in the scGPT vocabulary "
                      f"({coverage['vocabulary_size']} tokens; genes are matched by symbol)"),
        describe=(f"{coverage['n_in_vocabulary']}/{coverage['n_genes']} genes ({coverage['gene_share']:.1%}) "
                  f"and {coverage['count_share']:.1%} of counts in the scGPT vocabulary"))


def select_hvg(counts: sp.csr_matrix, n_hvg: int | None) -> tuple[np.ndarray, dict]:
    """The ``n_hvg`` most variable genes by scanpy's seurat_v3 on raw counts (the scGPT Preprocessor's HVG step)."""
    n = counts.shape[1]
    if n_hvg is None or n_hvg >= n:
        return np.ones(n, dtype=bool), {"hvg": "none (all genes in the vocabulary)", "n_selected": n}
    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(counts)
    flavor = "seurat_v3 (scanpy) on the training counts"
    with _quiet_scgpt():
        try:
            mask = highly_variable_genes(tmp, n_hvg, flavor="seurat_v3")
        except ValueError as e:  # skmisc's loess fails on very few genes ("near singularities")
            sc.pp.normalize_total(tmp, target_sum=1e4)
            sc.pp.log1p(tmp)
            mask = highly_variable_genes(tmp, n_hvg, flavor="seurat")
            flavor = f"seurat (scanpy) on log1p(CP10k) training counts, because seurat_v3 failed: {str(e)[:80]}"
    return mask, {"hvg": f"{flavor}; {int(n_hvg)} of {n} genes in the vocabulary", "n_selected": int(mask.sum())}


# ---- values: scgpt's Preprocessor, one chunk of cells at a time ----------------------------------------------

@contextmanager
def _quiet_scgpt():
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

    preprocessor = Preprocessor(use_key="X", filter_gene_by_counts=False, filter_cell_by_counts=False,
                                normalize_total=1e4, result_normed_key="X_normed", log1p=True,
                                result_log1p_key="X_log1p", subset_hvg=False, binning=int(n_bins),
                                result_binned_key="X_binned")
    chunks = []
    with _quiet_scgpt(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(0, counts.shape[0], PREPROCESS_CHUNK):
            part = ad.AnnData(counts[start:start + PREPROCESS_CHUNK].copy())
            preprocessor(part, batch_key=None)
            chunks.append(sp.csr_matrix(part.layers["X_binned"].astype(np.float32)))
    if not chunks:
        return sp.csr_matrix((0, counts.shape[1]), dtype=np.float32)
    return sp.vstack(chunks, format="csr")


def tokenize(binned: sp.csr_matrix, gene_ids: np.ndarray, vocab, batch_size: int, max_seq_len: int,
             include_zero_gene: bool, pad_value: int = PAD_VALUE) -> list[dict]:
    """``tokenize_and_pad_batch`` per batch of cells: ``<cls>`` first, then the (expressed) genes, padded."""
    batches = []
    for start in range(0, binned.shape[0], batch_size):
        rows = binned[start:start + batch_size].toarray()
        t = tokenize_and_pad_batch(rows, gene_ids, max_len=max_seq_len, vocab=vocab, pad_token=PAD_TOKEN,
                                   pad_value=pad_value, append_cls=True, include_zero_gene=include_zero_gene)
        batches.append({"genes": t["genes"].to(torch.int32), "values": t["values"]})
    return batches


# ---- model ----------------------------------------------------------------------------------------------------

def read_model_dir(model_dir) -> tuple[dict, GeneVocab]:
    """``args.json`` and ``vocab.json`` of a model directory in the whole-human layout (special tokens added)."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise InputError(folder, "scGPT model directory not found")
    for name in MODEL_FILES:
        if not (folder / name).is_file():
            raise InputError(folder / name, "missing; a scGPT model directory holds args.json, vocab.json and "
                                            "best_model.pt (the layout of the released whole-human checkpoint)")
    try:
        args = json.loads((folder / "args.json").read_text())
    except ValueError as e:
        raise InputError(folder / "args.json", f"not valid JSON ({e})") from None
    missing = [k for k in ("embsize", "nheads", "d_hid", "nlayers") if k not in args]
    if missing:
        raise InputError(folder / "args.json", f"lacks the model shape keys {', '.join(missing)}")
    try:
        vocab = GeneVocab.from_file(folder / "vocab.json")
    except Exception as e:  # noqa: BLE001 - torchtext raises RuntimeError, json ValueError
        raise InputError(folder / "vocab.json", f"not a scGPT gene vocabulary ({type(e).__name__}: {e})") from None
    for token in SPECIAL_TOKENS:  # as the tutorial does
        if token not in vocab:
            vocab.append_token(token)
    vocab.set_default_index(vocab[PAD_TOKEN])
    return args, vocab


def vocab_from_genes(genes) -> GeneVocab:
    """Random initialisation: a vocabulary of the training genes plus the special tokens (the tutorial's)."""
    vocab = GeneVocab(list(genes) + SPECIAL_TOKENS, specials=SPECIAL_TOKENS, special_first=False)
    vocab.set_default_index(vocab[PAD_TOKEN])
    return vocab


def build_model(shape: dict, vocab, n_cls: int, dropout: float, n_bins: int, pad_value: int = PAD_VALUE):
    """The tutorial's ``TransformerModel`` for annotation: CLS objective, continuous value encoding, no MVC/DAB."""
    return TransformerModel(
        len(vocab), shape["embsize"], shape["nheads"], shape["d_hid"], shape["nlayers"],
        nlayers_cls=shape.get("n_layers_cls", 3), n_cls=n_cls, vocab=vocab, dropout=dropout, pad_token=PAD_TOKEN,
        pad_value=pad_value, do_mvc=False, do_dab=False, use_batch_labels=False, domain_spec_batchnorm=False,
        input_emb_style="continuous", n_input_bins=n_bins, cell_emb_style="cls",
        mvc_decoder_style="inner product", ecs_threshold=0.0, explicit_zero_prob=False,
        use_fast_transformer=False,  # flash-attn is not in the environment: PyTorch's TransformerEncoder
        pre_norm=False,
    )


def load_weights(model, weights_path) -> dict:
    """Load ``best_model.pt`` into ``model`` where names and shapes match; report every key.

    Flash-attention checkpoints (the released ones) name the fused attention projection ``Wqkv``; our model uses
    PyTorch attention (``in_proj_``), so keys are renamed as ``scgpt.utils.load_pretrained`` does. Loading is refused
    when any weight of the gene encoder, value encoder or transformer would stay at random initialisation.
    """
    try:  # data only: a pickle that names any other Python object (which unpickling would call) is refused
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        name = re.search(r"(?:GLOBAL|Unsupported class) ([\w.]+)", str(e))  # as torch's weights-only unpickler says
        what = f"the Python object {name.group(1)}" if name else "Python objects beyond tensors"
        raise InputError(weights_path, f"refused: its pickle calls {what}, and unpickling it could run code "
                                       "(a scGPT best_model.pt is a plain state dict of tensors)") from None
    except Exception as e:  # noqa: BLE001
        raise InputError(weights_path, f"cannot be read as a PyTorch state dict ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "model_state_dict" in state:
        state = state["model_state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(weights_path, "not a state dict of tensors")
    renamed = {k.replace("Wqkv.", "in_proj_"): v for k, v in state.items()}
    own = model.state_dict()
    loaded = [k for k, v in renamed.items() if k in own and tuple(v.shape) == tuple(own[k].shape)]
    mismatched = [k for k, v in renamed.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    unused = [k for k in renamed if k not in own]
    new = [k for k in own if k not in loaded]
    backbone_new = [k for k in new if k.startswith(("encoder.", "value_encoder.", "transformer_encoder."))]
    if not loaded:
        raise InputError(weights_path, f"no parameter matches the model built from args.json ({len(state)} keys, "
                                       f"e.g. {next(iter(state), '-')})")
    if backbone_new:
        why = "shape differs" if any(k in mismatched for k in backbone_new) else "absent from the checkpoint"
        raise InputError(weights_path, f"{len(backbone_new)} encoder/transformer weights would stay random ({why}), "
                                       f"e.g. {backbone_new[0]}; args.json and best_model.pt disagree")
    load_pretrained(model, state, strict=False, verbose=False)  # the authors' loader (renames Wqkv the same way)
    after = model.state_dict()
    not_applied = [k for k in loaded if not torch.equal(after[k].cpu(), renamed[k].to(after[k].dtype))]
    if not_applied:
        raise RuntimeError(f"{weights_path}: {len(not_applied)} matching weights were not applied, e.g. {not_applied[0]}")
    return {"n_checkpoint_keys": len(state), "n_model_keys": len(own), "n_loaded": len(loaded),
            "n_renamed_Wqkv": sum("Wqkv." in k for k in state), "new": new, "unused": unused,
            "mismatched": mismatched, "all_backbone_loaded": True}


def resolve_device(device: str = "auto") -> torch.device:
    """:func:`cellplm.runtime.resolve_device`; a CUDA device that is not visible makes scGPT not applicable."""
    return runtime.resolve_device(device, unavailable=NotApplicable)


def set_threads() -> int:
    """torch threads from OMP_NUM_THREADS (the workflow sets it to the job's threads)."""
    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit() and int(n) > 0:
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


def device_detail(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def _shape(name: str) -> dict:
    if name not in SHAPES:
        raise ValueError(f"unknown scGPT shape {name!r}; choose one of {', '.join(SHAPES)}")
    return dict(SHAPES[name])


def describe_shape(name: str, shape: dict) -> str:
    return f"shape {name}: {shape['nlayers']} layers, d_model {shape['embsize']}, {shape['nheads']} heads"


def _autocast(device: torch.device, amp: bool):
    return torch.cuda.amp.autocast(enabled=bool(amp and device.type == "cuda"))


def _forward(model, batch: dict, vocab, device, amp: bool, values=None):
    genes = batch["genes"].to(device).long()
    values = (batch["values"] if values is None else values).to(device)
    padding = genes.eq(vocab[PAD_TOKEN])
    with _autocast(device, amp):
        return model(genes, values, src_key_padding_mask=padding, batch_labels=None, CLS=True, CCE=False,
                     MVC=False, ECS=False, do_sample=False)


# ---- the method -----------------------------------------------------------------------------------------------

class ScGPTAnnotator(Annotator):
    packages = ("scgpt", "torch", "torchtext")
    transductive = False  # the tutorial fits on the reference only

    def fit(self, train, solution=None, unlabelled=None):
        self.check_params()
        p = self.param
        threads = set_threads()
        device = resolve_device(p("device"))
        amp = bool(p("amp")) and device.type == "cuda"
        self.device = device.type
        counts = counts_of(train, "training data")
        symbols, symbol_source = gene_symbols(train)
        model_dir = p("model_dir")
        if model_dir:
            args, vocab = read_model_dir(model_dir)
            shape = {k: args[k] for k in ("embsize", "nheads", "d_hid", "nlayers")}
            shape["n_layers_cls"] = args.get("n_layers_cls", 3)
            self.extra = {"checkpoint": str(Path(model_dir)), "checkpoint_kind": p("checkpoint_kind"),
                          "shape": "from args.json", "weights": f"pretrained: {model_dir}"}
            pad_value = int(args.get("pad_value", PAD_VALUE))
        else:
            shape = _shape(p("shape"))
            described = describe_shape(p("shape"), shape)
            self.extra = {"checkpoint": f"random initialisation ({described})",
                          "checkpoint_kind": "random initialisation", "shape": p("shape"),
                          "weights": f"random initialisation ({described})"}
            pad_value = PAD_VALUE
            vocab = None
        self.extra["model"] = dict(shape)

        # genes: in the vocabulary (by symbol), then highly variable among those
        if vocab is None:
            named = np.array([bool(s) for s in symbols])
            vocab = vocab_from_genes(pd.unique(symbols[named]))
        in_vocab, coverage = match_vocabulary(symbols, counts, vocab)
        coverage["symbols_from"] = symbol_source
        self.extra["genes"] = coverage
        print(f"scGPT: {coverage['n_in_vocabulary']}/{coverage['n_genes']} genes ({coverage['gene_share']:.1%}, "
              f"{coverage['count_share']:.1%} of counts) in the vocabulary of {coverage['vocabulary_size']} tokens")
        require_coverage(coverage, "training data", p("min_gene_share"), p("min_count_share"))
        columns = np.flatnonzero(in_vocab)
        hvg, hvg_info = select_hvg(counts[:, columns], p("n_hvg"))
        columns = columns[hvg]
        self.genes_ = [str(s) for s in symbols[columns]]
        self.gene_ids_ = np.array(vocab(self.genes_), dtype=int)
        self.extra["genes"].update(hvg_info)
        self.n_genes_used = len(self.genes_)

        # labels and validation cells
        labels = train.obs["cell_type"].astype(str).to_numpy()
        self.classes_ = np.array(sorted(set(labels)), dtype=object)
        y = np.searchsorted(self.classes_, labels)
        rng = np.random.default_rng(self.seed)
        if "is_validation" in train.obs and train.obs["is_validation"].astype(bool).any():
            is_valid = train.obs["is_validation"].astype(bool).to_numpy()
            validation = f"obs['is_validation'] ({int(is_valid.sum())} cells)"
        else:  # the tutorial's train_test_split(test_size=0.1)
            is_valid = np.zeros(train.n_obs, dtype=bool)
            is_valid[rng.choice(train.n_obs, max(1, round(p("validation_fraction") * train.n_obs)), replace=False)] = True
            validation = f"random {p('validation_fraction'):.0%} of the training cells (seed {self.seed})"
        if is_valid.all():
            raise NotApplicable("every training cell is a validation cell")
        # one shuffle, then fixed batches every epoch (the tutorial shuffles once in train_test_split, then
        # iterates its DataLoader with shuffle=False)
        train_idx = rng.permutation(np.flatnonzero(~is_valid))
        valid_idx = np.flatnonzero(is_valid)

        binned = bin_values(counts[:, columns], p("n_bins"))
        bs, max_len, zero = int(p("batch_size")), int(p("max_seq_len")), bool(p("include_zero_gene"))
        train_batches = tokenize(binned[train_idx], self.gene_ids_, vocab, bs, max_len, zero, pad_value)
        valid_batches = tokenize(binned[valid_idx], self.gene_ids_, vocab, bs, max_len, zero, pad_value)
        y_train = [torch.from_numpy(y[train_idx[i:i + bs]]).long() for i in range(0, len(train_idx), bs)]
        y_valid = [torch.from_numpy(y[valid_idx[i:i + bs]]).long() for i in range(0, len(valid_idx), bs)]
        lengths = np.diff(binned[train_idx].indptr) + 1
        self.extra["tokens"] = {"max_seq_len": max_len, "mean_per_cell": float(np.minimum(lengths, max_len).mean()),
                                "share_of_cells_truncated": float((lengths > max_len).mean()),
                                "include_zero_gene": zero, "n_bins": int(p("n_bins"))}

        model = build_model(shape, vocab, len(self.classes_), float(p("dropout")), int(p("n_bins")), pad_value)
        if model_dir:
            self.extra["load"] = load_weights(model, Path(model_dir) / "best_model.pt")
            rep = self.extra["load"]
            print(f"scGPT: loaded {rep['n_loaded']}/{rep['n_model_keys']} model tensors from {model_dir} "
                  f"({len(rep['new'])} new: {', '.join(rep['new'][:4])}{' ...' if len(rep['new']) > 4 else ''}; "
                  f"{len(rep['unused'])} checkpoint tensors unused)")
        if p("freeze"):  # the tutorial's freeze: the input embeddings, not the transformer
            for name, param in model.named_parameters():
                if "encoder" in name and "transformer_encoder" not in name:
                    param.requires_grad = False
        model.to(device)
        self.extra["n_parameters"] = int(sum(t.numel() for t in model.parameters()))

        optimizer = torch.optim.Adam(model.parameters(), lr=float(p("lr")), eps=1e-4 if amp else 1e-8)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=float(p("schedule_ratio")))
        scaler = torch.cuda.amp.GradScaler(enabled=amp)
        criterion = torch.nn.CrossEntropyLoss()
        mask_ratio = float(p("mask_ratio"))
        best = (float("inf"), 0, None)
        history = []
        for epoch in range(1, int(p("epochs")) + 1):
            t0 = time.perf_counter()
            model.train()
            total, n = 0.0, 0
            for batch, target in zip(train_batches, y_train):
                values = batch["values"]
                if mask_ratio > 0:  # the tutorial masks input values anew every epoch (0 by default)
                    values = random_mask_value(values, mask_ratio=mask_ratio, mask_value=MASK_VALUE,
                                               pad_value=pad_value)
                target = target.to(device)
                out = _forward(model, batch, vocab, device, amp, values)
                with _autocast(device, amp):
                    loss = criterion(out["cls_output"], target)
                model.zero_grad()
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0,
                                                   error_if_nonfinite=not scaler.is_enabled())
                scaler.step(optimizer)
                scaler.update()
                total, n = total + loss.item() * len(target), n + len(target)
            val_loss, val_err = self._evaluate(model, valid_batches, y_valid, vocab, device, amp, criterion)
            history.append({"epoch": epoch, "train_loss": total / max(n, 1), "val_loss": val_loss, "val_err": val_err,
                            "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
            if p("progress"):
                print(f"scGPT epoch {epoch}: train loss {total / max(n, 1):.4f}, valid loss {val_loss:.4f}, "
                      f"valid error {val_err:.3f} ({history[-1]['seconds']:.1f}s)", flush=True)
            if val_loss < best[0]:
                best = (val_loss, epoch, copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}))
            scheduler.step()
        if best[2] is None:  # validation loss never finite (e.g. fp16 overflow): keep the last epoch, say so
            best = (float("nan"), len(history), None)
        else:
            model.load_state_dict(best[2])
        self.model_, self.vocab_, self.amp_, self.device_ = model, vocab, amp, device
        self.pad_value_ = pad_value
        self.extra.update({"best_epoch": best[1], "best_val_loss": best[0], "epochs_run": len(history),
                           "history": history, "validation": validation, "amp": amp,
                           "device_detail": device_detail(device), "threads": threads,
                           "attention": "torch.nn.TransformerEncoder (flash-attn not installed)"
                           if not scgpt_model_module.flash_attn_available else "torch.nn.TransformerEncoder",
                           "scgpt_version": scgpt.__version__})
        return self

    @staticmethod
    def _evaluate(model, batches, targets, vocab, device, amp, criterion):
        model.eval()
        total, errors, n = 0.0, 0, 0
        with torch.no_grad():
            for batch, target in zip(batches, targets):
                target = target.to(device)
                logits = _forward(model, batch, vocab, device, amp)["cls_output"]
                with _autocast(device, amp):
                    total += criterion(logits, target).item() * len(target)
                errors += int((logits.argmax(1) != target).sum().item())
                n += len(target)
        return (total / n, errors / n) if n else (float("nan"), float("nan"))

    def predict(self, test):
        p = self.param
        counts = counts_of(test, "test data")
        symbols, _ = gene_symbols(test)
        position = {}
        for j, s in enumerate(symbols):
            position.setdefault(s, j)
        present = np.array([g in position for g in self.genes_])
        self.extra["test_genes"] = {"n_used_genes_present": int(present.sum()), "share": float(present.mean())}
        if not present.any():
            raise NotApplicable("test data: none of the genes the model was fitted on is present")
        # test counts in the training gene order; absent genes are zeros (never tokens: include_zero_gene False)
        cols = np.array([position.get(g, 0) for g in self.genes_])
        X = sp.csr_matrix(counts[:, cols] @ sp.diags(present.astype(np.float32)))
        X.eliminate_zeros()
        batches = tokenize(bin_values(X, p("n_bins")), self.gene_ids_, self.vocab_, int(p("batch_size")),
                           int(p("max_seq_len")), bool(p("include_zero_gene")), self.pad_value_)
        self.model_.eval()
        out = []
        with torch.no_grad():
            for batch in batches:
                logits = _forward(self.model_, batch, self.vocab_, self.device_, self.amp_)["cls_output"]
                out.append(logits.argmax(1).cpu().numpy())
        pred = np.concatenate(out) if out else np.zeros(0, dtype=int)
        return self.classes_[pred]


# ---- zero-shot embedding (speed benchmark) --------------------------------------------------------------------

_EMBEDDER: dict = {}  # the last model built by embed_cells, reused while its key is the same


def _embedder(model_dir, shape_name: str, genes: tuple, device: torch.device, seed: int, n_bins: int):
    key = (str(model_dir) if model_dir else None, shape_name, hash(genes), str(device), seed, n_bins)
    if _EMBEDDER.get("key") != key:
        _EMBEDDER.clear()
        if model_dir:
            args, vocab = read_model_dir(model_dir)
            shape = {k: args[k] for k in ("embsize", "nheads", "d_hid", "nlayers")}
            model = build_model(shape, vocab, 1, 0.0, n_bins, int(args.get("pad_value", PAD_VALUE)))
            load_weights(model, Path(model_dir) / "best_model.pt")
            pad_value = int(args.get("pad_value", PAD_VALUE))
        else:
            vocab = vocab_from_genes([g for g in pd.unique(np.asarray(genes, dtype=object)) if g])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = build_model(_shape(shape_name), vocab, 1, 0.0, n_bins)
            pad_value = PAD_VALUE
        _EMBEDDER.update(key=key, model=model.to(device).eval(), vocab=vocab, pad_value=pad_value)
    return _EMBEDDER["model"], _EMBEDDER["vocab"], _EMBEDDER["pad_value"]


def embed_cells(adata, model_dir=None, shape: str = "whole_human", batch_size: int = 64, device="auto",
                amp: bool = True, max_seq_len: int = 1200, n_bins: int = 51, seed: int = 0,
                min_gene_share: float = 0.3, min_count_share: float = 0.5) -> np.ndarray:
    """Zero-shot scGPT cell embeddings, ``(n_cells, d_model)`` float32, L2-normalised as ``embed_data`` returns them.

    The ``<cls>`` output of the transformer for each cell's expressed genes (at most ``max_seq_len`` tokens
    including ``<cls>``; longer cells keep a seeded random subset of genes, as scGPT samples them), values binned
    as in fine-tuning. ``model_dir``: a whole-human-layout directory; without it, random weights of ``shape``
    (seeded) over a vocabulary of ``adata``'s genes. fp16 autocast on a GPU when ``amp``. Deterministic: the model
    runs in eval mode and the binning tie-breaks and gene sampling use ``seed``. The model is built once and reused
    by later calls with the same arguments, so repeated calls time the embedding, not the loading.
    """
    dev = resolve_device(device)
    counts = counts_of(adata, "embedding input")
    symbols, _ = gene_symbols(adata)
    model, vocab, pad_value = _embedder(model_dir, shape, tuple(symbols), dev, seed, n_bins)
    keep, coverage = match_vocabulary(symbols, counts, vocab)
    if model_dir:
        require_coverage(coverage, "embedding input", min_gene_share, min_count_share)
    elif not keep.any():
        raise NotApplicable("embedding input: no named genes")
    gene_ids = np.array(vocab([str(s) for s in symbols[keep]]), dtype=int)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        binned = bin_values(counts[:, np.flatnonzero(keep)], n_bins)
        batches = tokenize(binned, gene_ids, vocab, batch_size, max_seq_len, False, pad_value)
    finally:
        np.random.set_state(state)
    out = []
    with torch.no_grad():
        for batch in batches:
            genes = batch["genes"].to(dev).long()
            with _autocast(dev, amp):
                h = model._encode(genes, batch["values"].to(dev), src_key_padding_mask=genes.eq(vocab[PAD_TOKEN]))
            out.append(h[:, 0, :].float().cpu().numpy())
    emb = np.concatenate(out) if out else np.zeros((0, model.d_model), dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return (emb / np.where(norms > 0, norms, 1)).astype(np.float32)
