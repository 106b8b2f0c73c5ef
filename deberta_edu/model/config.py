"""One dataclass describes every model of the course; variants of the paper's ablation are configs.

A variant is a set of field values, never an ``if`` in the model code:

    deberta   relative attention with c2c + c2p + p2c, Enhanced Mask Decoder     (the paper's model)
    no_emd    the same, MLM head on the last layer                               (−EMD, Table 4)
    no_c2p    c2c + p2c                                                          (−C2P)
    no_p2c    c2c + c2p                                                          (−P2C)
    bert      absolute positions added at the input, content-to-content only    (BERT/RoBERTa-style)

The attention layout is a separate choice. The defaults are the released v2/v3 layout: positions through the
content projections (share_att_key, which the paper introduces only for its 1.5B model, §5.3), a LayerNorm on
the relative table and 256 log buckets (neither is in the paper). The layout of eq. (4), with W_{q,r}, W_{k,r}
of their own and the plain clamp of eq. (3), is ``layout="v1", share_att_key=False, norm_rel_ebd=False,
position_buckets=-1`` (``ablation.plan.LAYOUTS["v1"]``); in every layout p2c reads δ(i, j), as the released
checkpoints do (attention.py says where eq. (4) differs).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

TERMS = ("c2c", "c2p", "p2c", "p2p")
POSITION_TERMS = ("c2p", "p2c", "p2p")
ACTIVATION_NAMES = ("gelu", "gelu_new", "relu", "tanh")  # the keys of encoder.ACTIVATIONS

# The least value of each integer field (max_relative_positions and position_buckets take -1 for "off").
_MIN_SIZES = {
    "vocab_size": 1, "hidden_size": 1, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 1,
    "max_position_embeddings": 1, "type_vocab_size": 0, "pad_token_id": 0, "max_relative_positions": -1,
    "position_buckets": -1, "conv_kernel_size": 0, "conv_groups": 1,
}
_WHY = {
    "num_attention_heads": " (each head reads hidden_size / num_attention_heads dimensions)",
    "max_position_embeddings": " (the absolute table needs a row per position; DeBERTa uses 512)",
    "num_hidden_layers": " (the EMD re-applies the last layer, and the encoder is its layers)",
    "vocab_size": " (one row per token id; the course's tokenizers have 8000)",
}

VARIANTS: dict[str, dict] = {
    "deberta": {},
    "no_emd": {"emd": False},
    "no_c2p": {"terms": ("c2c", "p2c")},
    "no_p2c": {"terms": ("c2c", "c2p")},
    "bert": {"relative_attention": False, "terms": ("c2c",), "position_biased_input": True, "emd": False},
}

SIZES: dict[str, dict] = {
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512},
    "mini": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
    "small": {"hidden_size": 512, "num_hidden_layers": 6, "num_attention_heads": 8, "intermediate_size": 2048},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}


def check_flags(config) -> None:
    """Every true/false field of a dataclass holds True or False: ``--set model.emd=no`` would otherwise be a
    non-empty string, which Python reads as true."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.type in ("bool", bool) and not isinstance(value, bool):
            raise ValueError(f"{f.name} must be true or false, got {value!r} ({type(value).__name__})")


