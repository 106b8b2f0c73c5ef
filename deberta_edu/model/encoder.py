"""The DeBERTa encoder: embeddings -> N x [disentangled attention -> feed-forward] -> hidden states.

Post-LN blocks as in BERT and the released DeBERTa. Released DeBERTa adds no absolute position at
the input: every layer sees positions only through the relative table, shared by all layers
(layer-normed in v2/v3). The BERT-style baseline adds an absolute position table at the input instead.

One mask inside the model: ``keep`` (B, L) bool, True at the real tokens, read from the user's
``attention_mask`` (1 = token, 0 = padding, as in transformers) once per forward. The encoder builds it,
the relative table and the absolute positions once, and hands them on in ``EncoderState`` with the output
of layer L − 1, which is all the Enhanced Mask Decoder needs besides the last layer itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionDetails, RelativeTable, build_attention
from .config import DebertaConfig
from .positions import relative_rows_and_index, table_span

ACTIVATIONS = {
    "gelu": F.gelu,  # exact (erf) gelu, as in the released models
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "tanh": torch.tanh,
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _described(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return f"an object of type {type(x).__name__}" + (f" and shape {tuple(x.shape)}" if hasattr(x, "shape") else "")


def check_ids(ids, name: str, size: int, limit: str, hint: str, shape=None) -> None:
    """``ids``: an integer tensor (batch, length), length >= 1, every value in [0, size); ``limit`` says why."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch tensor of shape (batch, length), got {_described(ids)}; "
            f"convert it with torch.as_tensor({name}, dtype=torch.long)."
        )
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool or ids.dim() != 2:
        raise ValueError(
            f"{name} must be an integer tensor of shape (batch, length); got {_described(ids)}. "
            f"For a single sequence use {name}.unsqueeze(0)."
        )
    if shape is not None and ids.shape != shape:
        raise ValueError(f"{name} has shape {tuple(ids.shape)} but input_ids has shape {tuple(shape)}; they must match.")
    if ids.size(1) == 0:
        raise ValueError(f"{name} has length 0 (shape {tuple(ids.shape)}); a sequence needs at least one token.")
    if ids.size(0) == 0:
        raise ValueError(f"{name} has shape {tuple(ids.shape)}: a batch of no sequences; give at least one.")
    if ids.dtype not in (torch.long, torch.int32):  # what nn.Embedding takes
        raise ValueError(f"{name} must be torch.long (or int32), got {ids.dtype}; convert it with {name}.long().")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
        bad = ids[(ids < 0) | (ids >= size)][0].item()
        raise ValueError(f"{name} contains {bad}, but ids must lie in [0, {size - 1}] ({limit}). {hint}")


def check_mask(mask, shape) -> None:
    """``attention_mask``: the shape of input_ids, 1 (or True) at real tokens and 0 at padding, nothing else."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(
            f"attention_mask must be a torch tensor like input_ids, got {_described(mask)}; "
            "convert it with torch.as_tensor(attention_mask)."
        )
    if mask.shape != shape:
        raise ValueError(
            f"attention_mask has shape {tuple(mask.shape)} but input_ids has shape "
            f"{tuple(shape)}; they must match (1 for real tokens, 0 for padding)."
        )
    if mask.dtype != torch.bool and mask.numel():
        bad = mask[(mask != 0) & (mask != 1)]  # NaN compares unequal to both, so it is caught too
        if bad.numel():
            raise ValueError(
                f"attention_mask contains {bad[0].item()}, but it may hold only 1 (a real token) and 0 "
                "(padding); a mask is not a weight. Build it with (input_ids != pad_id).long()."
            )


@dataclass
class EncoderState:
    """What the encoder built once in a forward pass, handed to what comes after it (the EMD)."""

    keep: torch.Tensor  # (B, L) bool, True at real tokens: the keys attention may read
    rel: RelativeTable | None  # the relative table's rows and δ into them, shared by all layers
    positions: torch.Tensor | None  # (1, L, D) absolute position embeddings, when the model has them
    penultimate: torch.Tensor  # (B, L, D) output of layer L − 1 (the embeddings when L = 1)


@dataclass
class ModelOutput:
    last_hidden_state: torch.Tensor  # (B, L, D)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings, then each layer's output
    attentions: tuple[AttentionDetails, ...] | None = None  # per layer, when return_details=True
    encoder_state: EncoderState | None = None  # what the EMD reads; always set by DebertaModel


class Embeddings(nn.Module):
    """Word embeddings (+ absolute positions only for the BERT-style input), LayerNorm, dropout."""

    def __init__(self, config: DebertaConfig):
        super().__init__()
        D = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, D, padding_idx=config.pad_token_id)
        # The absolute table exists when something reads it: the BERT-style input or the EMD.
        self.position_embeddings = (
            nn.Embedding(config.max_position_embeddings, D) if config.needs_absolute_positions else None
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, D) if config.type_vocab_size else None
        self.position_biased_input = config.position_biased_input
        self.norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, keep, token_type_ids=None):
        x = self.word_embeddings(input_ids)  # (B, L, D)
        positions = None
        if self.position_embeddings is not None:
            positions = self.position_embeddings.weight[: input_ids.size(1)].unsqueeze(0)  # (1, L, D)
            if self.position_biased_input:
                x = x + positions
        if self.token_type_embeddings is not None:
            tt = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
            x = x + self.token_type_embeddings(tt)
        # Padded tokens start at exactly zero: where(), not a product, so that a NaN or inf in a padded
        # token's embedding (NaN × 0 = NaN) cannot reach the real tokens through the values of attention.
        x = torch.where(keep.unsqueeze(-1), self.norm(x), 0.0)  # (B, L, D)
        return self.dropout(x), positions


class FeedForward(nn.Module):
    def __init__(self, config: DebertaConfig):
        super().__init__()
        self.ffn_in = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = activation(config.hidden_act)

    def forward(self, x):
        return self.ffn_out(self.act(self.ffn_in(x)))


class Layer(nn.Module):
    """One post-LN block. ``query_states`` lets the EMD ask new questions of the same keys and values."""

    def __init__(self, config: DebertaConfig):
        super().__init__()
        self.attention = build_attention(config)
        self.attention_out = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, keep, rel, query_states=None, return_details=False):
        query_states = hidden_states if query_states is None else query_states
        out = self.attention(hidden_states, keep, rel, query_states, return_details)
        context, details = out if return_details else (out, None)
        x = self.attention_norm(query_states + self.dropout(self.attention_out(context)))  # residual: queries
        x = self.ffn_norm(x + self.dropout(self.ffn(x)))
        return (x, details) if return_details else x


class ConvLayer(nn.Module):
    """v2: a convolution over the embeddings, added to the first block's output (local n-gram features)."""

    def __init__(self, config: DebertaConfig):
        super().__init__()
        k = config.conv_kernel_size
        D = config.hidden_size
        self.conv = nn.Conv1d(D, D, k, padding=(k - 1) // 2, groups=config.conv_groups)
        self.act = activation(config.conv_act)
        self.norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, embeddings, layer_output, keep):
        zero_pads = keep.unsqueeze(-1).to(layer_output.dtype)  # (B, L, 1): 1 at tokens, 0 at padding
        out = self.conv(embeddings.transpose(1, 2)).transpose(1, 2) * zero_pads  # (B, L, D)
        out = self.act(self.dropout(out))
        return self.norm(layer_output + out) * zero_pads


