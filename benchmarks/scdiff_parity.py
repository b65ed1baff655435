#!/usr/bin/env python
"""Side by side: this project's scDiff (cellplm/bench/methods/scdiff) against the authors' code, same weights.

scDiff cannot be installed here (its pins), but its model code can be imported from a checkout of OmicsML/scDiff
with the few packages its modules import at the top: ``einops`` must be importable (``pip install einops``); the
packages only its other tasks use (scib, adjustText, its GEARS extension for perturbations, pytorch_lightning for
the trainer, omegaconf for configs) are replaced by empty modules, as nothing compared here calls them. Compared:

- ``network``: upstream's ``DiffusionModel`` built with ``configs/eval_annotation.yaml``'s model options at the
  published width (512, depth 6, 8 heads of 64) and ours (:class:`ScDiffDenoiser`), ours given upstream's weights
  (every parameter mapped by name, none left over); their predictions for the same masked context, noised input,
  time steps and conditions (eval mode), max absolute difference;
- ``schedule``: upstream's ``make_beta_schedule("linear", 1000, 1e-4, 2e-2)`` against ours;
- ``time_steps``: upstream's ``IterativeUniformTimeStepSampler(1000, 5)(5)`` against ours;
- ``classifier``: upstream's ``DiffusionClassifier`` (query_mode seen, n_samples_list [5], to_keep_list [1], l2) on
  upstream's network against ours on ours, the same random state before each: the predicted cell types.

    .venv/bin/python -m pip install --target /tmp/scdiff-deps einops
    PYTHONPATH=/tmp/scdiff-deps .venv/bin/python benchmarks/scdiff_parity.py --upstream /path/to/scDiff

writes ``benchmarks/results/scdiff_parity.json``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import provenance, write_result  # noqa: E402

# configs/eval_annotation.yaml, model.params.model_config.params (the options the network's code reads)
UPSTREAM_OPTIONS = dict(
    activation="gelu", norm_layer="layernorm", depth=6, dropout=0.0, cell_mask_ratio=0.25, mask_mode="v2",
    embed_dim=512, dim_head=64, num_heads=8, mask_context=False, decoder_embed_dim=512, decoder_dim_head=64,
    decoder_num_heads=8, mlp_time_embed=False, cond_type="crossattn", cond_emb_type="embedding", cond_cat_input=False,
    cond_tokens=1, cond_mask_ratio=0.1, post_cond_layers=1, post_cond_norm="batchnorm", post_cond_mask_ratio=0.1,
    mask_dec_cond=False, mask_dec_cond_se=False, mask_dec_cond_semlp=False, mask_dec_cond_ratio=True,
    mask_dec_cond_concat=False, decoder_embed_type="embedder", decoder_mask="inv_enc", encoder_type="mlp",
)  # fmt: skip

# upstream parameter name -> ours (the whole state dict; anything unmatched is an error)
RENAMES = [
    (r"^embedder\.emb$", "context_embedder.emb"),
    (r"^embedder\.post_layer\.1\.", "context_embedder.post.1."),
    (r"^blocks\.(\d+)\.", r"context_blocks.\1."),
    (r"^decoder_embed\.emb$", "noised_embedder.emb"),
    (r"^decoder_embed\.post_layer\.1\.", "noised_embedder.post.1."),
    (r"^cond_embed\.emb_dict\.cell_type\.(\d+)\.0\.", r"cond_embed.tables.cell_type.\1."),
    (r"^encoder\.blocks\.(\d+)\.attn1\.", r"blocks.\1."),
    (r"^encoder\.blocks\.(\d+)\.ff\.net\.0\.", r"blocks.\1.ff.0."),
    (r"^encoder\.blocks\.(\d+)\.ff\.net\.2\.", r"blocks.\1.ff.2."),
    (r"^encoder\.blocks\.(\d+)\.(norm1|norm3)\.", r"blocks.\1.\2."),
    (r"^decoder_norm\.", "norm."),
    (r"^decoder\.cond_embed\.emb_dict\.batch\.0\.0\.", "post_cond_embed.tables.batch.0."),
    (r"^decoder\.layers\.0\.0\.", "head."),
]
UNUSED = re.compile(r"^encoder\.blocks\.\d+\.norm2\.")  # upstream builds norm2 for self-attention, off here


def stub_modules() -> None:
    """Empty stand-ins for the packages that upstream's modules import but nothing compared here uses."""
    import torch

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    class LightningModule(torch.nn.Module):  # only ScDiff / DiffusionWrapper derive from it
        pass

    module("pytorch_lightning", LightningModule=LightningModule)
    module("omegaconf", DictConfig=dict)
    module("adjustText", adjust_text=None)
    module("scib", metrics=module("scib.metrics", ari=module("scib.metrics.ari", ari=None)))
    module("scib.metrics.nmi", nmi=None)

    class GEARS_Conditioner(torch.nn.Module):  # the perturbation task's conditioner (isinstance checks only)
        pass

    gears = module("scdiff.ext.gears", model=module("scdiff.ext.gears.model", GEARS_Conditioner=GEARS_Conditioner))
    gears.__path__ = []


