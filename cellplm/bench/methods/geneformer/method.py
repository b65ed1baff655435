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
warm-up steps, 10 epochs, gradients clipped at norm 1 (the Hugging Face Trainer default). As the example, cell
types with at most 0.5% of the training cells are dropped before fine-tuning (``rare_type_fraction``; the run
record lists them), and the epoch of lowest validation loss is kept (``best_model: eval_loss``, the Trainer's
``load_best_model_at_end`` without a metric; ``macro_f1`` keeps the epoch of highest macro-F1 instead). The loop is
plain torch with dynamic padding and attention masks; validation cells (``obs['is_validation']``) are held out.

The tokeniser is written here from the paper's description and the documented behaviour of Geneformer's
``TranscriptomeTokenizer`` (totals over all genes of the cell, duplicate Ensembl ids summed, ties kept in input
order); ``transformers`` is imported only when a model directory is configured.
:func:`cellplm.bench.models.geneformer.embedder.embed_cells` gives
zero-shot cell embeddings as Geneformer's EmbExtractor computes them by default (the 2nd-to-last layer's <cls> state,
or the mean of its gene states without <cls>), used by the zero-shot track and the speed comparison.

The model's code the embedding method shares is in :mod:`cellplm.bench.models.geneformer`: ``files`` (model directory
and dictionaries), ``tokenizer`` and ``embedder``; this module holds the fine-tuning and the annotator.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np

from ....keys import IS_VALIDATION, LABEL
from ....metrics import macro_f1
from ...errors import InputError, NotApplicable
from ...models.geneformer.files import GeneformerFiles, find_model_files
from ...models.geneformer.tokenizer import RankValueTokenizer, anndata_ensembl_ids, make_tokenizer, pad_batch
from ..base import Annotator


def training_batches(lengths, batch_size: int, generator: np.random.Generator, group_by_length: bool):
    """Shuffled mini-batches; with ``group_by_length`` each run of 50 batches is sorted by length (as the Hugging
    Face Trainer's length-grouped sampler does), so that padding stays short."""
    order = generator.permutation(len(lengths))
    if group_by_length:
        mega = 50 * batch_size
        order = (
            np.concatenate([sorted(order[i : i + mega], key=lambda j: -lengths[j]) for i in range(0, len(order), mega)])
            if len(order)
            else order
        )
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        generator.shuffle(batches)
    return batches


def rare_types(labels, fraction: float) -> dict[str, int]:
    """Cell types with at most ``fraction`` of the cells, with their counts: the types Geneformer's
    cell-classification example drops before fine-tuning (it keeps a type when its count is above 0.005 x the
    cells; examples/cell_classification.ipynb)."""
    types, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    return {str(t): int(c) for t, c in zip(types, counts) if c <= fraction * len(labels)}


# best_model rule -> (history column, better): eval_loss as the Hugging Face Trainer's load_best_model_at_end
# with no metric_for_best_model (what Geneformer's example sets), macro_f1 the alternative.
BEST_MODEL_RULES = {"eval_loss": ("valid_loss", np.argmin), "macro_f1": ("valid_macro_f1", np.argmax)}


def best_epoch(history: list[dict], rule: str) -> int | None:
    """The epoch a fine-tuning keeps under ``rule`` (a key of :data:`BEST_MODEL_RULES`): lowest validation loss or
    highest validation macro-F1, the first of equal ones; None when no epoch was validated."""
    if rule not in BEST_MODEL_RULES:
        raise ValueError(f"best_model must be one of {', '.join(BEST_MODEL_RULES)}, not {rule!r}")
    column, pick = BEST_MODEL_RULES[rule]
    scored = [entry for entry in history if column in entry]
    return scored[int(pick([entry[column] for entry in scored]))]["epoch"] if scored else None


