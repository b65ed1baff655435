#!/usr/bin/env python
"""Produce parity reference outputs from the upstream CellPLM package (PyPI cellplm==0.1.0.post2).

Run with the isolated environment built by tools/upstream_env.sh:

    tools/upstream_env.sh
    .venv-upstream/bin/python tests/upstream/parity_reference.py --out DIR

Everything is computed with upstream's own classes and pipelines (import name ``CellPLM``), on
random weights (the released config, torch.manual_seed(seed)) and synthetic counts. Written to DIR:

  pretrain.config.json     the released config (the pretraining model: GMVAE latent + NB decoder)
  pretrain.best.ckpt       torch.save({'model_state_dict': state_dict}), upstream's checkpoint format
  annotation.config.json   the config CellTypeAnnotationPipeline builds: pretrain config updated
                           with CellTypeAnnotationDefaultModelConfig and out_dim=--classes
  annotation.best.ckpt     the annotation model's full state dict, same format
  inputs.npz               synthetic inputs (see below)
  expected.npz             reference outputs (see below)
  meta.json                versions, patches, conventions, timings

inputs.npz
  x_data, x_indices, x_indptr, x_shape   N x G' raw counts (CSR, float32); columns = gene_ids
  gene_ids                               G' vocabulary genes, random subset in random (unsorted) order
  full_data, full_indices, full_indptr, full_shape
                                         N x 19374 raw counts in vocabulary order (CSR, float32);
                                         the same cells: x == full[:, vocab_index(gene_ids)]
  input_mask                             N x 19374 int8, upstream convention: 1 = MASKED entry
                                         (its count is set to 0 in the model input and the entry
                                         enters loss term B), 0 = kept. Rows of unmasked cells are 0.
                                         Zero-count entries can be masked too (as upstream does).
  masked_cells                           sorted int64 indices of the masked cells (75% of N)

expected.npz
  embedding (N x 512 f32), cluster (N int64), tokens (N x 1024, embedder output),
  encoded (N x 1024, after the encoder and pre_latent_norm), cluster_logits (N x 16),
  categorical_onehot_maxdev (how far the straight-through hard sample is from an exact one-hot),
  unpatched_maxdiff (max |emb_run1 - emb_run2| of two unpatched upstream embedding runs),
  loss_total, loss_latent, loss_latent_gauss_raw, loss_latent_cat_raw, loss_nb, loss_nb_A,
  loss_nb_B, loss_z (N x 512, z of the loss pass), nb_mean (N x 19374), nb_disp (19374),
  annotation_logits (N x C), annotation_pred (N).

Patches (applied only where stated, and restored afterwards):
  P1 (embedding, loss, annotation): CellPLM.latent.autoencoders.GumbelSoftmax.sample_gumbel returns
     zeros_like(logits) instead of -log(-log(U+1e-20)+1e-20). In eval the GMVAE layer calls the
     sampler with hard=True, so y = y_hard - softmax(logits).detach() + softmax(logits), i.e. the
     one-hot of argmax(logits) up to 1 ulp from the straight-through arithmetic
     (recorded as categorical_onehot_maxdev). (No effect on the annotation model: it has no GMVAE.)
  P2 (loss only): CellPLM.latent.autoencoders.Gaussian.reparameterize returns mu (noise zero). In eval
     z = q(z|x,y) mean anyway, but the GMVAE latent loss uses the *sampled* 'gaussian', which
     upstream draws even in eval; P2 makes that sample equal to mu.
  P3 (loss only): the pretraining model's mask_model.apply_mask is replaced (on the instance) by the
     body of MaskBuilder's training branch with our fixed mask: x = x_seq.coalesce();
     x_dict['masked_x_seq'] = simple_mask(x, mask); x_dict['input_mask'] = mask.int().
     No drop_nodes (no cell dropping), no random mask.
Loss pass modes: model.eval() (no dropout; GMVAE eval branch: hard sample, z = mean), then
  model.objective.train() so that NBReconstructionLoss adds term B (it does when
  self.dae and self.training). x_dict = {'x_seq': full counts (torch sparse COO, float32, coalesced),
  'coord': -1 (N x 2), 'gene_mask': arange(19374)}; no 'batch'/'dataset' keys, input_gene_list None.
"""

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RELEASED_CONFIG = REPO / "cellplm" / "resources" / "20230926_85M.config.json"  # shipped with the package
KEY_TABLE = REPO / "cellplm" / "resources" / "state_dict_keys_20230926_85M.tsv"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Parity reference outputs from upstream CellPLM (run with .venv-upstream/bin/python)."
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, data and mask (default 0)")
    p.add_argument("--cells", type=int, default=48, help="number of cells N (default 48)")
    p.add_argument("--genes", type=int, default=600, help="input genes G' for embedding/annotation (default 600)")
    p.add_argument("--classes", type=int, default=5, help="annotation classes C (default 5)")
    p.add_argument("--density", type=float, default=0.10, help="fraction of nonzero counts (default 0.10)")
    p.add_argument("--mask-cells", type=float, default=0.75, help="fraction of masked cells (default 0.75)")
    p.add_argument("--mask-p", type=float, default=0.25, help="entry mask rate in masked cells (default 0.25)")
    p.add_argument(
        "--config",
        default=None,
        help="released config json (default: cellplm/resources/20230926_85M.config.json in the repo)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    import numpy as np
    import scipy.sparse as sp
    import torch
    import anndata as ad
    import pandas as pd
    import warnings
    from CellPLM.model import OmicsFormer
    from CellPLM.latent import autoencoders as ae_mod
    from CellPLM.utils.sparse import simple_mask
    from CellPLM.utils.data import XDict, sparse_scipy_to_tensor
    from CellPLM.pipeline.cell_embedding import CellEmbeddingPipeline
    from CellPLM.pipeline.cell_type_annotation import CellTypeAnnotationPipeline, CellTypeAnnotationDefaultModelConfig

    warnings.filterwarnings("ignore", message="Batch labels not found")
    warnings.filterwarnings("ignore", message=".*sparse.*", category=UserWarning)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config_path = Path(args.config) if args.config else RELEASED_CONFIG
    with open(config_path) as f:
        config = json.load(f)
    vocab = list(config["gene_list"])
    V = len(vocab)
    N, Gp, C, seed = args.cells, args.genes, args.classes, args.seed
    timings = {}

    # ---------------------------------------------------------------- a. pretraining model
    t = time.time()
    torch.manual_seed(seed)
    model = OmicsFormer(**config)
    sd = model.state_dict()
    with open(out / "pretrain.config.json", "w") as f:
        json.dump(config, f)
    torch.save({"model_state_dict": sd}, out / "pretrain.best.ckpt")
    key_check = "key table not found"
    if KEY_TABLE.exists():
        rows = [line.rstrip("\n").split("\t") for line in KEY_TABLE.read_text().splitlines()[1:] if line.strip()]
        want = {r[0]: tuple(json.loads(r[1])) for r in rows}
        got = {k: tuple(v.shape) for k, v in sd.items()}
        key_check = (
            "match"
            if want == got
            else (
                f"MISMATCH: missing={sorted(set(want) - set(got))[:5]} extra={sorted(set(got) - set(want))[:5]} "
                f"shape={[k for k in want if k in got and want[k] != got[k]][:5]}"
            )
        )
    timings["a_build_save"] = time.time() - t

    # ---------------------------------------------------------------- b. synthetic data
    rng = np.random.default_rng(seed)
    lib = rng.lognormal(0.0, 0.5, size=(N, 1))  # per-cell size factor
    gene_mu = rng.gamma(0.6, 3.0, size=(1, V))  # per-gene mean
    nz = rng.random((N, V)) < args.density
    mu = np.broadcast_to(lib * gene_mu, (N, V))[nz]
    r = 2.0  # NB: Poisson(Gamma(r, mu/r)), +1 so nz entries are > 0
    vals = 1.0 + rng.poisson(rng.gamma(r, mu / r))
    full = np.zeros((N, V), dtype=np.float32)
    full[nz] = vals
    full_csr = sp.csr_matrix(full)
    gene_idx = rng.choice(V, size=Gp, replace=False)  # random subset, random order
    gene_ids = np.array([vocab[i] for i in gene_idx])
    x_csr = sp.csr_matrix(full[:, gene_idx])
    # fixed mask, upstream convention 1 = masked
    perm = rng.permutation(N)
    n_mask = int(args.mask_cells * N)
    masked_cells = np.sort(perm[:n_mask])
    mask = rng.random((N, V)) <= args.mask_p
    mask[perm[n_mask:]] = False
    np.savez(
        out / "inputs.npz",
        x_data=x_csr.data,
        x_indices=x_csr.indices,
        x_indptr=x_csr.indptr,
        x_shape=np.array(x_csr.shape),
        gene_ids=gene_ids,
        full_data=full_csr.data,
        full_indices=full_csr.indices,
        full_indptr=full_csr.indptr,
        full_shape=np.array(full_csr.shape),
        input_mask=mask.astype(np.int8),
        masked_cells=masked_cells.astype(np.int64),
    )
    adata = ad.AnnData(X=x_csr.copy(), var=pd.DataFrame(index=pd.Index(gene_ids, dtype=object)))

    # ---------------------------------------------------------------- patches
    orig_sample_gumbel = ae_mod.GumbelSoftmax.sample_gumbel
    orig_reparam = ae_mod.Gaussian.reparameterize

    def zero_gumbel(self, logits, eps=1e-20):  # P1
        return torch.zeros_like(logits)

    def mean_reparam(self, mu, var):  # P2
        return mu

    def set_patches(p1, p2):
        ae_mod.GumbelSoftmax.sample_gumbel = zero_gumbel if p1 else orig_sample_gumbel
        ae_mod.Gaussian.reparameterize = mean_reparam if p2 else orig_reparam

    # ---------------------------------------------------------------- c. embedding (upstream pipeline)
    t = time.time()
    emb_pipe = CellEmbeddingPipeline(pretrain_prefix="pretrain", pretrain_directory=str(out))
    emodel = emb_pipe.model
    cap = {}
    hooks = [
        emodel.embedder.register_forward_hook(lambda m, i, o: cap.__setitem__("tokens", o.detach().clone())),
        emodel.pre_latent_norm.register_forward_hook(lambda m, i, o: cap.__setitem__("encoded", o.detach().clone())),
        emodel.latent.layers[1].inference.register_forward_hook(
            lambda m, i, o: cap.__setitem__("inf", {k: v.detach().clone() for k, v in o.items()})
        ),
    ]
    set_patches(True, False)
    embedding = emb_pipe.predict(adata, device="cpu").detach().cpu().numpy().astype(np.float32)
    tokens, encoded, inf = cap["tokens"].numpy(), cap["encoded"].numpy(), cap["inf"]
    cluster_logits = inf["logits"].numpy()
    cat = inf["categorical"]
    cluster = cat.argmax(1).numpy().astype(np.int64)
    onehot = torch.nn.functional.one_hot(cat.argmax(1), cat.shape[1]).float()
    onehot_dev = float((cat - onehot).abs().max())
    assert (cluster == cluster_logits.argmax(1)).all()
    set_patches(False, False)
    un1 = emb_pipe.predict(adata, device="cpu").detach().cpu().numpy()
    un2 = emb_pipe.predict(adata, device="cpu").detach().cpu().numpy()
    unpatched_maxdiff = float(np.abs(un1 - un2).max())
    for h in hooks:
        h.remove()
    del emb_pipe, emodel
    timings["c_embedding"] = time.time() - t

    # ---------------------------------------------------------------- d. pretraining loss, fixed mask
    t = time.time()
    mask_t = torch.from_numpy(mask)

    def apply_fixed_mask(x_dict):  # P3: MaskBuilder training branch, fixed mask
        x = x_dict["x_seq"].coalesce()
        x_dict["masked_x_seq"] = simple_mask(x, mask_t)
        x_dict["input_mask"] = mask_t.int()
        return x_dict

    model.mask_model.apply_mask = apply_fixed_mask
    model.eval()
    model.objective.train()  # NBReconstructionLoss adds term B iff dae and training
    nb_obj = model.objective.layers[0]
    assert nb_obj.dae and nb_obj.training
    lat_layer = model.latent.layers[1]
    cap = {}
    hooks = [
        lat_layer.inference.register_forward_hook(lambda m, i, o: cap.__setitem__("inf", o)),
        model.decoder.register_forward_hook(lambda m, i, o: cap.__setitem__("dec", o)),
        model.latent.register_forward_hook(lambda m, i, o: cap.__setitem__("lat", o)),
    ]
    set_patches(True, True)
    x_dict = XDict(
        {"x_seq": sparse_scipy_to_tensor(full_csr), "coord": torch.zeros(N, 2) - 1, "gene_mask": torch.arange(V)}
    )
    with torch.no_grad():
        out_dict, loss = model(x_dict)
        z_loss, lat_loss = cap["lat"]
        nb_total = nb_obj(out_dict, x_dict)  # A + B (training mode)
        nb_obj.eval()
        nb_A = nb_obj(out_dict, x_dict)  # A only
        nb_obj.train()
        inf = cap["inf"]
        gauss_raw = lat_layer.gaussian_loss(inf["gaussian"], inf["mean"], inf["var"], inf["y_mean"], inf["y_var"])
        cat_raw = -lat_layer.entropy(inf["logits"], inf["prob_cat"]) - np.log(1 / lat_layer.num_clusters)
    set_patches(False, False)
    for h in hooks:
        h.remove()
    loss_total = float(loss)
    loss_latent = float(lat_loss)
    loss_nb, loss_nb_A = float(nb_total), float(nb_A)
    assert abs(loss_total - (loss_latent + loss_nb)) <= 1e-4 * max(1.0, abs(loss_total)), (
        loss_total,
        loss_latent,
        loss_nb,
    )
    assert torch.equal(x_dict["input_mask"].bool(), mask_t)
    timings["d_loss"] = time.time() - t

    # ---------------------------------------------------------------- e. annotation model
    t = time.time()
    overwrite = dict(CellTypeAnnotationDefaultModelConfig)
    overwrite["out_dim"] = C
    torch.manual_seed(seed + 1)  # init of the layers not in the checkpoint
    ann_pipe = CellTypeAnnotationPipeline(
        pretrain_prefix="pretrain", overwrite_config=overwrite, pretrain_directory=str(out)
    )
    ann_config = dict(config)
    ann_config.update(overwrite)
    amodel = ann_pipe.model
    with open(out / "annotation.config.json", "w") as f:
        json.dump(ann_config, f)
    torch.save({"model_state_dict": amodel.state_dict()}, out / "annotation.best.ckpt")
    cap = {}
    hook = amodel.head.mlp.register_forward_hook(lambda m, i, o: cap.__setitem__("logits", o.detach().clone()))
    # predict() requires a fitted pipeline; we only need upstream's inference path on these weights.
    ann_pipe.fitted = True
    ann_pipe.gene_list = gene_ids.tolist()
    set_patches(True, False)
    ann_pred = ann_pipe.predict(adata, device="cpu").cpu().numpy().astype(np.int64)
    set_patches(False, False)
    hook.remove()
    annotation_logits = cap["logits"].numpy().astype(np.float32)
    assert annotation_logits.shape == (N, C) and (annotation_logits.argmax(1) == ann_pred).all()
    timings["e_annotation"] = time.time() - t

    np.savez(
        out / "expected.npz",
        embedding=embedding,
        cluster=cluster,
        tokens=tokens,
        encoded=encoded,
        cluster_logits=cluster_logits,
        categorical_onehot_maxdev=np.float64(onehot_dev),
        unpatched_maxdiff=np.float64(unpatched_maxdiff),
        loss_total=np.float64(loss_total),
        loss_latent=np.float64(loss_latent),
        loss_latent_gauss_raw=np.float64(float(gauss_raw)),
        loss_latent_cat_raw=np.float64(float(cat_raw)),
        loss_nb=np.float64(loss_nb),
        loss_nb_A=np.float64(loss_nb_A),
        loss_nb_B=np.float64(loss_nb - loss_nb_A),
        loss_z=z_loss.numpy(),
        nb_mean=out_dict["mean"].numpy(),
        nb_disp=out_dict["disp"][0].numpy(),
        annotation_logits=annotation_logits,
        annotation_pred=ann_pred,
    )
    timings["total"] = time.time() - t0
    import importlib.metadata as md

    meta = {
        "upstream": f"cellplm=={md.version('cellplm')}",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "config_path": str(config_path),
        "seed": seed,
        "cells": N,
        "genes": Gp,
        "classes": C,
        "pretrain_state_dict_keys": len(sd),
        "key_table_check": key_check,
        "annotation_state_dict_keys": len(amodel.state_dict()),
        "input_mask_convention": "1 = masked (count zeroed in the model input, entry in term B); 0 = kept",
        "patches": {
            "P1": "GumbelSoftmax.sample_gumbel -> zeros_like(logits) (embedding, loss, annotation)",
            "P2": "Gaussian.reparameterize -> mu (loss only; the GMVAE latent loss uses the sampled z)",
            "P3": "pretrain model mask_model.apply_mask -> fixed mask (coalesce, simple_mask, input_mask=mask.int())",
        },
        "loss_modes": "model.eval(); model.objective.train(); x_dict keys x_seq (full vocab), coord=-1, "
        "gene_mask=arange(V); input_gene_list=None",
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    with open(out / "meta.json", "w") as f:
        json.dump(meta, f, indent=1)

    print(f"upstream CellPLM {md.version('cellplm')} | torch {torch.__version__} | config {config_path}")
    print(
        f"pretrain model: {len(sd)} keys (key table: {key_check}); annotation model: "
        f"{meta['annotation_state_dict_keys']} keys"
    )
    print(
        f"inputs: x {x_csr.shape} nnz={x_csr.nnz}, full {full_csr.shape} nnz={full_csr.nnz}, "
        f"masked cells {len(masked_cells)}/{N}, masked entries {int(mask.sum())}"
    )
    print(
        f"embedding {embedding.shape} tokens {tokens.shape} encoded {encoded.shape} "
        f"clusters {np.bincount(cluster, minlength=16).tolist()}"
    )
    print(f"one-hot deviation {onehot_dev:.3g}; unpatched run-to-run max|diff| {unpatched_maxdiff:.4g}")
    print(
        f"loss_total {loss_total:.6f} = latent {loss_latent:.6f} (gauss_raw {float(gauss_raw):.6f}, "
        f"cat_raw {float(cat_raw):.6f}) + nb {loss_nb:.6f} (A {loss_nb_A:.6f}, B {loss_nb - loss_nb_A:.6f})"
    )
    print(f"annotation_logits {annotation_logits.shape}, pred counts {np.bincount(ann_pred, minlength=C).tolist()}")
    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
