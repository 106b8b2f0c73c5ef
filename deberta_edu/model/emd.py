r"""The Enhanced Mask Decoder (paper §3.2 and A.8) and the masked-language-model head; its cost is in A.7.

The paper's example, "a new **store** opened beside the new **mall**": both nouns follow "new" at the
same distance, and which one is the subject depends on where it sits. A model with relative positions
only knows a token's absolute place through its distance to an anchor such as [CLS] at position 0,
and only while that distance is inside the clamp of eq. (3) (or is coarsely known, in the v2/v3 log
buckets); lesson 3 measures both halves. DeBERTa hands absolute positions over directly, but late: right
before the softmax layer that predicts the masked tokens.

As in the released code (DeBERTa/apps/models/masked_language_model.py, ``emd_context_layer``):

    H      = output of encoder layer L − 1                (keys and values in both passes, never changed)
    Q_0    = P + H                                         (P: absolute position embeddings; the only place
                                                            absolute positions enter)
    Q_1    = layer_L(keys/values = H, queries = Q_0)       (the encoder's own last layer, same weights;
    Q_2    = layer_L(keys/values = H, queries = Q_1)        c2c, c2p and p2c as in every layer)
    logits = MLM head(Q_2)

layer_L is post-LN, with the residual on the *query* stream: A = LN(Q + attention(Q; H) W_o), then
LN(A + FFN(A)). P reaches the output through that residual and through the queries of c2c and c2p
(p2c reads K^c of H and the relative table, no query); V comes from H only. With P = 0 the first pass
is exactly layer L of the encoder.

Where the paper and the code differ: appendix A.8 says the first EMD layer takes the absolute position
embedding as its input I, and that its n = 2 layers share one set of weights, without saying whose; the
released code, and this module, use I = P + H (as appendix A.9 describes it: P "added to the hidden state
of content as the query vector") and reuse the encoder's own last layer (``encoder.layer[-1]``) for both
passes, so the EMD has no weights of its own beyond the table P.

The encoder hands over H, the absolute positions, the ``keep`` mask and the relative table, each built once
per forward, in an ``EncoderState``; the EMD re-derives none of them, and is given layer_L explicitly.

The MLM head is dense -> gelu -> LayerNorm -> tied word embeddings + bias. With ``config.emd = False``
(the −EMD ablation, and what transformers implements) the head reads the last layer's output instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import RelativeTable
from .config import DebertaConfig
from .encoder import DebertaModel, EncoderState, Layer, activation


class EnhancedMaskDecoder(nn.Module):
    """No weights of its own: it reuses the encoder's last layer and what the encoder built."""

    steps = 2  # the last layer is applied twice with shared weights

    def forward(self, last_layer: Layer, state: EncoderState, select: torch.Tensor | None = None) -> torch.Tensor:
        """The decoded states (B, L, D); with ``select`` (B, L) bool, only those positions: (N, D).

        Keys and values are H at every position whatever is decoded, and each query position is
        updated on its own (attention reads queries one by one; the FFN and LayerNorms are per
        position), so decoding only the masked tokens gives exactly their rows of the full result.
        Appendix A.7 counts the EMD's extra cost as 0.15 × 2/L of the encoder (only masked tokens are
        decoded). The released code decodes every position and then keeps the masked rows (2/L); here
        the queries, FFN and head run on the selected tokens only, but K and V of H (and the p2c keys)
        are still projected at all L positions in each pass, so the work is more than 15% of the full
        EMD's (lesson 3 counts it). The encoder's layer L already projected those same K and V of H;
        caching them would come close to A.7's figure.
        """
        H = state.penultimate  # (B, L, D) output of layer L − 1: keys and values, never changed
        if state.positions is None:
            raise ValueError("this encoder state holds no absolute positions (its config has emd=False): build the "
                             "encoder with emd=True for the EMD to have its P")
        if select is not None and tuple(select.shape) != tuple(H.shape[:2]):
            raise ValueError(f"select has shape {tuple(select.shape)}, the batch {tuple(H.shape[:2])}: one True or "
                             "False per token")
        query = state.positions + H  # (B, L, D) Q_0 = P + H: absolute positions enter here, and only here
        rel = state.rel
        if select is not None:
            counts = select.sum(1)  # (B,)
            width = int(counts.max()) if counts.numel() else 0
            if width == 0:  # nothing to decode in this batch: (0, D), still on the graph through H
                return H[:, :0].flatten(0, 1)
            order = torch.argsort((~select).to(torch.int8), dim=1, stable=True)[:, :width]  # (B, M) chosen first
            query = torch.gather(query, 1, order[..., None].expand(-1, -1, query.size(-1)))  # (B, M, D)
            if rel is not None:
                rel = RelativeTable(rel.table, rel.index[order])  # (B, M, L): the rows of the chosen queries
        for _ in range(self.steps):  # Q_1, Q_2: layer L with c2c, c2p, p2c; residual through the queries
            query = last_layer(H, state.keep, rel, query_states=query)
        if select is None:
            return query
        valid = torch.arange(query.size(1), device=query.device) < counts[:, None]  # (B, M)
        return query[valid]  # (N, D), in the order of h[select]


