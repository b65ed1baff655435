"""scGPT (Cui et al., Nature Methods 2024) in the benchmark, with the authors' package ``scgpt==0.2.4``.

Runs only in its own environment (``.venv-scgpt``, built by ``tools/scgpt_env.sh``): scGPT needs torchtext, hence
torch 2.3. Importing this module elsewhere raises ImportError, and the method registry makes its rows not
applicable, naming what is missing. The model's code the embedding method shares is in
:mod:`cellplm.bench.models.scgpt`: ``upstream`` (the authors' package), ``genes``, ``tokenizer`` (values and
tokens), ``model`` and ``embedder``; this module holds the annotator.

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

:func:`cellplm.bench.models.scgpt.embedder.embed_cells` is the zero-shot counterpart for the speed benchmark: the
L2-normalised ``<cls>`` embedding of every cell, as ``scgpt.tasks.embed_data`` computes it.
"""

from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ....keys import IS_VALIDATION, LABEL
from ...errors import NotApplicable
from ...models.scgpt.genes import counts_of, gene_symbols, match_vocabulary, require_coverage, select_hvg
from ...models.scgpt.model import (
    PAD_VALUE,
    autocast,
    build_model,
    device_detail,
    forward,
    load_weights,
    read_model_dir,
    resolve_device,
    set_threads,
    shape_of,
    vocab_from_genes,
    weights_provenance,
)
from ...models.scgpt.tokenizer import MASK_VALUE, bin_values, token_stats, tokenize
from ...models.scgpt.upstream import random_mask_value, scgpt, scgpt_model_module, torch
from ..base import Annotator


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
        shape, vocab, pad_value = self._weights_source(symbols)
        columns = self._select_genes(counts, symbols, symbol_source, vocab)
        labels = train.obs[LABEL].astype(str).to_numpy()
        self.classes_ = np.array(sorted(set(labels)), dtype=object)
        y = np.searchsorted(self.classes_, labels)
        train_idx, valid_idx, validation = self._validation_cells(train)

        binned = bin_values(counts[:, columns], p("n_bins"))
        bs, max_len, zero = int(p("batch_size")), int(p("max_seq_len")), bool(p("include_zero_gene"))
        train_batches = tokenize(binned[train_idx], self.gene_ids_, vocab, bs, max_len, zero, pad_value)
        valid_batches = tokenize(binned[valid_idx], self.gene_ids_, vocab, bs, max_len, zero, pad_value)
        y_train = [torch.from_numpy(y[train_idx[i : i + bs]]).long() for i in range(0, len(train_idx), bs)]
        y_valid = [torch.from_numpy(y[valid_idx[i : i + bs]]).long() for i in range(0, len(valid_idx), bs)]
        self.extra["tokens"] = {
            **token_stats(binned[train_idx], max_len),
            "include_zero_gene": zero,
            "n_bins": int(p("n_bins")),
        }

        model = self._model(shape, vocab, pad_value, device)
        best, history = self._train(
            model, (train_batches, y_train), (valid_batches, y_valid), vocab, device, amp, pad_value
        )
        self.model_, self.vocab_, self.amp_, self.device_ = model, vocab, amp, device
        self.pad_value_ = pad_value
        self.extra.update(
            {
                "best_epoch": best[1],
                "best_val_loss": best[0],
                "epochs_run": len(history),
                "history": history,
                "validation": validation,
                "amp": amp,
                "device_detail": device_detail(device),
                "threads": threads,
                "attention": "torch.nn.TransformerEncoder (flash-attn not installed)"
                if not scgpt_model_module.flash_attn_available
                else "torch.nn.TransformerEncoder",
                "scgpt_version": scgpt.__version__,
            }
        )
        return self

    def _weights_source(self, symbols):
        """(shape, vocabulary, pad value) of the pretrained model directory, or of random initialisation of
        ``shape`` over a vocabulary of the training genes; the provenance goes into the run record."""
        p = self.param
        model_dir = p("model_dir")
        self.extra = weights_provenance(model_dir, p("checkpoint_kind"), p("shape"))
        if model_dir:
            args, vocab = read_model_dir(model_dir)
            shape = {k: args[k] for k in ("embsize", "nheads", "d_hid", "nlayers")}
            shape["n_layers_cls"] = args.get("n_layers_cls", 3)
            pad_value = int(args.get("pad_value", PAD_VALUE))
        else:
            shape = shape_of(p("shape"))
            pad_value = PAD_VALUE
            named = np.array([bool(s) for s in symbols])
            vocab = vocab_from_genes(pd.unique(symbols[named]))
        self.extra["model"] = dict(shape)
        return shape, vocab, pad_value

    def _select_genes(self, counts, symbols, symbol_source, vocab) -> np.ndarray:
        """Columns used: genes in the vocabulary (by symbol), then the highly variable ones among those."""
        p = self.param
        in_vocab, coverage = match_vocabulary(symbols, counts, vocab)
        coverage["symbols_from"] = symbol_source
        self.extra["genes"] = coverage
        print(
            f"scGPT: {coverage['n_in_vocabulary']}/{coverage['n_genes']} genes ({coverage['gene_share']:.1%}, "
            f"{coverage['count_share']:.1%} of counts) in the vocabulary of {coverage['vocabulary_size']} tokens"
        )
        require_coverage(coverage, "training data", p("min_gene_share"), p("min_count_share"))
        columns = np.flatnonzero(in_vocab)
        hvg, hvg_info = select_hvg(counts[:, columns], p("n_hvg"))
        columns = columns[hvg]
        self.genes_ = [str(s) for s in symbols[columns]]
        self.gene_ids_ = np.array(vocab(self.genes_), dtype=int)
        self.extra["genes"].update(hvg_info)
        self.n_genes_used = len(self.genes_)
        return columns

    def _validation_cells(self, train):
        """(training cells in batch order, validation cells, how they were chosen)."""
        rng = np.random.default_rng(self.seed)
        if IS_VALIDATION in train.obs and train.obs[IS_VALIDATION].astype(bool).any():
            is_valid = train.obs[IS_VALIDATION].astype(bool).to_numpy()
            validation = f"obs['is_validation'] ({int(is_valid.sum())} cells)"
        else:  # the tutorial's train_test_split(test_size=0.1)
            fraction = self.param("validation_fraction")
            is_valid = np.zeros(train.n_obs, dtype=bool)
            is_valid[rng.choice(train.n_obs, max(1, round(fraction * train.n_obs)), replace=False)] = True
            validation = f"random {fraction:.0%} of the training cells (seed {self.seed})"
        if is_valid.all():
            raise NotApplicable("every training cell is a validation cell")
        # one shuffle, then fixed batches every epoch (the tutorial shuffles once in train_test_split, then
        # iterates its DataLoader with shuffle=False)
        return rng.permutation(np.flatnonzero(~is_valid)), np.flatnonzero(is_valid), validation

    def _model(self, shape, vocab, pad_value, device):
        """The annotation model, with the pretrained weights when a model directory is configured."""
        p = self.param
        model = build_model(shape, vocab, len(self.classes_), float(p("dropout")), int(p("n_bins")), pad_value)
        if p("model_dir"):
            self.extra["load"] = rep = load_weights(model, Path(p("model_dir")) / "best_model.pt")
            print(
                f"scGPT: loaded {rep['n_loaded']}/{rep['n_model_keys']} model tensors from {p('model_dir')} "
                f"({len(rep['new'])} new: {', '.join(rep['new'][:4])}{' ...' if len(rep['new']) > 4 else ''}; "
                f"{len(rep['unused'])} checkpoint tensors unused)"
            )
        if p("freeze"):  # the tutorial's freeze: the input embeddings, not the transformer
            for name, param in model.named_parameters():
                if "encoder" in name and "transformer_encoder" not in name:
                    param.requires_grad = False
        model.to(device)
        self.extra["n_parameters"] = int(sum(t.numel() for t in model.parameters()))
        return model

    def _train(self, model, train_set, valid_set, vocab, device, amp, pad_value):
        """The tutorial's loop: Adam, StepLR per epoch, fp16 autocast with a grad scaler on a GPU, gradients
        clipped at 1; the weights of the epoch with the lowest validation loss are kept. (best, history)."""
        p = self.param
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
            for batch, target in zip(*train_set):
                values = batch["values"]
                if mask_ratio > 0:  # the tutorial masks input values anew every epoch (0 by default)
                    values = random_mask_value(
                        values, mask_ratio=mask_ratio, mask_value=MASK_VALUE, pad_value=pad_value
                    )
                target = target.to(device)
                out = forward(model, batch, vocab, device, amp, values)
                with autocast(device, amp):
                    loss = criterion(out["cls_output"], target)
                model.zero_grad()
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=not scaler.is_enabled())
                scaler.step(optimizer)
                scaler.update()
                total, n = total + loss.item() * len(target), n + len(target)
            val_loss, val_err = self._evaluate(model, *valid_set, vocab, device, amp, criterion)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": total / max(n, 1),
                    "val_loss": val_loss,
                    "val_err": val_err,
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - t0,
                }
            )
            if p("progress"):
                print(
                    f"scGPT epoch {epoch}: train loss {total / max(n, 1):.4f}, valid loss {val_loss:.4f}, "
                    f"valid error {val_err:.3f} ({history[-1]['seconds']:.1f}s)",
                    flush=True,
                )
            if val_loss < best[0]:
                best = (val_loss, epoch, copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}))
            scheduler.step()
        if best[2] is None:  # validation loss never finite (e.g. fp16 overflow): keep the last epoch, say so
            best = (float("nan"), len(history), None)
        else:
            model.load_state_dict(best[2])
        return best, history

    @staticmethod
    def _evaluate(model, batches, targets, vocab, device, amp, criterion):
        model.eval()
        total, errors, n = 0.0, 0, 0
        with torch.no_grad():
            for batch, target in zip(batches, targets):
                target = target.to(device)
                logits = forward(model, batch, vocab, device, amp)["cls_output"]
                with autocast(device, amp):
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
        batches = tokenize(
            bin_values(X, p("n_bins")),
            self.gene_ids_,
            self.vocab_,
            int(p("batch_size")),
            int(p("max_seq_len")),
            bool(p("include_zero_gene")),
            self.pad_value_,
        )
        self.model_.eval()
        out = []
        with torch.no_grad():
            for batch in batches:
                logits = forward(self.model_, batch, self.vocab_, self.device_, self.amp_)["cls_output"]
                out.append(logits.argmax(1).cpu().numpy())
        pred = np.concatenate(out) if out else np.zeros(0, dtype=int)
        return self.classes_[pred]