class Encoder(nn.Module):
    def __init__(self, config: DebertaConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.rel_embeddings = None
        self.rel_norm = None
        if config.relative_attention:
            span = table_span(config.max_relative_positions, config.position_buckets)
            self.rel_embeddings = nn.Embedding(2 * span, config.hidden_size)  # shared by all layers
            if config.norm_rel_ebd:
                self.rel_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.conv = ConvLayer(config) if config.conv_kernel_size > 0 else None

    def relative_table(self, length: int, device) -> RelativeTable | None:
        """The rows of the (layer-normed) relative table this length uses, and δ into them."""
        if self.rel_embeddings is None:
            return None
        c = self.config
        rows, index = relative_rows_and_index(
            length, k=c.max_relative_positions, position_buckets=c.position_buckets, device=device
        )
        table = self.rel_embeddings(rows)  # (R, D); LayerNorm is per row, so select first
        if self.rel_norm is not None:
            table = self.rel_norm(table)
        return RelativeTable(table, index, shifted=rows.numel() == 2 * length - 1)  # one row per distance

    def forward(self, embeddings, keep, rel, return_details=False):
        hidden_states = [embeddings]
        details = []
        x = embeddings
        for i, layer in enumerate(self.layers):
            out = layer(x, keep, rel, return_details=return_details)
            x, d = out if return_details else (out, None)
            if i == 0 and self.conv is not None:
                x = self.conv(embeddings, x, keep)
            hidden_states.append(x)
            details.append(d)
        return hidden_states, details


class DebertaModel(nn.Module):
    """The encoder. ``forward`` returns ModelOutput(last_hidden_state=(B, L, D), ..., encoder_state)."""

    def __init__(self, config: DebertaConfig):
        super().__init__()
        config.check()  # a field set after the config was made is checked too
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])

    def check_inputs(self, input_ids, attention_mask, token_type_ids=None):
        """Turn mistakes into errors that say what was wrong, instead of an index error deep inside."""
        V, T = self.config.vocab_size, self.config.type_vocab_size
        check_ids(input_ids, "input_ids", V, f"vocab_size={V}",
                  "Was the text encoded with a tokenizer of another vocabulary?")
        if attention_mask is not None:
            check_mask(attention_mask, input_ids.shape)
        if token_type_ids is not None:
            # without a type table (type_vocab_size=0) only type 0 exists, and it is ignored
            check_ids(token_type_ids, "token_type_ids", max(T, 1), f"type_vocab_size={T}",
                      "Pass None, or zeros for a single segment.", shape=input_ids.shape)
        L, P = input_ids.size(1), self.config.max_position_embeddings
        if self.config.needs_absolute_positions and L > P:
            who = "the EMD" if self.config.emd else "the absolute position input"
            raise ValueError(
                f"sequence length {L} exceeds max_position_embeddings={P}, the size of the absolute "
                f"position table that {who} needs; cut the input to at most {P} tokens."
            )

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, return_details=False,
                output_hidden_states=False) -> ModelOutput:
        self.check_inputs(input_ids, attention_mask, token_type_ids)
        if attention_mask is None:
            keep = torch.ones_like(input_ids, dtype=torch.bool)  # (B, L) nothing padded
        else:
            keep = attention_mask != 0  # (B, L) the one mask polarity inside: True at real tokens
        x, positions = self.embeddings(input_ids, keep, token_type_ids)
        rel = self.encoder.relative_table(input_ids.size(1), input_ids.device)  # once, for all layers and the EMD
        hidden, details = self.encoder(x, keep, rel, return_details)
        return ModelOutput(
            last_hidden_state=hidden[-1],
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(details) if return_details else None,
            encoder_state=EncoderState(keep, rel, positions, penultimate=hidden[-2]),
        )
