"""Run inside .venv-scgpt by tests/test_scgpt.py: tiny scGPT model directories and embedding checks.

python tests/scgpt_helper.py model-dirs ROOT
    TINY pretrained model directories in the released whole-human layout (args.json with the released keys,
    vocab.json with <pad>, <cls>, <eoc>, best_model.pt saved with flash-attention key names (Wqkv) and the
    MVC decoder of pretraining): ROOT/a (seed 0), ROOT/b (seed 1) and ROOT/broken (attention weights left out)
python tests/scgpt_helper.py embed-checks MODEL_DIR OTHER_MODEL_DIR DATA.h5ad
    prints a JSON object of facts about embed_cells, checked by the test
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.simplefilter("ignore")

from cellplm.bench.methods.scgpt import method  # noqa: E402
from cellplm.bench.models.scgpt import embedder, tokenizer, upstream  # noqa: E402
from cellplm.bench.models.scgpt import genes as scgpt_genes  # noqa: E402
from cellplm.bench.models.scgpt import model as scgpt_model  # noqa: E402

SYMBOLS = ["CD3E", "CD4", "CD8A", "MS4A1", "CD14", "LYZ", "NKG7", "GNLY", "PPBP", "FCGR3A", "IL7R", "CCR7"]
VOCAB_GENES = SYMBOLS + ["A1BG", "A2M", "ACTB", "GAPDH"]  # a few genes the test data lack
SHAPE = {"embsize": 32, "nheads": 2, "d_hid": 32, "nlayers": 2, "n_layers_cls": 3}


def released_args(shape: dict) -> dict:
    """args.json with the keys of the released whole-human model (values of a tiny shape)."""
    return {
        "data_source": "tests",
        "save_dir": "tests",
        "load_model": None,
        "n_hvg": None,
        "valid_size_or_ratio": 0.003,
        "dist_backend": "nccl",
        "grad_accu_steps": 1,
        "pad_token": "<pad>",
        "input_style": "binned",
        "input_emb_style": "continuous",
        "n_bins": 51,
        "max_seq_len": 1200,
        "training_tasks": "both",
        "dist_url": "tcp://localhost:0",
        "mask_ratio": [0.25, 0.5, 0.75],
        "trunc_by_sample": True,
        "vocab_path": "vocab.json",
        "rank": 0,
        "batch_size": 32,
        "eval_batch_size": 64,
        "epochs": 1,
        "lr": 0.0001,
        "scheduler_interval": 100,
        "scheduler_factor": 0.99,
        "warmup_ratio_or_step": 10000.0,
        "no_cls": True,
        "no_cce": True,
        "fp16": True,
        "fast_transformer": True,
        "nlayers": shape["nlayers"],
        "nheads": shape["nheads"],
        "embsize": shape["embsize"],
        "d_hid": shape["d_hid"],
        "dropout": 0.2,
        "n_layers_cls": shape["n_layers_cls"],
        "log_interval": 9000,
        "save_interval": 27000,
        "mask_value": -1,
        "pad_value": -2,
        "USE_CLS": False,
        "USE_CCE": False,
        "MVC": True,
        "USE_GENERATIVE_TRAINING": True,
        "world_size": 1,
        "distributed": False,
        "local_rank": 0,
        "gpu": 0,
    }


def make_model_dir(out: Path, seed: int = 0, drop_attention: bool = False) -> dict:
    import torch
    from scgpt.model import TransformerModel

    out.mkdir(parents=True, exist_ok=True)
    token2idx = {t: i for i, t in enumerate(tokenizer.SPECIAL_TOKENS + VOCAB_GENES)}
    (out / "vocab.json").write_text(json.dumps(token2idx, indent=2))
    (out / "args.json").write_text(json.dumps(released_args(SHAPE), indent=2))
    vocab = upstream.GeneVocab.from_dict(token2idx)
    torch.manual_seed(seed)
    model = TransformerModel(
        len(vocab),
        SHAPE["embsize"],
        SHAPE["nheads"],
        SHAPE["d_hid"],
        SHAPE["nlayers"],
        nlayers_cls=SHAPE["n_layers_cls"],
        n_cls=1,
        vocab=vocab,
        dropout=0.2,
        pad_token="<pad>",
        pad_value=-2,
        do_mvc=True,
        input_emb_style="continuous",
        n_input_bins=51,
        cell_emb_style="cls",
        use_fast_transformer=False,
    )
    # the released checkpoints were trained with flash-attention: its fused projection is called Wqkv
    state = {k.replace("self_attn.in_proj_", "self_attn.Wqkv."): v for k, v in model.state_dict().items()}
    if drop_attention:
        state = {k: v for k, v in state.items() if "Wqkv" not in k}
    torch.save(state, out / "best_model.pt")
    return {"n_keys": len(state), "n_wqkv": sum("Wqkv" in k for k in state)}


def embed_checks(model_dir: Path, other_dir: Path, data: Path) -> dict:
    import anndata as ad
    import scipy.sparse as sp
    import torch

    adata = ad.read_h5ad(data)
    facts = {}
    # random initialisation: shape, unit norm, deterministic (also when the model is rebuilt)
    a = embedder.embed_cells(adata, shape="tiny", device="cpu", batch_size=16, max_seq_len=8)
    b = embedder.embed_cells(adata, shape="tiny", device="cpu", batch_size=7, max_seq_len=8)
    embedder._EMBEDDER.clear()
    c = embedder.embed_cells(adata, shape="tiny", device="cpu", batch_size=16, max_seq_len=8)
    facts["random_shape"] = list(a.shape)
    facts["random_unit_norm"] = bool(np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5))
    facts["random_deterministic"] = bool(np.array_equal(a, c))
    facts["random_batch_size_invariant"] = bool(np.allclose(a, b, atol=1e-5))
    facts["random_cells_differ"] = bool(np.abs(a[0] - a[1]).max() > 1e-4)
    # pretrained: the embedding is the checkpoint's own encoder output (computed here by hand from the file)
    e = embedder.embed_cells(adata, model_dir=model_dir, device="cpu", max_seq_len=64)
    args, vocab = scgpt_model.read_model_dir(model_dir)
    state = torch.load(model_dir / "best_model.pt")
    model = scgpt_model.build_model(SHAPE, vocab, 1, 0.0, 51)
    model.load_state_dict(
        {k.replace("Wqkv.", "in_proj_"): v for k, v in state.items() if not k.startswith("mvc_decoder")}, strict=True
    )
    model.eval()
    np.random.seed(0)  # embed_cells' default seed: same tie-breaks in binning
    symbols = np.asarray(adata.var_names, dtype=object)
    binned = tokenizer.bin_values(scgpt_genes.counts_of(adata, "x"), 51)
    batch = tokenizer.tokenize(binned, np.array(vocab(list(symbols)), dtype=int), vocab, 10_000, 64, False)[0]
    with torch.no_grad():
        genes = batch["genes"].long()
        ref = model._encode(genes, batch["values"], src_key_padding_mask=genes.eq(vocab["<pad>"]))[:, 0].numpy()
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    facts["pretrained_shape"] = list(e.shape)
    facts["pretrained_matches_checkpoint"] = bool(np.allclose(e, ref, atol=1e-5))
    facts["pretrained_differs_from_other_weights"] = bool(
        np.abs(e - embedder.embed_cells(adata, model_dir=other_dir, device="cpu", max_seq_len=64)).max() > 1e-3
    )
    # Ensembl ids as var_names are mapped to symbols offline (GENCODE v44)
    table = {
        "CD3E": "ENSG00000198851",
        "CD4": "ENSG00000010610",
        "CD8A": "ENSG00000153563",
        "MS4A1": "ENSG00000156738",
        "CD14": "ENSG00000170458",
        "LYZ": "ENSG00000090382",
    }
    sub = adata[:, list(table)].copy()
    ens = sub.copy()
    ens.var_names = [table[s] for s in sub.var_names]
    mapped, source = scgpt_genes.gene_symbols(ens)
    facts["ensembl_mapped"] = list(mapped) == list(table) and "GENCODE" in source
    counts = sp.csr_matrix(np.random.default_rng(0).negative_binomial(2, 0.3, size=(300, 400)).astype(np.float32))
    mask, info = scgpt_genes.select_hvg(counts, 100)
    facts["hvg_selected"], facts["hvg_flavor"] = int(mask.sum()), info["hvg"]
    try:
        method.ScGPTAnnotator(epoch=3).fit(adata)
        facts["unknown_parameter_refused"] = False
    except ValueError as e:
        facts["unknown_parameter_refused"] = "unknown scGPT (fine-tuned) parameter(s): epoch" in str(e)
    facts["ensembl_embedding_equal"] = bool(
        np.allclose(
            embedder.embed_cells(ens, model_dir=model_dir, device="cpu", min_gene_share=0, min_count_share=0),
            embedder.embed_cells(sub, model_dir=model_dir, device="cpu", min_gene_share=0, min_count_share=0),
            atol=1e-6,
        )
    )
    return facts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("model-dirs")
    m.add_argument("root", type=Path)
    e = sub.add_parser("embed-checks")
    e.add_argument("model_dir", type=Path)
    e.add_argument("other_dir", type=Path)
    e.add_argument("data", type=Path)
    args = p.parse_args(argv)
    if args.command == "model-dirs":
        print(
            json.dumps(
                {
                    "a": make_model_dir(args.root / "a", 0),
                    "b": make_model_dir(args.root / "b", 1),
                    "broken": make_model_dir(args.root / "broken", 0, drop_attention=True),
                }
            )
        )
    else:
        print(json.dumps(embed_checks(args.model_dir, args.other_dir, args.data)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