def rename(upstream_key: str) -> str | None:
    if UNUSED.match(upstream_key):
        return None
    for pattern, repl in RENAMES:
        if re.match(pattern, upstream_key):
            return re.sub(pattern, repl, upstream_key)
    raise KeyError(f"upstream parameter {upstream_key} has no counterpart here")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", type=Path, required=True, help="a checkout of OmicsML/scDiff (holds scdiff/)")
    p.add_argument("--upstream-commit", default="", help="its commit, recorded in the result")
    p.add_argument("--genes", type=int, default=300)
    p.add_argument("--cells", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/scdiff_parity.json")
    args = p.parse_args(argv)
    if not (args.upstream / "scdiff" / "model.py").exists():
        raise SystemExit(f"{args.upstream}: no scdiff/model.py (a checkout of OmicsML/scDiff is needed)")
    import numpy as np
    import torch

    from cellplm.bench.methods.scdiff.classifier import classify, uniform_time_steps
    from cellplm.bench.methods.scdiff.diffusion import GaussianDiffusion, linear_betas
    from cellplm.bench.methods.scdiff.model import ScDiffDenoiser

    stub_modules()
    sys.path.insert(0, str(args.upstream))
    from scdiff.model import DiffusionModel
    from scdiff.modules.classifier import DiffusionClassifier, IterativeUniformTimeStepSampler
    from scdiff.utils.diffusion import make_beta_schedule

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    n_types, n_batches = 5, 3
    genes = [f"g{i}" for i in range(args.genes)]
    theirs = DiffusionModel(
        genes, cond_num_dict={"cell_type": n_types + 1}, post_cond_num_dict={"batch": n_batches + 1}, **UPSTREAM_OPTIONS
    ).eval()
    ours = ScDiffDenoiser(args.genes, n_types, n_batches).eval()
    mapped = {rename(k): v for k, v in theirs.state_dict().items() if rename(k) is not None}
    missing = sorted(set(ours.state_dict()) - set(mapped))
    if missing:
        raise SystemExit(f"parameters of ours that upstream has no counterpart for: {missing}")
    ours.load_state_dict(mapped, strict=True)

    rng = np.random.default_rng(args.seed)
    x = torch.from_numpy(np.log1p(rng.poisson(1.0, (args.cells, args.genes))).astype(np.float32))
    mask = torch.rand(x.shape) < 0.5
    t = torch.from_numpy(rng.integers(0, 1000, args.cells))
    ct = torch.from_numpy(rng.integers(1, n_types + 1, args.cells))
    b = torch.from_numpy(rng.integers(1, n_batches + 1, args.cells))
    x_noised = GaussianDiffusion(1000).q_sample(x, t)
    with torch.no_grad():
        pred_theirs, _ = theirs(x, x_noised, t, conditions={"batch": b.float(), "cell_type": ct.float()}, mask=mask)
        pred_ours = ours(x * ~mask, x_noised, t, ct, b)
    n_parameters = sum(v.numel() for v in mapped.values())
    diff, scale = float((pred_theirs - pred_ours).abs().max()), float(pred_theirs.abs().max())
    rows = [{"check": "network", "max_abs_diff": diff, "scale": scale, "n_parameters": n_parameters}]

    betas_theirs = make_beta_schedule("linear", 1000, linear_start=1e-4, linear_end=2e-2)
    rows.append({"check": "schedule", "max_abs_diff": float(np.abs(betas_theirs - linear_betas(1000)).max())})
    steps_theirs = [int(s) for s in IterativeUniformTimeStepSampler(1000, 5, 1)(5)]
    rows.append({"check": "time_steps", "equal": steps_theirs == uniform_time_steps(1000, 5), "steps": steps_theirs})

    diffusion = GaussianDiffusion(1000)
    pairs = torch.tensor([[c, bb] for c in range(1, n_types + 1) for bb in range(1, n_batches + 1) if (c + bb) % 4])
    model = types.SimpleNamespace(
        diffusion_model=theirs, num_timesteps=1000, cond_names=["batch", "cell_type"],
        unique_conditions=pairs[:, [1, 0]].float(), q_sample=lambda x_start, t: diffusion.q_sample(x_start, t),
    )  # fmt: skip
    clf = DiffusionClassifier(n_samples_list=[5], to_keep_list=[1], n_trials=1, loss="l2", query_mode="seen")
    torch.manual_seed(args.seed + 1)
    upstream_pred, _ = clf(x, {"batch": b.float(), "cell_type": ct.float()}, model=model)
    torch.manual_seed(args.seed + 1)
    # upstream orders its candidates by torch.unique over (batch, cell type); ours by (cell type, batch): same set
    order = torch.unique(pairs[:, [1, 0]], dim=0)[:, [1, 0]]
    picked = classify(ours, diffusion, x, order, uniform_time_steps(1000, 5))
    ours_pred = order[picked, 0]
    agree = float((upstream_pred["cell_type"].long() == ours_pred).float().mean())
    rows.append({"check": "classifier", "agreement": agree, "cells": args.cells, "candidates": len(pairs)})
    for row in rows:
        print(row)
    write_result(
        args.out,
        "scdiff_parity",
        provenance("benchmarks/scdiff_parity.py", list(argv if argv is not None else sys.argv[1:]), vars(args)),
        rows,
        upstream="OmicsML/scDiff" + (f" @ {args.upstream_commit}" if args.upstream_commit else ""),
        seconds=round(time.perf_counter() - t0, 1),
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
