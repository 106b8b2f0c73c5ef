r"""Disentangled self-attention (paper §3.1, eqs. (2)–(4); the gather of §3.1.1, Algorithm 1).

Each token i carries a content vector $H_i$; each pair (i, j) a relative position $P_{i|j}$.
The attention score of BERT, $H_i H_j^\top$, becomes a sum of four terms (eq. 2):

$$A_{ij} = \underbrace{H_i H_j^\top}_{\text{c2c}} + \underbrace{H_i P_{j|i}^\top}_{\text{c2p}}
         + \underbrace{P_{i|j} H_j^\top}_{\text{p2c}} + \underbrace{P_{i|j} P_{j|i}^\top}_{\text{p2p}}$$

With projections $Q^c = HW_q$, $K^c = HW_k$, $V^c = HW_v$ of the content and $Q^r = PW_{q,r}$,
$K^r = PW_{k,r}$ of the relative table P, eq. (4) keeps the first three terms (the paper drops p2p; the
fourth below is ours, for teaching, off by default):

$$\tilde A_{ij} = \underbrace{Q^c_i \cdot K^c_j}_{\text{c2c}}
   + \underbrace{Q^c_i \cdot K^r_{\delta(i,j)}}_{\text{c2p}}
   + \underbrace{K^c_j \cdot Q^r_{\delta(i,j)}}_{\text{p2c (released code; eq. 4 writes } \delta(j,i))}
   + \underbrace{Q^r_{\delta(i,j)} \cdot K^r_{\delta(j,i)}}_{\text{p2p}}$$

$$H_o = \mathrm{softmax}\!\left(\frac{\tilde A}{\sqrt{d\,(1 + n_{\text{pos}})}}\right) V^c$$

where d is the head size and $n_{\text{pos}}$ the number of position terms (2 in DeBERTa, hence
$\sqrt{3d}$: each term is a dot product of variance ~d, and their sum has variance ~3d). Eq. (4) and
the released code use $\sqrt{3d}$; Algorithm 1's last line prints $\sqrt{2d}$.

Which row each term reads: with $P_{i|j}$ = row δ(i, j), eq. (2)'s c2p $H_i P_{j|i}^\top$ reads δ(j, i)
and its p2c $P_{i|j} H_j^\top$ reads δ(i, j); eq. (4) (and Algorithm 1) read δ(i, j) for c2p and
δ(j, i) for p2c. The released code reads δ(i, j) in both, and so do we. Inside the window the two
differ by the mirror δ(j, i) = 2k − δ(i, j); it is not a relabelling, because c2p and p2c share P
(and, with share_att_key, W_q and W_k).
p2p depends on i − j alone, so with relative positions it is a learned bias per distance with no
content in it; DeBERTa drops it. It is here for teaching, off by default.

`DisentangledSelfAttention` is the v2/v3 layout (query_proj, key_proj, value_proj, share_att_key);
`DisentangledSelfAttentionV1` overrides only the projections (fused in_proj with q and v biases).
`naive.naive_attention` computes the same thing with loops over i and j, straight from the
equations; tests keep it equal to the fast path. ``banded`` is the fast path's c2p and p2c for short
sequences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .banded import banded, banded_block
from .config import DebertaConfig


@dataclass
class RelativeTable:
    """The relative-position rows a layer needs: ``table`` (R, D) and ``index`` (L, L) into it.

    ``index`` may also be (B, M, L): the rows of M chosen query positions per sequence (the EMD decodes
    only the masked tokens). ``shifted``: index[i, j] = L − 1 − i + j, one row per distance (R = 2L − 1,
    what ``positions.relative_rows_and_index`` returns for a short sequence); c2p and p2c then compute
    only the products they read (``banded``).
    """

    table: torch.Tensor
    index: torch.Tensor
    shifted: bool = False


@dataclass
class AttentionDetails:
    """Per-term scaled scores {term: (B, H, L, L)} and attention probabilities (B, H, L, L)."""

    terms: dict[str, torch.Tensor]
    probs: torch.Tensor


class DisentangledSelfAttention(nn.Module):
    """Multi-head disentangled attention; the v2/v3 parameter layout."""

    def __init__(self, config: DebertaConfig):
        super().__init__()
        self.terms = config.terms
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.scale = 1.0 / math.sqrt(self.head_size * (1 + len(config.position_terms)))
        self.needs_pos_key = "c2p" in self.terms or "p2p" in self.terms
        self.needs_pos_query = "p2c" in self.terms or "p2p" in self.terms
        self.pos_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self._init_projections(config)

    def _init_projections(self, config: DebertaConfig):
        D = config.hidden_size
        self.query_proj = nn.Linear(D, D)
        self.key_proj = nn.Linear(D, D)
        self.value_proj = nn.Linear(D, D)
        self.share_att_key = config.share_att_key
        if not self.share_att_key:
            if self.needs_pos_key:
                self.pos_key_proj = nn.Linear(D, D)
            if self.needs_pos_query:
                self.pos_query_proj = nn.Linear(D, D)

    # --- projections: the only part that differs between v1 and v2 ---------------------------------
    def content_qkv(self, hidden_states, query_states):
        """Q^c from the queries, K^c and V^c from the hidden states; each (B, H, L, d)."""
        q = self._heads(self.query_proj(query_states))
        return q, self._heads(self.key_proj(hidden_states)), self._heads(self.value_proj(hidden_states))

    def position_qk(self, table):
        """Q^r and K^r of the relative table (R, D); each (H, R, d), shared by the whole batch."""
        if self.share_att_key:  # v2/v3: W_{q,r} = W_q and W_{k,r} = W_k
            q_proj, k_proj = self.query_proj, self.key_proj
        else:
            q_proj, k_proj = getattr(self, "pos_query_proj", None), getattr(self, "pos_key_proj", None)
        pos_q = self._heads(q_proj(table)) if self.needs_pos_query else None
        pos_k = self._heads(k_proj(table)) if self.needs_pos_key else None
        return pos_q, pos_k

    def _heads(self, x):
        """(..., L, H·d) -> (..., H, L, d)."""
        return x.unflatten(-1, (self.num_heads, self.head_size)).transpose(-3, -2)

    # --- the four terms ---------------------------------------------------------------------------
    @staticmethod
    def _against_table(x, table):
        """Every token of x (B, H, L, d) against every row of table (H, R, d): (H, B, L, R).

        One matrix product per head over all B·L tokens (heads first), rather than B·H small ones
        with the table copied B times: the same numbers, faster on a CPU.
        """
        B, H, L, d = x.shape
        return (x.transpose(0, 1).reshape(H, B * L, d) @ table.transpose(-1, -2)).view(H, B, L, -1)

    @classmethod
    def c2p(cls, q, pos_k, index, shifted=False):
        """Content-to-position: Q^c_i · K^r_{δ(i,j)} (Algorithm 1, lines 3–10). (B, H, L, L).

        index: (L, L), or (B, M, L) for M chosen queries (then q is (B, H, M, d)). ``shifted``: see
        RelativeTable; the same numbers through ``banded``.
        """
        if shifted and banded_block(q.size(-2)):
            return banded(q, pos_k, keys=False).flatten(-2).flatten(2, 3)  # (B, H, L, L)
        scores = cls._against_table(q, pos_k)  # (H, B, L, R): query i against every table row
        H, B = scores.shape[:2]
        return torch.gather(scores, -1, index.expand(H, B, *index.shape[-2:])).transpose(0, 1)

    @classmethod
    def p2c(cls, k, pos_q, index, shifted=False):
        """Position-to-content: K^c_j · Q^r_{δ(i,j)} (Algorithm 1, lines 11–18). (B, H, L, L).

        δ(i, j), the row c2p reads, as in the released checkpoints; Algorithm 1 (line 16) and eq. (4) read
        δ(j, i): the module docstring ("Which row each term reads") says why that is another model.
        """
        if shifted and banded_block(k.size(-2)):
            return banded(k, pos_q, keys=True).flatten(-2).flatten(2, 3)  # (B, H, L, L)
        scores = cls._against_table(k, pos_q)  # (H, B, L, R): key j against every table row
        H, B = scores.shape[:2]
        rows_for_j = index.transpose(-1, -2)  # [j, i] = δ(i, j)
        scores = torch.gather(scores, -1, rows_for_j.expand(H, B, *rows_for_j.shape[-2:]))  # [h, b, j, i]
        return scores.permute(1, 0, 3, 2)  # (B, H, L, L) indexed [i, j]

    @staticmethod
    def p2p(pos_q, pos_k, index):
        """Position-to-position: Q^r_{δ(i,j)} · K^r_{δ(j,i)}, eq. (2) read with P_{i|j} = row δ(i, j).

        Depends on i − j only: a learned bias per distance. The released v2 code's p2p branch slices its
        3-d (B·H, R, d) position queries with four indices, so it cannot run; this one is for teaching.
        """
        if index.dim() != 2:
            raise ValueError("p2p needs the full (L, L) relative index, not the rows of chosen queries")
        table_scores = pos_q @ pos_k.transpose(-1, -2)  # (H, R, R)
        R = table_scores.size(-1)
        pair = index * R + index.transpose(0, 1)  # (L, L): flat position of (δ(i,j), δ(j,i))
        return table_scores.flatten(-2)[:, pair].unsqueeze(0)  # (1, H, L, L)

    def term_scores(self, q, k, pos_q, pos_k, index, terms=None, shifted=False) -> dict[str, torch.Tensor]:
        """The selected terms (default: all of this layer's), each multiplied by 1/sqrt(d (1 + n_pos)).

        c2p and p2c take the factor on the small (H, R, d) table before the product, not on the
        (B, H, L, L) result: the same terms up to rounding, with two passes over the big tensors fewer.
        """
        s = self.scale
        compute = {
            "c2c": lambda: q @ k.transpose(-1, -2) * s,
            "c2p": lambda: self.c2p(q, pos_k * s, index, shifted),
            "p2c": lambda: self.p2c(k, pos_q * s, index, shifted),
            "p2p": lambda: self.p2p(pos_q, pos_k, index).expand(q.size(0), -1, -1, -1) * s,
        }
        return {t: compute[t]() for t in (self.terms if terms is None else terms)}

    # --- forward ------------------------------------------------------------------------------------
    def forward(
        self,
        hidden_states: torch.Tensor,
        keep: torch.Tensor,
        rel: RelativeTable | None,
        query_states: torch.Tensor | None = None,
        return_details: bool = False,
    ):
        """Attend from ``query_states`` (default: ``hidden_states``) to ``hidden_states``.

        hidden_states, query_states: (B, L, D); keep: (B, L) bool, True at the real tokens (the keys
        that may be read; padding is False). Returns the context (B, L, D), and AttentionDetails when
        ``return_details``.
        """
        query_states = hidden_states if query_states is None else query_states
        keep = keep[:, None, None, :]  # (B, 1, 1, L): the same keys for every head and query
        q, k, v = self.content_qkv(hidden_states, query_states)  # (B, H, L, d) each
        pos_q = pos_k = None
        if self.needs_pos_key or self.needs_pos_query:
            pos_q, pos_k = self.position_qk(self.pos_dropout(rel.table))  # (H, R, d)
        index, shifted = (rel.index, rel.shifted) if rel is not None else (None, False)
        # the lowest finite value: the slow path replaces scores with it, so a row with no key left stays finite; the
        # fast path adds it as SDPA's mask (finite in fp32; in fp16 such a row could round to −inf)
        masked = torch.finfo(q.dtype).min

        if return_details or "c2c" not in self.terms:
            terms = self.term_scores(q, k, pos_q, pos_k, index, shifted=shifted)
            scores = sum(terms.values()).masked_fill(~keep, masked)  # (B, H, L, L)
            probs = torch.softmax(scores, dim=-1)
            context = self.dropout(probs) @ v  # (B, H, L, d)
            details = AttentionDetails(terms, probs) if return_details else None
        else:
            # Fast path: the position terms as one additive bias, c2c inside the product with the keys.
            bias = self.position_bias(q, k, pos_q, pos_k, rel)  # (B, H, L, L) or None
            # packed pretraining batches have no padding: on a CPU, skip the pass over the bias (on a GPU the
            # check would wait for the device, and the pass is cheap there)
            if keep.device.type != "cpu" or not keep.all():
                bias = (q.new_zeros(()) if bias is None else bias).masked_fill(~keep, masked)
            context = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.dropout.p if self.training else 0.0, scale=self.scale
            )
            details = None
        context = context.transpose(1, 2).flatten(-2)  # (B, L, H·d)
        return (context, details) if return_details else context

    def position_bias(self, q, k, pos_q, pos_k, rel):
        """The sum of this layer's position terms, scaled, (B, H, L, L); None when it has none.

        When δ is a shift (``rel.shifted``), c2p and p2c are added in ``banded``'s block layout and
        laid out once, rather than each laid out and then added.
        """
        terms = [t for t in self.terms if t != "c2c"]
        if not terms:
            return None
        B, H, L, _ = q.shape
        if rel.shifted and sorted(terms) == ["c2p", "p2c"] and banded_block(L) and k.size(-2) == L:
            s = self.scale
            return (banded(q, pos_k * s, keys=False) + banded(k, pos_q * s, keys=True)).reshape(B, H, L, L)
        bias = None
        for term in self.term_scores(q, k, pos_q, pos_k, rel.index, terms, rel.shifted).values():
            bias = term if bias is None else bias + term
        return bias

    def projection_weights(self) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """(weight, bias) of W_q, W_k, W_v, W_{q,r}, W_{k,r} as plain matrices (for the naive version)."""

        def wb(linear):
            return linear.weight, linear.bias

        out = {"q": wb(self.query_proj), "k": wb(self.key_proj), "v": wb(self.value_proj)}
        if self.share_att_key:
            out["q_r"], out["k_r"] = out["q"], out["k"]
        else:
            if self.needs_pos_query:
                out["q_r"] = wb(self.pos_query_proj)
            if self.needs_pos_key:
                out["k_r"] = wb(self.pos_key_proj)
        return out


class DisentangledSelfAttentionV1(DisentangledSelfAttention):
    """DeBERTa v1 layout: one fused in_proj (no bias) with separate q and v biases; pos_proj, pos_q_proj.

    in_proj's output is laid out per head as [q | k | v] blocks of size d:
    rows h·3d .. h·3d + d are head h's query, the next d its key, the next d its value.
    """

    def _init_projections(self, config: DebertaConfig):
        D = config.hidden_size
        self.in_proj = nn.Linear(D, 3 * D, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(D))
        self.v_bias = nn.Parameter(torch.zeros(D))
        if self.needs_pos_key:
            self.pos_proj = nn.Linear(D, D, bias=False)  # K^r has no bias in v1
        if self.needs_pos_query:
            self.pos_q_proj = nn.Linear(D, D)

    def _split_in_proj(self):
        w = self.in_proj.weight.unflatten(0, (self.num_heads, 3, self.head_size))  # (H, 3, d, D)
        return [w[:, t].flatten(0, 1) for t in range(3)]  # W_q, W_k, W_v each (H·d, D)

    def content_qkv(self, hidden_states, query_states):
        if query_states is hidden_states:
            qkv = self.in_proj(hidden_states).unflatten(-1, (self.num_heads, 3, self.head_size))
            q, k, v = (qkv[..., t, :].transpose(1, 2) for t in range(3))  # (B, H, L, d)
        else:  # EMD: queries from other states than keys and values
            w_q, w_k, w_v = self._split_in_proj()
            q = self._heads(F.linear(query_states, w_q))
            k = self._heads(F.linear(hidden_states, w_k))
            v = self._heads(F.linear(hidden_states, w_v))
        # in the projections' dtype: under autocast a float32 bias would make q and v float32 again, beside a
        # bf16 position bias whose mask then could not hold float32's lowest value
        q = q + self.q_bias.to(q.dtype).view(self.num_heads, 1, self.head_size)  # broadcasts over batch and length
        v = v + self.v_bias.to(v.dtype).view(self.num_heads, 1, self.head_size)
        return q, k, v

    def position_qk(self, table):
        pos_q = self._heads(self.pos_q_proj(table)) if self.needs_pos_query else None
        pos_k = self._heads(self.pos_proj(table)) if self.needs_pos_key else None
        return pos_q, pos_k

    def projection_weights(self):
        w_q, w_k, w_v = self._split_in_proj()
        out = {"q": (w_q, self.q_bias), "k": (w_k, None), "v": (w_v, self.v_bias)}
        if self.needs_pos_query:
            out["q_r"] = (self.pos_q_proj.weight, self.pos_q_proj.bias)
        if self.needs_pos_key:
            out["k_r"] = (self.pos_proj.weight, None)
        return out


def build_attention(config: DebertaConfig) -> DisentangledSelfAttention:
    return DisentangledSelfAttentionV1(config) if config.layout == "v1" else DisentangledSelfAttention(config)
