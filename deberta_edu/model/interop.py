"""Conversion to and from Hugging Face transformers' DeBERTa (v1 ``Deberta*`` and v2/v3 ``DebertaV2*``).

Like nanoGPT's ``from_pretrained``: translate the config, rename the keys, check every shape. The
parity tests run both implementations on the same weights and compare the outputs.

Released checkpoints keep two things that transformers throws away by default: the absolute position
table (``deberta.embeddings.position_embeddings``, read by the EMD; transformers builds none when
``position_biased_input`` is False) and the official MLM head (``lm_predictions.lm_head.*``; transformers
loads it only with ``legacy=False``, its config's default being True). ``from_hf`` on a checkpoint *directory* reads the weights file itself,
so those survive, and the EMD is switched on when both are present and ``position_biased_input`` is False.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import torch

from .checkpoint import check_sizes
from .config import DebertaConfig
from .emd import DebertaForMaskedLM
from .encoder import DebertaModel

# (our name, transformers' name) inside the encoder model; the order matters only for readability.
_RENAMES = [
    (r"embeddings\.norm\.", "embeddings.LayerNorm."),
    (r"encoder\.rel_norm\.", "encoder.LayerNorm."),
    (r"encoder\.conv\.norm\.", "encoder.conv.LayerNorm."),
    (r"encoder\.layers\.(\d+)\.attention\.", r"encoder.layer.\1.attention.self."),
    (r"encoder\.layers\.(\d+)\.attention_out\.", r"encoder.layer.\1.attention.output.dense."),
    (r"encoder\.layers\.(\d+)\.attention_norm\.", r"encoder.layer.\1.attention.output.LayerNorm."),
    (r"encoder\.layers\.(\d+)\.ffn\.ffn_in\.", r"encoder.layer.\1.intermediate.dense."),
    (r"encoder\.layers\.(\d+)\.ffn\.ffn_out\.", r"encoder.layer.\1.output.dense."),
    (r"encoder\.layers\.(\d+)\.ffn_norm\.", r"encoder.layer.\1.output.LayerNorm."),
]
_HEAD = {
    "official": {"head.dense.": "lm_predictions.lm_head.dense.", "head.norm.": "lm_predictions.lm_head.LayerNorm.",
                 "head.bias": "lm_predictions.lm_head.bias"},
    "legacy": {"head.dense.": "cls.predictions.transform.dense.",
               "head.norm.": "cls.predictions.transform.LayerNorm.", "head.bias": "cls.predictions.bias"},
}


def _ours_to_hf_key(key: str, mlm: bool, head_layout: str) -> str:
    for ours, theirs in _HEAD[head_layout].items():
        if key.startswith(ours):
            return theirs + key[len(ours):]
    if mlm:
        key = key.removeprefix("deberta.")
    for pattern, repl in _RENAMES:
        key = re.sub("^" + pattern, repl, key)
    return ("deberta." + key) if mlm else key


# --- configs ----------------------------------------------------------------------------------------
DEBERTA_TYPES = ("deberta", "deberta-v2")  # transformers' model_type of DeBERTa v1, and of v2/v3
REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def check_hf_config(c, where: str = "the config") -> None:
    """A DeBERTa config with the sizes a model needs, or a ValueError that says what is not."""
    if not isinstance(c, dict):
        raise ValueError(f"{where} holds a {type(c).__name__}, not a JSON object of settings")
    if c.get("model_type", "deberta-v2") not in DEBERTA_TYPES:
        raise ValueError(
            f"{where} describes a {c['model_type']!r} model, not a DeBERTa (model_type 'deberta' or "
            "'deberta-v2'); from_hf converts only DeBERTa v1, v2 and v3 checkpoints"
        )
    missing = [k for k in REQUIRED if k not in c]
    if missing:
        raise ValueError(
            f"{where} lacks {', '.join(missing)}; a DeBERTa config needs all of {', '.join(REQUIRED)}. "
            "Write the checkpoint again with save_pretrained()."
        )


def config_from_hf(hf_config, emd: bool = False) -> DebertaConfig:
    c = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
    check_hf_config(c)
    v2 = c.get("model_type", "deberta-v2") != "deberta"
    if c.get("embedding_size", c["hidden_size"]) != c["hidden_size"]:
        raise ValueError(f"embedding_size {c['embedding_size']} != hidden_size {c['hidden_size']} is not supported")
    if c.get("talking_head"):
        raise ValueError("talking-head attention (an early v1 option) is not supported")
    pos_att_type = c.get("pos_att_type") or []
    if isinstance(pos_att_type, str):
        pos_att_type = [t.strip() for t in pos_att_type.lower().split("|")]
    relative = bool(c.get("relative_attention", False))
    norm_rel = c.get("norm_rel_ebd", "none") or "none"
    return DebertaConfig(
        vocab_size=c["vocab_size"],
        hidden_size=c["hidden_size"],
        num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=c["num_attention_heads"],
        intermediate_size=c["intermediate_size"],
        hidden_act=c.get("hidden_act", "gelu"),
        hidden_dropout_prob=c.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=c.get("attention_probs_dropout_prob", 0.1),
        max_position_embeddings=c.get("max_position_embeddings", 512),
        type_vocab_size=c.get("type_vocab_size", 0),
        initializer_range=c.get("initializer_range", 0.02),
        layer_norm_eps=c.get("layer_norm_eps", 1e-7),
        pad_token_id=c.get("pad_token_id", 0) or 0,
        terms=("c2c", *([t for t in ("c2p", "p2c") if t in pos_att_type] if relative else [])),
        relative_attention=relative,
        max_relative_positions=c.get("max_relative_positions", -1),
        position_buckets=c.get("position_buckets", -1) if v2 else -1,
        share_att_key=bool(c.get("share_att_key", False)) if v2 else False,
        norm_rel_ebd=v2 and "layer_norm" in norm_rel.lower(),
        layout="v2" if v2 else "v1",
        conv_kernel_size=c.get("conv_kernel_size", 0) if v2 else 0,
        conv_groups=c.get("conv_groups", 1),
        conv_act=c.get("conv_act", "tanh"),
        position_biased_input=bool(c.get("position_biased_input", True)),
        emd=emd,
        head_layout="legacy" if c.get("legacy", True) else "official",
    )


def config_to_hf(config: DebertaConfig):
    from transformers import DebertaConfig as HFDebertaConfig
    from transformers import DebertaV2Config

    if "p2p" in config.terms:
        raise ValueError("transformers has no p2p term; remove 'p2p' from terms to export")
    if config.relative_attention and "c2c" not in config.terms:
        raise ValueError("transformers always computes c2c; keep 'c2c' in terms to export")
    common = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        initializer_range=config.initializer_range,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id,
        relative_attention=config.relative_attention,
        max_relative_positions=config.max_relative_positions,
        pos_att_type=list(config.position_terms),
        position_biased_input=config.position_biased_input,
        legacy=config.head_layout == "legacy",
    )
    if config.layout == "v1":
        return HFDebertaConfig(**common)
    return DebertaV2Config(
        **common,
        position_buckets=config.position_buckets,
        share_att_key=config.share_att_key,
        norm_rel_ebd="layer_norm" if config.norm_rel_ebd else "none",
        conv_kernel_size=config.conv_kernel_size,
        conv_groups=config.conv_groups,
        conv_act=config.conv_act,
    )


# --- weights ----------------------------------------------------------------------------------------
def _load_dir(path: Path):
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path / 'config.json'} is not valid JSON ({err}); write it again with save_pretrained()") from err
    check_hf_config(config, str(path / "config.json"))
    files = sorted(path.glob("*.safetensors")) or [path / "pytorch_model.bin"]
    if not files[0].exists():
        raise ValueError(f"{path} has no *.safetensors or pytorch_model.bin; write it with save_pretrained()")
    state = {}
    for f in files:
        try:
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file

                state.update(load_file(f))
            else:  # weights_only=True: tensors only, never arbitrary pickled code
                state.update(torch.load(f, map_location="cpu", weights_only=True))
        except Exception as err:  # safetensors' and torch's own errors name neither the file nor the fix
            raise ValueError(f"{f} cannot be read, cut short or damaged? ({type(err).__name__}: {err}); "
                             "write it again with save_pretrained()") from None
    return config, state


def _read(model_or_dir) -> tuple[dict, dict, bool, str]:
    """(config dict, state dict, has an MLM head, what it is) of a directory or a transformers object."""
    if isinstance(model_or_dir, (str, Path)):
        path = Path(model_or_dir)
        if not (path / "config.json").exists():
            raise ValueError(f"{path} is not a transformers checkpoint directory (no config.json)")
        hf_config, state = _load_dir(path)
        archs = hf_config.get("architectures") or []
        mlm = any(a.endswith("ForMaskedLM") for a in archs) or any(
            k.startswith(("lm_predictions.", "cls.predictions.")) for k in state
        )
        return hf_config, state, mlm, f"{path} ({', '.join(archs) or 'no architecture named'})"
    name = type(model_or_dir).__name__
    if isinstance(model_or_dir, (DebertaModel, DebertaForMaskedLM)):
        raise TypeError(f"this {name} is a deberta_edu model already; to_hf(model) makes a transformers one")
    if not (hasattr(model_or_dir, "state_dict") and hasattr(getattr(model_or_dir, "config", None), "to_dict")):
        raise TypeError(
            f"from_hf takes a transformers DeBERTa model or the directory save_pretrained() wrote, got a {name}"
        )
    hf_config = model_or_dir.config.to_dict()
    check_hf_config(hf_config, f"the config of {name}")
    return hf_config, model_or_dir.state_dict(), name.endswith("ForMaskedLM"), name


def _encoder_only(state: dict, what: str) -> dict:
    """The encoder's weights of a checkpoint without an MLM head: bare, or under ``deberta.`` (a task head's)."""
    if "embeddings.word_embeddings.weight" in state:
        return state
    if "deberta.embeddings.word_embeddings.weight" not in state:
        groups = sorted({k.split(".")[0] for k in state})
        raise ValueError(
            f"{what} holds no DeBERTa encoder: neither 'embeddings.word_embeddings.weight' nor "
            f"'deberta.embeddings.word_embeddings.weight' is among its weights (groups: {', '.join(groups)})"
        )
    left = sorted({k.split(".")[0] for k in state if not k.startswith("deberta.")})
    warnings.warn(
        f"{what} has no MLM head: loaded its encoder (deberta.*) as a DebertaModel; "
        f"left out {', '.join(left) or 'nothing'}, which deberta_edu does not implement",
        stacklevel=3,
    )
    return {k.removeprefix("deberta."): v for k, v in state.items() if k.startswith("deberta.")}


def from_hf(model_or_dir, emd: bool | None = None):
    """A transformers DeBERTa (object, or directory written by ``save_pretrained``) as a deberta_edu model.

    ``DebertaModel`` / ``DebertaV2Model`` become our DebertaModel; ``*ForMaskedLM`` our DebertaForMaskedLM;
    a checkpoint with another head (sequence classification, replaced-token detection) gives its encoder as
    a DebertaModel, with a warning that says what was left out.
    ``emd=None`` turns the EMD on only where the weights carry what it needs (an absolute position table
    that the input does not use, and the official ``lm_predictions`` head); transformers objects never do.
    """
    hf_config, state, mlm, what = _read(model_or_dir)
    if not mlm:
        state = _encoder_only(state, what)
    prefix = "deberta." if mlm else ""
    has_table = prefix + "embeddings.position_embeddings.weight" in state
    official_head = any(k.startswith("lm_predictions.lm_head.") for k in state)
    if mlm and official_head:
        hf_config["legacy"] = False
    if emd is None:
        emd = mlm and has_table and official_head and not hf_config.get("position_biased_input", True)
    if emd and not mlm:
        raise ValueError("the EMD belongs to a masked-LM model; this checkpoint has no MLM head")
    config = config_from_hf(hf_config, emd=emd)
    if emd and not has_table:
        raise ValueError(
            "emd=True needs the absolute position table (deberta.embeddings.position_embeddings.weight), "
            "which this checkpoint does not have"
        )
    check_sizes(config, state, prefix, what)
    cls = DebertaForMaskedLM if mlm else DebertaModel
    with torch.device("meta"):  # names and shapes first, without allocating a single weight
        expected = {k: v.shape for k, v in cls(config).state_dict().items()}
    new_state = {}
    for key, shape in expected.items():
        theirs = _ours_to_hf_key(key, mlm, config.head_layout)
        if theirs not in state:
            raise ValueError(f"the checkpoint has no {theirs!r}, which {key!r} needs")
        if state[theirs].shape != shape:
            raise ValueError(f"{theirs}: shape {tuple(state[theirs].shape)}, expected {tuple(shape)}")
        new_state[key] = state[theirs]
    model = cls(config)
    model.load_state_dict(new_state)
    return model


def to_hf(model):
    """Our DebertaModel / DebertaForMaskedLM as the equivalent transformers model (same weights).

    transformers has no EMD: an exported EMD model puts its head on the last layer, as ``config.emd=False``
    would, and its absolute position table is not carried over (a warning says so).
    """
    from transformers import DebertaForMaskedLM as HFDebertaForMaskedLM
    from transformers import DebertaModel as HFDebertaModel
    from transformers import DebertaV2ForMaskedLM, DebertaV2Model

    config = model.config
    mlm = isinstance(model, DebertaForMaskedLM)
    if config.emd:
        warnings.warn(
            "transformers does not implement the Enhanced Mask Decoder: the exported model applies the MLM "
            "head to the last layer and drops the absolute position table",
            stacklevel=2,
        )
    hf_config = config_to_hf(config)
    cls = {("v1", False): HFDebertaModel, ("v1", True): HFDebertaForMaskedLM,
           ("v2", False): DebertaV2Model, ("v2", True): DebertaV2ForMaskedLM}[(config.layout, mlm)]
    hf = cls(hf_config)
    hf_state = hf.state_dict()
    new_state = {}
    for key, value in model.state_dict().items():
        theirs = _ours_to_hf_key(key, mlm, config.head_layout)
        if theirs in hf_state:
            new_state[theirs] = value
    if mlm and config.head_layout == "legacy":  # tied copies that transformers keeps as separate keys
        new_state["cls.predictions.decoder.weight"] = model.deberta.embeddings.word_embeddings.weight
        new_state["cls.predictions.decoder.bias"] = model.head.bias
    missing = sorted(set(hf_state) - set(new_state))
    if missing:
        raise ValueError(f"could not fill transformers keys {missing}")
    hf.load_state_dict(new_state)
    hf.eval()
    return hf
