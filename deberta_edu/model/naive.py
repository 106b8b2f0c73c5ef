"""The naive disentangled attention: loops over heads, i and j, straight from eq. (4). For teaching and tests."""

from __future__ import annotations

import torch

from .attention import DisentangledSelfAttention
from .positions import log_bucket, relative_distance


def naive_delta(config):
    """δ(i, j) -> the relative table's row, one pair at a time, for ``config``: eq. (3) clamped at k, or the
    v2/v3 log buckets (the ``delta`` that ``naive_attention`` takes)."""
    k, span = config.max_relative_positions, config.position_buckets
    if span > 0:
        return lambda i, j: int(torch.clamp(log_bucket(torch.tensor(i - j), span, k) + span, 0, 2 * span - 1))
    return lambda i, j: relative_distance(i, j, k)


def naive_attention(
    attention: DisentangledSelfAttention,
    hidden: torch.Tensor,
    table: torch.Tensor,
    delta,
    keep: torch.Tensor | None = None,
    query: torch.Tensor | None = None,
):
    """One sequence, written as the paper writes it. Slow; for teaching and for tests.

    hidden (L, D), query (L, D) or None, table (2k, D) the relative table, delta(i, j) -> table row,
    keep (L,) bool, True at the real tokens (as in the fast version).
    Returns ({term: (H, L, L)}, probs (H, L, L), out (L, D)).
    """
    if hidden.dim() != 2 or (query is not None and query.shape != hidden.shape):
        raise ValueError(f"naive_attention takes one sequence: hidden (L, D), got {tuple(hidden.shape)}"
                         + ("" if query is None else f" and query {tuple(query.shape)}") + "; for one row of a batch "
                         "pass hidden[b]")
    W = attention.projection_weights()

    def project(x, name):  # x W^T + b, then split into heads: (H, L, d)
        weight, bias = W[name]
        y = x @ weight.T + (0 if bias is None else bias)
        return y.unflatten(-1, (attention.num_heads, attention.head_size)).transpose(0, 1)

    query = hidden if query is None else query
    Qc, Kc, Vc = project(query, "q"), project(hidden, "k"), project(hidden, "v")
    Qr = project(table, "q_r") if "q_r" in W else None
    Kr = project(table, "k_r") if "k_r" in W else None
    H, L = Qc.shape[0], hidden.shape[0]
    scale = attention.scale
    terms = {t: Qc.new_zeros(H, L, L) for t in attention.terms}  # the projections' dtype and device
    for h in range(H):
        for i in range(L):
            for j in range(L):
                if "c2c" in terms:
                    terms["c2c"][h, i, j] = Qc[h, i] @ Kc[h, j] * scale
                if "c2p" in terms:
                    terms["c2p"][h, i, j] = Qc[h, i] @ Kr[h, delta(i, j)] * scale
                if "p2c" in terms:  # released code: δ(i, j); eq. (4) of the paper writes δ(j, i)
                    terms["p2c"][h, i, j] = Kc[h, j] @ Qr[h, delta(i, j)] * scale
                if "p2p" in terms:
                    terms["p2p"][h, i, j] = Qr[h, delta(i, j)] @ Kr[h, delta(j, i)] * scale
    scores = sum(terms.values())
    if keep is not None:
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)  # (H, L, L)
    out = (probs @ Vc).transpose(0, 1).flatten(-2)  # (L, H·d)
    return terms, probs, out
