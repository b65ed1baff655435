"""The scGPT model: a model directory (whole-human layout) or a vocabulary of the training genes, the tutorial's
``TransformerModel`` for annotation, its weights (every key reported), the device and the forward pass."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

from .... import runtime
from ...errors import InputError, NotApplicable
from .tokenizer import PAD_TOKEN, PAD_VALUE, SPECIAL_TOKENS
from .upstream import GeneVocab, TransformerModel, load_pretrained, torch

MODEL_FILES = ("args.json", "vocab.json", "best_model.pt")

# Shapes for random initialisation (args.json key names). "small" is the notebook's own from-scratch model
# (layer_size 128, nlayers 4, nhead 4); "whole_human" is the released whole-human checkpoint's shape.
SHAPES = {
    "tiny": {"embsize": 32, "nheads": 2, "d_hid": 32, "nlayers": 2, "n_layers_cls": 3},
    "small": {"embsize": 128, "nheads": 4, "d_hid": 128, "nlayers": 4, "n_layers_cls": 3},
    "whole_human": {"embsize": 512, "nheads": 8, "d_hid": 512, "nlayers": 12, "n_layers_cls": 3},
}


def read_model_dir(model_dir) -> tuple[dict, GeneVocab]:
    """``args.json`` and ``vocab.json`` of a model directory in the whole-human layout (special tokens added)."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise InputError(folder, "scGPT model directory not found")
    for name in MODEL_FILES:
        if not (folder / name).is_file():
            raise InputError(
                folder / name,
                "missing; a scGPT model directory holds args.json, vocab.json and "
                "best_model.pt (the layout of the released whole-human checkpoint)",
            )
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
        len(vocab),
        shape["embsize"],
        shape["nheads"],
        shape["d_hid"],
        shape["nlayers"],
        nlayers_cls=shape.get("n_layers_cls", 3),
        n_cls=n_cls,
        vocab=vocab,
        dropout=dropout,
        pad_token=PAD_TOKEN,
        pad_value=pad_value,
        do_mvc=False,
        do_dab=False,
        use_batch_labels=False,
        domain_spec_batchnorm=False,
        input_emb_style="continuous",
        n_input_bins=n_bins,
        cell_emb_style="cls",
        mvc_decoder_style="inner product",
        ecs_threshold=0.0,
        explicit_zero_prob=False,
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
        raise InputError(
            weights_path,
            f"refused: its pickle calls {what}, and unpickling it could run code "
            "(a scGPT best_model.pt is a plain state dict of tensors)",
        ) from None
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
        raise InputError(
            weights_path,
            f"no parameter matches the model built from args.json ({len(state)} keys, e.g. {next(iter(state), '-')})",
        )
    if backbone_new:
        why = "shape differs" if any(k in mismatched for k in backbone_new) else "absent from the checkpoint"
        raise InputError(
            weights_path,
            f"{len(backbone_new)} encoder/transformer weights would stay random ({why}), "
            f"e.g. {backbone_new[0]}; args.json and best_model.pt disagree",
        )
    load_pretrained(model, state, strict=False, verbose=False)  # the authors' loader (renames Wqkv the same way)
    after = model.state_dict()
    not_applied = [k for k in loaded if not torch.equal(after[k].cpu(), renamed[k].to(after[k].dtype))]
    if not_applied:
        raise RuntimeError(
            f"{weights_path}: {len(not_applied)} matching weights were not applied, e.g. {not_applied[0]}"
        )
    return {
        "n_checkpoint_keys": len(state),
        "n_model_keys": len(own),
        "n_loaded": len(loaded),
        "n_renamed_Wqkv": sum("Wqkv." in k for k in state),
        "new": new,
        "unused": unused,
        "mismatched": mismatched,
        "all_backbone_loaded": True,
    }


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


def shape_of(name: str) -> dict:
    if name not in SHAPES:
        raise ValueError(f"unknown scGPT shape {name!r}; choose one of {', '.join(SHAPES)}")
    return dict(SHAPES[name])


def describe_shape(name: str, shape: dict) -> str:
    return f"shape {name}: {shape['nlayers']} layers, d_model {shape['embsize']}, {shape['nheads']} heads"


def weights_provenance(model_dir, checkpoint_kind: str, shape_name: str) -> dict:
    """What the run record says about the weights: the model directory and how it was obtained (``checkpoint_kind``,
    "released" when the workflow fetched it), or random initialisation of the named shape."""
    if model_dir:
        return {
            "checkpoint": str(Path(model_dir)),
            "checkpoint_kind": checkpoint_kind,
            "shape": "from args.json",
            "weights": f"pretrained: {model_dir}",
        }
    described = describe_shape(shape_name, shape_of(shape_name))
    return {
        "checkpoint": f"random initialisation ({described})",
        "checkpoint_kind": "random initialisation",
        "shape": shape_name,
        "weights": f"random initialisation ({described})",
    }


def autocast(device: torch.device, amp: bool):
    return torch.cuda.amp.autocast(enabled=bool(amp and device.type == "cuda"))


def forward(model, batch: dict, vocab, device, amp: bool, values=None):
    genes = batch["genes"].to(device).long()
    values = (batch["values"] if values is None else values).to(device)
    padding = genes.eq(vocab[PAD_TOKEN])
    with autocast(device, amp):
        return model(
            genes,
            values,
            src_key_padding_mask=padding,
            batch_labels=None,
            CLS=True,
            CCE=False,
            MVC=False,
            ECS=False,
            do_sample=False,
        )