@dataclass
class DebertaConfig:
    vocab_size: int = 8000
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"  # the exact (erf) gelu, as in the released models
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512  # absolute table: used by EMD and by the BERT-style input
    type_vocab_size: int = 0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-7
    pad_token_id: int = 0

    # Attention terms (paper eq. 2): any of c2c, c2p, p2c, p2p. DeBERTa uses c2c + c2p + p2c.
    terms: tuple[str, ...] = ("c2c", "c2p", "p2c")
    relative_attention: bool = True
    max_relative_positions: int = -1  # k of eq. (3); -1 means max_position_embeddings
    position_buckets: int = 256  # v2/v3 log buckets; -1 for the plain clamp of eq. (3) (v1)
    share_att_key: bool = True  # v2/v3: positions use the content projections W_q, W_k
    norm_rel_ebd: bool = True  # v2/v3: LayerNorm on the relative-position table
    layout: str = "v2"  # "v1": fused in_proj with q/v biases; "v2": query/key/value projections
    conv_kernel_size: int = 0  # v2: an optional convolution beside the first block
    conv_groups: int = 1
    conv_act: str = "tanh"

    position_biased_input: bool = False  # add absolute positions at the input (BERT-style baseline)
    emd: bool = True  # Enhanced Mask Decoder before the MLM head
    head_layout: str = "official"  # transformers naming on export: "official" lm_predictions.* or "legacy" cls.*

    def __post_init__(self):
        self._check_sizes()
        check_flags(self)
        self.terms = tuple(self.terms)
        unknown = [t for t in self.terms if t not in TERMS]
        if unknown:
            raise ValueError(f"unknown attention term(s) {unknown}; choose from {TERMS}")
        if not self.terms:
            raise ValueError("at least one attention term is needed, e.g. terms=('c2c',)")
        if len(set(self.terms)) < len(self.terms):  # each term counts once in the scale 1/sqrt(d (1 + #positions))
            raise ValueError(f"an attention term is given twice in {self.terms}; name each once")
        if self.position_terms and not self.relative_attention:
            raise ValueError(
                f"terms {self.position_terms} need relative_attention=True (they read the relative table)"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.layout not in ("v1", "v2"):
            raise ValueError(f"layout must be 'v1' or 'v2', got {self.layout!r}")
        if self.layout == "v1" and self.share_att_key:
            raise ValueError("share_att_key is a v2/v3 feature; set share_att_key=False for layout='v1'")
        if self.emd and self.position_biased_input:
            raise ValueError(
                "emd=True with position_biased_input=True would add the absolute positions twice, at the input and "
                "again in the EMD; the released code runs no EMD when positions are at the input. Set emd=False "
                "(the BERT-style baseline) or position_biased_input=False (DeBERTa)"
            )
        if self.head_layout not in ("official", "legacy"):
            raise ValueError(f"head_layout must be 'official' or 'legacy', got {self.head_layout!r}")
        if self.max_relative_positions < 1:
            self.max_relative_positions = self.max_position_embeddings
        if self.relative_attention and 0 < self.position_buckets and (
            self.max_relative_positions <= self.position_buckets // 2 + 1
        ):
            raise ValueError(
                f"position_buckets={self.position_buckets} log-buckets distances beyond "
                f"{self.position_buckets // 2}, so max_relative_positions (here {self.max_relative_positions}) "
                f"must exceed {self.position_buckets // 2 + 1}; use fewer buckets, a larger "
                "max_relative_positions, or position_buckets=-1 for the plain clamp of eq. (3)"
            )

    def _check_sizes(self):
        """Sizes are whole numbers in range: a mistake here would otherwise surface deep inside torch."""
        for name, low in _MIN_SIZES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(
                    f"{name} must be a whole number, got {value!r} ({type(value).__name__}); "
                    f"write it without quotes, e.g. {name}={_DEFAULTS[name]}"
                )
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}{_WHY.get(name, '')}")
            setattr(self, name, int(value))
        if not self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id={self.pad_token_id} must be a token id, below vocab_size={self.vocab_size}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if not (isinstance(p, numbers.Real) and 0.0 <= p < 1.0):
                raise ValueError(f"{name} must be a probability in [0, 1), got {p!r}; the course uses 0.1")
        if not (isinstance(self.initializer_range, numbers.Real) and self.initializer_range > 0):
            raise ValueError(f"initializer_range must be a positive number (the std of the initial weights), got "
                             f"{self.initializer_range!r}; the course uses 0.02")
        if not (isinstance(self.layer_norm_eps, numbers.Real) and self.layer_norm_eps > 0):
            raise ValueError(f"layer_norm_eps must be a positive number, got {self.layer_norm_eps!r} (e.g. 1e-7)")
        if self.conv_kernel_size > 0 and self.conv_kernel_size % 2 == 0:
            raise ValueError(
                f"conv_kernel_size must be odd (a window centred on each token keeps the length), got "
                f"{self.conv_kernel_size}; use {self.conv_kernel_size + 1}, or 0 for no convolution"
            )
        if self.conv_kernel_size > 0 and self.hidden_size % self.conv_groups:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of conv_groups ({self.conv_groups})"
            )
        if self.position_buckets == 1:
            raise ValueError("position_buckets must be >= 2 for log buckets, or -1 for the plain clamp of eq. (3)")
        for name in ("hidden_act", "conv_act"):
            if getattr(self, name) not in ACTIVATION_NAMES:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose from {ACTIVATION_NAMES}")

    def check(self) -> None:
        """Every check again: a model built from a config whose fields were set after it was made runs them."""
        self.__post_init__()

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def position_terms(self) -> tuple[str, ...]:
        return tuple(t for t in self.terms if t in POSITION_TERMS)

    @property
    def needs_absolute_positions(self) -> bool:
        return self.emd or self.position_biased_input

    def replace(self, **changes) -> DebertaConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DebertaConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DebertaConfig)}


def make_config(size: str = "mini", variant: str = "deberta", **overrides) -> DebertaConfig:
    """A named size (tiny, mini, small, base) and ablation variant, with any field overridden."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {sorted(VARIANTS)}")
    return DebertaConfig(**{**SIZES[size], **VARIANTS[variant], **overrides})