def check_labels(labels, shape, num_classes: int, ignore: int | None = -100) -> None:
    """Labels: an integer tensor of ``shape``, each value a class in [0, num_classes) or ``ignore``."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch tensor, got a {type(labels).__name__}; use torch.as_tensor(labels)")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.shape != shape:
        raise ValueError(
            f"labels must be an integer tensor of shape {tuple(shape)}; got a {labels.dtype} tensor of shape "
            f"{tuple(labels.shape)}"
        )
    bad = labels[((labels < 0) | (labels >= num_classes)) & (labels != ignore)]
    if bad.numel():
        skip = f", or {ignore} where nothing is predicted" if ignore is not None else ""
        raise ValueError(f"labels contains {bad[0].item()}, but a label must lie in [0, {num_classes - 1}]{skip}")


class MLMHead(nn.Module):
    """dense -> activation -> LayerNorm -> logits against the (tied) word embeddings, plus a bias."""

    def __init__(self, config: DebertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden, word_embeddings: torch.Tensor):
        h = self.norm(self.act(self.dense(hidden)))
        return h @ word_embeddings.T + self.bias  # (..., V)


@dataclass
class MaskedLMOutput:
    logits: torch.Tensor  # (B, L, V), or (N, V) for the N labelled tokens with only_masked_logits
    loss: torch.Tensor | None
    last_hidden_state: torch.Tensor  # the encoder's output (B, L, D), what fine-tuning uses
    decoder_hidden_state: torch.Tensor  # what the head read: EMD output (N, D) with only_masked_logits, or
    # (B, L, D); last_hidden_state without EMD
    hidden_states: tuple[torch.Tensor, ...] | None = None


class DebertaForMaskedLM(nn.Module):
    def __init__(self, config: DebertaConfig):
        super().__init__()
        self.config = config
        self.deberta = DebertaModel(config)
        self.emd = EnhancedMaskDecoder() if config.emd else None
        self.head = MLMHead(config)
        nn.init.normal_(self.head.dense.weight, std=config.initializer_range)
        nn.init.zeros_(self.head.dense.bias)

    def forward(
        self,
        input_ids,
        attention_mask=None,
        labels=None,
        token_type_ids=None,
        only_masked_logits: bool = False,
        output_hidden_states: bool = False,
    ) -> MaskedLMOutput:
        """Logits for every position; with ``labels`` (-100 = not predicted) also the mean MLM loss.

        ``only_masked_logits=True`` computes the head only where labels != -100 (the ~15% of tokens
        the loss reads), an exact shortcut for training.
        """
        if labels is not None:
            self.deberta.check_inputs(input_ids, attention_mask, token_type_ids)  # input_ids first: a clear error
            check_labels(labels, input_ids.shape, self.config.vocab_size)
        out = self.deberta(input_ids, attention_mask, token_type_ids, output_hidden_states=output_hidden_states)
        only_masked = only_masked_logits and labels is not None
        selected = labels != -100 if only_masked else None
        if self.emd is not None:  # with only_masked_logits the EMD decodes only the labelled tokens: (N, D)
            h = self.emd(self.deberta.encoder.layers[-1], out.encoder_state, select=selected)
        else:
            h = out.last_hidden_state
        word_embeddings = self.deberta.embeddings.word_embeddings.weight
        if only_masked:
            h_masked = h if self.emd is not None else h[selected]
            logits = self.head(h_masked, word_embeddings)  # (N, V)
            targets = labels[selected]
        else:
            logits = self.head(h, word_embeddings)  # (B, L, V)
            targets = labels
        loss = None
        if labels is not None:
            targets = targets.flatten()
            if (targets != -100).any():
                loss = F.cross_entropy(logits.flatten(0, -2).float(), targets, ignore_index=-100)
            else:  # nothing to predict in this batch: a zero loss that still has a graph
                loss = logits.sum() * 0.0
        return MaskedLMOutput(
            logits=logits,
            loss=loss,
            last_hidden_state=out.last_hidden_state,
            decoder_hidden_state=h,
            hidden_states=out.hidden_states if output_hidden_states else None,
        )
