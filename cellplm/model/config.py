"""Model configuration, read from and written to the upstream ``<name>.config.json`` format.

The released ``20230926_85M.config.json`` mixes model fields with training-script fields. :class:`CellPLMConfig`
keeps the model fields under the upstream names (so a config written here loads upstream and vice versa) and
carries the others along untouched in ``extra``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import ConfigError, InputError

RELEASED_CONFIG = "20230926_85M.config.json"

# Values of upstream switches that this implementation does not build. A config asking for another value is an
# architecture this package cannot load faithfully, so it is refused instead of silently approximated.
_FIXED = {
    "enc_mod": "flowformer",
    "dec_mod": ("nbmlp", "mlp"),  # "mlp" is what the annotation overlay writes; no decoder is built then
    "norm": "groupnorm",
    "cat_pe": False,
    "input_covariate": False,
    "dsbn": False,
    "ecs": False,
    "dar": False,
    "architecture": "OmicsFormer",
}

# Model shapes. "85M" is the released architecture; the others are for CPU pretraining and tests.
SHAPES = {
    "85M": dict(enc_hid=1024, enc_layers=4, enc_head=8, post_latent_dim=512, dec_hid=1024, num_clusters=16),
    "small": dict(enc_hid=256, enc_layers=2, enc_head=4, post_latent_dim=128, dec_hid=256, num_clusters=16),
    "tiny": dict(enc_hid=64, enc_layers=2, enc_head=4, post_latent_dim=32, dec_hid=64, num_clusters=8),
}


@dataclass
class CellPLMConfig:
    """Architecture and masking hyper-parameters (upstream field names)."""

    gene_list: list[str]
    enc_hid: int = 1024  # D, width of cell tokens
    enc_layers: int = 4
    enc_head: int = 8
    post_latent_dim: int = 512  # L, width of the cell embedding
    latent_mod: str = "gmvae"  # "gmvae" (pretraining, zero-shot) or "ae" (fine-tuning)
    num_clusters: int = 16  # K, GMVAE mixture components
    w_li: float = 5.0  # weight of the Gaussian KL term
    w_en: float = 5.0  # weight of the categorical KL term
    lamda: float = 5.0  # free-bits floor of both KL terms
    dec_mod: str = "nbmlp"
    dec_hid: int = 1024
    dec_layers: int = 2  # decoder: dec_layers - 1 hidden blocks; annotation head: dec_layers Linear layers
    model_dropout: float = 0.2
    mask_node_rate: float = 0.75
    mask_feature_rate: float = 0.25
    drop_node_rate: float = 0.3
    max_batch_size: int = 4000
    batch_num: int = 12596  # rows of the decoder's batch-covariate table
    dataset_num: int = 484  # rows of the decoder's dataset-covariate table
    dae: bool = True  # add the masked-entry NB term to the reconstruction loss
    head_type: str | None = None  # None (pretraining: NB decoder), "embedder" or "annotation"
    out_dim: int | None = None  # decoder width (= vocabulary) or number of classes for the annotation head
    spatial_pe: bool = False  # add the 2-D sinusoidal encoding of cell coordinates (upstream ships it disabled)
    extra: dict = field(default_factory=dict)  # fields the model does not read (training-script settings)

    def __post_init__(self):
        if self.enc_hid % self.enc_head:
            raise ConfigError(f"enc_hid ({self.enc_hid}) must be divisible by enc_head ({self.enc_head})")
        if self.enc_hid % 4 or self.dec_hid % 4:
            raise ConfigError("enc_hid and dec_hid must be divisible by 4 (GroupNorm with 4 groups)")
        if self.latent_mod not in ("gmvae", "ae"):
            raise ConfigError(f"latent_mod {self.latent_mod!r} is not supported (gmvae or ae)")
        if self.head_type not in (None, "embedder", "annotation"):
            raise ConfigError(f"head_type {self.head_type!r} is not supported (embedder or annotation)")
        if len(set(self.gene_list)) != len(self.gene_list):
            raise ConfigError("gene_list has duplicate genes")
        if self.out_dim is None:
            self.out_dim = len(self.gene_list)

    @property
    def n_genes(self) -> int:
        return len(self.gene_list)

    # ---- upstream JSON -------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "CellPLMConfig":
        raw = dict(raw)
        for key, allowed in _FIXED.items():
            if key in raw:
                allowed = allowed if isinstance(allowed, tuple) else (allowed,)
                if raw[key] not in allowed:
                    raise InputError(source, f"{key}={raw[key]!r} is an architecture this package does not implement")
        if "gene_list" not in raw:
            raise InputError(source, "no gene_list (the model's gene vocabulary)")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: raw.pop(k) for k in list(raw) if k in names}
        kwargs["gene_list"] = [str(g) for g in kwargs["gene_list"]]
        try:
            return cls(**kwargs, extra=raw)
        except (TypeError, ValueError) as err:
            raise InputError(source, f"invalid model config: {err}") from None

    def to_dict(self) -> dict:
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        for key, value in _FIXED.items():
            out.setdefault(key, value[0] if isinstance(value, tuple) else value)
        out["gene_list"] = list(self.gene_list)
        return out

    @classmethod
    def load(cls, path: str | Path) -> "CellPLMConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(path, "config file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(path, f"not a JSON model config ({err})") from None
        if not isinstance(raw, dict):
            raise InputError(path, "not a JSON model config (expected an object)")
        return cls.from_dict(raw, source=str(path))

    def replace(self, **changes) -> "CellPLMConfig":
        return dataclasses.replace(self, **changes)

    # ---- tasks ---------------------------------------------------------------------------------------------
    def for_embedding(self) -> "CellPLMConfig":
        """The zero-shot embedding model: GMVAE latent kept, decoder dropped."""
        return self.replace(head_type="embedder", latent_mod="gmvae")

    def for_annotation(self, n_classes: int, dropout: float = 0.5) -> "CellPLMConfig":
        """The fine-tuning model of upstream's annotation pipeline: linear latent and a one-layer head."""
        return self.replace(
            head_type="annotation",
            latent_mod="ae",
            dec_mod="mlp",
            dec_layers=1,
            model_dropout=dropout,
            out_dim=n_classes,
            max_batch_size=70000,
        )


def released_config() -> CellPLMConfig:
    """The released 20230926_85M config shipped in this package (no network needed)."""
    path = resources.files("cellplm") / "resources" / RELEASED_CONFIG
    return CellPLMConfig.load(Path(str(path)))


def config_for_shape(shape: str, gene_list: list[str] | None = None, **overrides) -> CellPLMConfig:
    """A pretraining config of a named shape over the released vocabulary (or ``gene_list``)."""
    if shape not in SHAPES:
        raise ConfigError(f"unknown model shape {shape!r}; choose one of {', '.join(SHAPES)}")
    base = released_config()
    genes = base.gene_list if gene_list is None else list(gene_list)
    return base.replace(gene_list=genes, out_dim=len(genes), **{**SHAPES[shape], **overrides})
