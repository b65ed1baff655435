"""Cell-type annotation by fine-tuning CellPLM, with upstream's protocol as the default.

Protocol (upstream ``CellTypeAnnotationPipeline``): 3,000 seurat_v3 HVGs of the whole data intersected with the
vocabulary; GMVAE replaced by a fresh Linear(D, L) latent and a Dropout(0.5) + Linear(L, classes) head; dropout
0.5; cell dropping and masking as augmentation; AdamW with two groups (embedder lr/10, wd 1e-10; encoder,
latent and head lr 5e-3, wd 1e-7; the pre-latent LayerNorm stays frozen); 30-epoch linear warm-up of the main
group; ReduceLROnPlateau(patience 25, factor 0.95) stepped on the training loss every step; gradient clipping
at 2.0; up to 2,000 epochs, keeping the weights of the best validation macro-F1 and stopping 200 epochs after it.
One optimisation step is one sentence (all cells of one ``obs['batch']`` value).

Transductive (default, as upstream): test cells sit in the sentences as context, the loss sees train cells
only. Inductive: train sentences hold train cells only and test cells are predicted in sentences of their own.

Faster than upstream at the same arithmetic: only the rows of the gene-embedding table for the genes in use are
trained (the fine-tuned model's vocabulary is those genes) and AdamW is fused. bf16 autocast where the hardware
has it (``precision="auto"``, this class's default; ``"fp32"`` is upstream's arithmetic, and the benchmark's
``cellplm_finetune`` method uses it by default; whether bf16 changes accuracy: see docs/results.md, "Fine-tuning:
ours against the authors' code") and, optionally, a validation pass every ``eval_every`` epochs (1 = upstream).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, fields

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import InputError
from .finetune_options import FinetuneConfig
from .hvg import highly_variable_genes
from .keys import IS_VALIDATION, LABEL
from .metrics import macro_f1 as validation_macro_f1  # best-epoch selection
from .data import check_counts, counts_matrix, match_genes, require_coverage, sentence_obs, sentences
from .model import CellPLM, config_for_shape, load_model
from .model.sentence import Sentence
from .runtime import Runtime
from .sentence_policy import SPATIAL_KEY, SentencePolicy

log = logging.getLogger(__name__)


class CellTypeAnnotator:
    """scikit-learn-style CellPLM annotator: ``fit(train)``, ``predict(test)``.

    ``checkpoint``: a checkpoint prefix (``<prefix>.config.json`` + ``<prefix>.best.ckpt``); ``None`` trains
    from random initialisation (``shape``), which the provenance says. ``trusted_sha256``: digests of weights files
    that may be fully unpickled (:func:`cellplm.model.checkpoint.read_checkpoint`). ``options``: the fields of
    :class:`~cellplm.finetune_options.FinetuneConfig`.
    """

    def __init__(self, checkpoint=None, *, trusted_sha256=None, **options):
        unknown = set(options) - {f.name for f in fields(FinetuneConfig)}
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        self.checkpoint = checkpoint
        self.trusted_sha256 = trusted_sha256
        self.options = FinetuneConfig(**options)
        self.history_: list[dict] = []
        self.info_: dict = {}

    # ---- data ----------------------------------------------------------------------------------------------
    def _prepare(self, train: ad.AnnData, label_key: str, unlabelled: ad.AnnData | None):
        o = self.options
        if label_key not in train.obs:
            raise InputError("training data", f"no obs['{label_key}'] with cell-type labels")
        parts = [train] + ([unlabelled] if unlabelled is not None else [])
        for name, part in zip(("training data", "test data"), parts):
            if part.n_obs == 0:
                raise InputError(name, "no cells")
            check_counts(counts_matrix(part)[: min(part.n_obs, 2000)], name)
        if unlabelled is not None and not np.array_equal(unlabelled.var_names, train.var_names):
            unlabelled = unlabelled[:, train.var_names]  # KeyError names a missing gene
        X = sp.vstack([sp.csr_matrix(counts_matrix(p)) for p in parts], format="csr").astype(np.float32)
        obs = pd.concat([sentence_obs(p, o.group_key) for p in parts])
        role = np.concatenate(
            [np.where(self._validation_mask(train), 1, 0)]
            + ([np.full(unlabelled.n_obs, 2)] if unlabelled is not None else [])
        )  # 0 train, 1 valid, 2 test
        joint = ad.AnnData(
            X,
            obs=pd.DataFrame(obs.values, index=np.arange(len(obs)).astype(str), columns=obs.columns),
            var=train.var.copy(),
        )
        return joint, role

    def _validation_mask(self, train: ad.AnnData) -> np.ndarray:
        if IS_VALIDATION in train.obs:
            return train.obs[IS_VALIDATION].astype(bool).to_numpy()
        rng = np.random.default_rng(self.options.seed)
        mask = np.zeros(train.n_obs, dtype=bool)
        mask[rng.permutation(train.n_obs)[: int(round(self.options.valid_fraction * train.n_obs))]] = True
        return mask

    def _select_genes(self, joint: ad.AnnData, vocabulary: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Column indices used and their vocabulary rows: HVGs of all cells, intersected with the vocabulary."""
        o = self.options
        match = match_genes(joint.var, joint.var_names, vocabulary, gene_totals=np.asarray(joint.X.sum(0)).ravel())
        self.info_["genes"] = match.to_dict()
        log.info("genes: %s", match.describe())
        require_coverage(match, "training data", o.min_gene_share, o.min_count_share)
        columns = np.arange(joint.n_vars)
        if o.n_hvg:
            columns = np.flatnonzero(highly_variable_genes(joint, o.n_hvg, flavor="seurat_v3"))
        columns = columns[match.vocab_index[columns] >= 0]
        if columns.size == 0:
            raise InputError("training data", "none of the selected genes is in the CellPLM vocabulary")
        self.info_["n_genes_used"] = int(columns.size)
        return columns, match.vocab_index[columns]

    def _sentences(self, joint, columns, cells: np.ndarray, policy="batch") -> list[tuple[np.ndarray, Sentence]]:
        """The sentences of ``cells`` over the genes in use under a sentence policy (the fit's: batch); column j of
        ``columns`` is row j of the model's table."""
        vocab_index = np.full(joint.n_vars, -1)
        vocab_index[columns] = np.arange(columns.size)
        return [
            (idx, sentence.to(self.runtime_.device))
            for idx, sentence in sentences(
                joint, vocab_index, columns.size, group_key=self.options.group_key, cells=cells, policy=policy
            )
        ]

    # ---- model ---------------------------------------------------------------------------------------------
    def _build_model(self, n_classes: int) -> CellPLM:
        o = self.options
        if self.checkpoint is None:
            base = config_for_shape(o.shape)
            model = CellPLM(base.for_annotation(n_classes, dropout=o.dropout))
            self.info_["checkpoint"] = {"kind": "random initialisation", "shape": o.shape}
        else:
            model, report = load_model(
                self.checkpoint, task="annotation", n_classes=n_classes, trusted_sha256=self.trusted_sha256
            )
            if model.config.model_dropout != o.dropout:
                pretrained, model = model, CellPLM(model.config.replace(model_dropout=o.dropout))
                model.load_state_dict(pretrained.state_dict())
            self.info_["checkpoint"] = {"path": str(self.checkpoint), "load_report": report.summary()}
        return model

    @staticmethod
    def _keep_genes(model: CellPLM, vocab_rows: np.ndarray) -> None:
        """Keep only the gene-embedding rows of the genes in use: the fine-tuned model's vocabulary is those genes."""
        genes = [model.config.gene_list[i] for i in vocab_rows]
        table = model.embedder.feat_enc.emb.detach()[torch.as_tensor(vocab_rows)]
        model.config = model.config.replace(gene_list=genes)
        model.embedder.feat_enc.emb = torch.nn.Parameter(table.clone())

    def _optimizer(self, model: CellPLM):
        o = self.options
        # pre_latent_norm is in neither of upstream's groups, so it stays frozen; its gradients still count in the
        # clipping norm, as upstream's clip_grad_norm_ over all parameters does.
        main = [
            p
            for name, p in model.named_parameters()
            if p.requires_grad and not name.startswith(("embedder.", "pre_latent_norm."))
        ]
        emb = [p for p in model.embedder.parameters() if p.requires_grad]
        groups_ = [
            {"params": emb, "lr": o.lr * o.embedder_lr_scale, "weight_decay": o.embedder_weight_decay},
            {"params": main, "lr": o.lr, "weight_decay": o.weight_decay},
        ]
        try:
            opt = torch.optim.AdamW(groups_, fused=True)
        except (RuntimeError, TypeError):
            opt = torch.optim.AdamW(groups_, foreach=True)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", patience=o.plateau_patience, factor=o.plateau_factor
        )
        return opt, plateau

    # ---- fit / predict -------------------------------------------------------------------------------------
    def fit(
        self, train: ad.AnnData, label_key: str = LABEL, unlabelled: ad.AnnData | None = None
    ) -> "CellTypeAnnotator":
        o = self.options
        torch.manual_seed(o.seed)
        np.random.seed(o.seed)
        generator = torch.Generator().manual_seed(o.seed)
        self.runtime_ = Runtime.resolve(o.device, o.precision)
        context = unlabelled if o.transductive else None
        joint, role = self._prepare(train, label_key, context)
        labels = train.obs[label_key].astype(str).to_numpy()
        self.classes_ = np.array(sorted(set(labels)))
        y = np.full(joint.n_obs, -1, dtype=np.int64)
        y[: train.n_obs] = np.searchsorted(self.classes_, labels)
        model = self._build_model(len(self.classes_))
        columns, vocab_rows = self._select_genes(joint, model.config.gene_list)
        self.genes_ = joint.var_names[columns].to_numpy()
        self._keep_genes(model, vocab_rows)
        model = model.to(self.runtime_.device)
        opt, plateau = self._optimizer(model)
        fit_cells = np.arange(joint.n_obs)
        train_sentences = self._sentences(joint, columns, fit_cells)
        y_t = torch.as_tensor(y, device=self.runtime_.device)
        is_train = torch.as_tensor(role == 0, device=self.runtime_.device)
        valid = np.flatnonzero(role == 1)
        # the validation pass skips sentences without validation cells, as upstream's inference(split='valid') does
        valid_sentences = [(idx, sentence) for idx, sentence in train_sentences if (role[idx] == 1).any()]

        best = (-1.0, -1, None)  # (valid macro-F1, epoch, state)
        bar = tqdm(range(o.max_epochs), desc="fine-tuning", unit="epoch", disable=not o.progress)
        self.history_ = []
        for epoch in bar:
            t0 = time.perf_counter()
            if epoch < o.warmup_epochs:
                opt.param_groups[1]["lr"] = o.lr * (epoch + 1) / o.warmup_epochs
            model.train()
            losses = []
            for k in torch.randperm(len(train_sentences), generator=generator).tolist():
                idx, sentence = train_sentences[k]
                masked, kept, _ = model.mask(sentence, generator, dense=False)
                cells = torch.as_tensor(idx, device=self.runtime_.device)[kept]
                target = is_train[cells]
                if not bool(target.any()):
                    continue
                with self.runtime_.autocast():
                    z = model.latent(model.encode(masked), with_loss=False).z[target]
                    logits = model.head(z)
                loss = F.cross_entropy(logits.float(), y_t[cells][target])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip)
                opt.step()
                plateau.step(loss.item())
                losses.append(loss.item())
            record = {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "lr": opt.param_groups[1]["lr"],
            }
            if valid.size and (epoch % o.eval_every == 0 or epoch == o.max_epochs - 1):
                pred = self._predict_cells(model, valid_sentences, joint.n_obs)
                f1 = validation_macro_f1(y[valid], pred[valid])
                record["valid_macro_f1"] = float(f1)
                if f1 >= best[0]:  # ties go to the later epoch, as upstream
                    best = (f1, epoch, copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}))
            record["seconds"] = time.perf_counter() - t0
            self.history_.append(record)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", f1=f"{record.get('valid_macro_f1', float('nan')):.3f}")
            if best[1] >= 0 and epoch - best[1] >= o.patience:
                break
        bar.close()
        if best[2] is not None:
            model.load_state_dict(best[2])
        self.model_ = model.eval()
        self.info_.update(
            {
                "epochs_run": len(self.history_),
                "best_epoch": best[1],
                "best_valid_macro_f1": best[0] if best[1] >= 0 else None,
                "stopped_early": len(self.history_) < o.max_epochs,
                "device": self.runtime_.device.type,
                "device_detail": self.runtime_.describe(),
                "precision": self.runtime_.precision,
                "setting": "transductive" if o.transductive else "inductive",
                "n_sentences": len(train_sentences),
                "options": asdict(o),
            }
        )
        if context is not None:  # predictions for the context cells, from the same sentences
            pred = self._predict_cells(model, train_sentences, joint.n_obs)[train.n_obs :]
            self._context = pd.Series(self.classes_[pred], index=context.obs_names)
        else:
            self._context = None
        return self

    @torch.no_grad()
    def _predict_cells(self, model: CellPLM, sentences, n_cells: int) -> np.ndarray:
        model.eval()
        pred = np.full(n_cells, -1, dtype=np.int64)
        with self.runtime_.autocast():
            for idx, sentence in sentences:
                pred[idx] = model.logits(sentence).argmax(1).cpu().numpy()
        return pred

    def predict(
        self,
        test: ad.AnnData,
        key_added: str | None = None,
        *,
        sentences: SentencePolicy | str | None = None,
        context: ad.AnnData | None = None,
    ) -> np.ndarray:
        """Labels of the test cells, as trained by default: from the fit's shared sentences when they were given as
        context (transductive), otherwise from sentences of the test cells alone.

        ``sentences`` reads them under another sentence policy (:mod:`cellplm.sentence_policy`, e.g. ``"single"``,
        ``"random:16"``), and ``context`` adds other cells (e.g. the training cells) to their sentences, whose own
        labels are discarded: ``sentences="batch", context=train`` is the transductive prediction again. With
        ``key_added`` the labels are also written to ``test.obs[key_added]`` (scanpy style).
        """
        labels = self._predict(test, sentences, context)
        if key_added:
            test.obs[key_added] = pd.Categorical(labels, categories=self.classes_)
        return labels

    def _predict(self, test: ad.AnnData, policy=None, context: ad.AnnData | None = None) -> np.ndarray:
        as_trained = policy is None and context is None
        if as_trained and self._context is not None and test.obs_names.isin(self._context.index).all():
            return self._context.loc[test.obs_names].to_numpy(dtype=object)
        parts = ([context] if context is not None else []) + [test]
        for name, part in zip(("context data", "test data")[-len(parts) :], parts):
            check_counts(counts_matrix(part)[: min(part.n_obs, 2000)], name)
        X = sp.vstack([sp.csr_matrix(counts_matrix(p[:, self.genes_])) for p in parts], format="csr")
        obs = pd.concat([sentence_obs(p, self.options.group_key) for p in parts])
        joint = ad.AnnData(X.astype(np.float32), obs=obs.set_axis(np.arange(X.shape[0]).astype(str)))
        if all(SPATIAL_KEY in p.obsm for p in parts):
            joint.obsm[SPATIAL_KEY] = np.concatenate([np.asarray(p.obsm[SPATIAL_KEY]) for p in parts])
        cells = np.arange(joint.n_obs)
        pred = self._predict_cells(
            self.model_, self._sentences(joint, np.arange(X.shape[1]), cells, policy or "batch"), joint.n_obs
        )
        return self.classes_[pred[joint.n_obs - test.n_obs :]].astype(object)

    def save(self, prefix) -> None:
        """Write the fine-tuned model as an upstream-format checkpoint (its vocabulary: the genes in use)."""
        from .model.checkpoint import save_checkpoint

        save_checkpoint(self.model_, prefix, extra={"classes": list(self.classes_), "finetuning": self.info_})