def linear_schedule(warmup_steps: int, total_steps: int):
    """Learning-rate factor: linear warm-up from 0, then linear decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


class Geneformer(Annotator):
    """Geneformer fine-tuned for cell-type annotation (see the module docstring; defaults: ``params`` in method.yaml).

    Among them: ``model_dir`` (required; null -> not applicable; the workflow sets it, the dictionaries and
    ``checkpoint_kind: released`` for the model it fetches, config ``models``), ``token_dictionary`` and
    ``gene_median_dictionary`` (paths; null: found in ``model_dir``), ``gene_ids`` (a ``var`` column with
    Ensembl ids, or "var_names"; null: detected, symbols mapped offline with GENCODE v44).
    """

    packages = ("torch", "transformers", "safetensors")

    # --- model directory and tokeniser (no transformers needed) ---------------------------------------------------
    def _model_files(self) -> GeneformerFiles:
        model_dir = self.param("model_dir")
        if not model_dir:
            raise NotApplicable(
                "no Geneformer model directory configured (methods.geneformer.params.model_dir); "
                "set methods.geneformer.model: geneformer_v1_10m to have the workflow fetch it from "
                "Hugging Face (as the full config does), or point model_dir at a copy of your own"
            )
        files = find_model_files(model_dir, self.param("token_dictionary"), self.param("gene_median_dictionary"))
        # "released" when the workflow fetched the model
        self.extra.update(files.provenance(self.param("checkpoint_kind")))
        return files

    def _make_tokenizer(self, files: GeneformerFiles) -> RankValueTokenizer:
        tokenizer, self.extra["model"] = make_tokenizer(
            files, int(self.param("max_input_size")), self.param("special_tokens")
        )
        self.extra["tokenisation"] = tokenizer.settings()
        return tokenizer

    def _tokenize(self, adata, source: str, check: bool) -> list[np.ndarray]:
        """Token sequences of the cells; with ``check``, record the gene coverage and refuse too little of it."""
        ids, id_source = anndata_ensembl_ids(adata, self.param("gene_ids"))
        mapping = self.tokenizer.map_genes(ids, id_source, counts=adata.X if check else None)
        cov = mapping.coverage
        if check:
            self.extra["genes"] = asdict(cov)
            print(f"geneformer: {source}: {cov.describe()}")
            cov.require(source, float(self.param("min_gene_share")), float(self.param("min_count_share")))
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
            str(files.model_dir),
            num_labels=n_labels,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            dtype=torch.float32,
        )
        missing = sorted(info["missing_keys"])
        mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info["mismatched_keys"])
        bad = [k for k in missing if k.startswith(("bert.embeddings", "bert.encoder"))]
        bad += [k for k in mismatched if not k.startswith("classifier")]
        if bad:
            raise InputError(
                files.weights,
                f"the weights do not fit the BERT encoder of config.json: {len(bad)} "
                f"encoder tensors missing or of another shape (e.g. {bad[0]})",
            )
        self.extra["loading"] = {"newly_initialised": missing + mismatched, "unused": sorted(info["unexpected_keys"])}
        model.config.id2label = dict(enumerate(self.classes_))
        model.config.label2id = {c: i for i, c in enumerate(self.classes_)}
        return model

    # --- fit / predict -------------------------------------------------------------------------------------------
    def fit(self, train, solution=None, unlabelled=None):
        files = self._model_files()  # not applicable without a model directory, before anything heavy is imported
        best_epoch([], str(self.param("best_model")))  # an unknown rule is refused before any work
        self.tokenizer = self._make_tokenizer(files)
        sequences = self._tokenize(train, "training data", check=True)
        self.n_genes_used = self.extra["genes"]["n_tokens_used"]
        lengths = np.array([len(s) for s in sequences])
        labels = train.obs[LABEL].astype(str).to_numpy()
        # As Geneformer's example: rare types are dropped from all training cells before the train/eval split.
        rare = rare_types(labels, float(self.param("rare_type_fraction")))
        kept = ~np.isin(labels, list(rare))
        self.extra["rare_types_dropped"] = rare
        self.classes_ = np.array(sorted(set(labels[kept])), dtype=object)
        if len(self.classes_) < 2:
            raise NotApplicable(
                f"fewer than 2 cell types have more than rare_type_fraction "
                f"{self.param('rare_type_fraction')} of the training cells"
            )
        y = np.searchsorted(self.classes_, labels)  # only read for kept cells
        self.majority_ = self.classes_[np.bincount(y[kept]).argmax()]
        is_valid = (
            train.obs[IS_VALIDATION].to_numpy(bool) if IS_VALIDATION in train.obs else np.zeros(train.n_obs, bool)
        )
        fit_idx = np.flatnonzero((lengths > 0) & kept & ~is_valid)
        valid_idx = np.flatnonzero((lengths > 0) & kept & is_valid)
        if fit_idx.size == 0:
            raise NotApplicable("no training cell has a gene of the Geneformer token dictionary")
        self.extra["sequence_length"] = {
            "mean": float(lengths[lengths > 0].mean()),
            "max": int(lengths.max()),
            "truncated_cells": self.tokenizer.n_truncated,
            "cells_without_tokens": int((lengths == 0).sum()),
        }

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
            [
                {"params": [w for n, w in named if not n.endswith(no_decay)], "weight_decay": float(p("weight_decay"))},
                {"params": [w for n, w in named if n.endswith(no_decay)], "weight_decay": 0.0},
            ],
            lr=float(p("max_lr")),
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, linear_schedule(warmup, total_steps))
        rng = np.random.default_rng(self.seed)
        lengths = np.array([len(sequences[i]) for i in fit_idx])
        clip = p("max_grad_norm")
        rule = str(p("best_model"))
        history, best_state = [], None
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
                logits = torch.from_numpy(self._logits(model, [sequences[i] for i in valid_idx]))
                pred = logits.argmax(-1).numpy()
                entry["valid_loss"] = round(
                    float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(y[valid_idx]))), 5
                )
                entry["valid_macro_f1"] = round(macro_f1(y[valid_idx], pred), 5)
                entry["valid_accuracy"] = round(float(np.mean(pred == y[valid_idx])), 5)
            history.append(entry)
            if valid_idx.size and best_epoch(history, rule) == epoch:
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            print(f"geneformer: epoch {epoch}/{epochs}", *(f"{k} {v}" for k, v in entry.items() if k != "epoch"))
        if best_state is not None:
            model.load_state_dict(best_state)
        self.extra["training"] = {
            "epochs": epochs,
            "batch_size": batch_size,
            "max_lr": float(p("max_lr")),
            "schedule": "linear",
            "warmup_steps": warmup,
            "total_steps": total_steps,
            "weight_decay": float(p("weight_decay")),
            "freeze_layers": int(p("freeze_layers")),
            "max_grad_norm": clip,
            "n_fit_cells": int(fit_idx.size),
            "n_valid_cells": int(valid_idx.size),
            "best_epoch": best_epoch(history, rule),
            "selection": (
                f"best validation {rule} (best_model)" if valid_idx.size else "last epoch (no validation cells)"
            ),
            "history": history,
        }
        return model

    def _logits(self, model, sequences) -> np.ndarray:
        """Class logits (float32) per sequence; sequences are batched by length so that padding stays short."""
        import torch

        model.eval()
        rt, size = self.runtime_, int(self.param("eval_batch_size"))
        order = np.argsort([-len(s) for s in sequences], kind="stable")
        out = np.empty((len(sequences), len(self.classes_)), dtype=np.float32)
        with torch.no_grad():
            for i in range(0, len(order), size):
                cells = order[i : i + size]
                ids, mask = pad_batch([sequences[j] for j in cells], self.tokenizer.pad_token)
                with rt.autocast():
                    logits = model(input_ids=ids.to(rt.device), attention_mask=mask.to(rt.device)).logits
                out[cells] = logits.float().cpu().numpy()
        return out

    def _predict_ids(self, model, sequences) -> np.ndarray:
        """Class index per sequence."""
        return self._logits(model, sequences).argmax(-1)

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
