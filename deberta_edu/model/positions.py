"""Relative positions: the paper's δ(i, j) (eq. 3) and the v2/v3 log buckets.

Disentangled attention never looks at *where* a token is, only at how far apart two tokens are (absolute
positions enter only in the EMD, §3.2; a token can still infer its place from its distance to [CLS]
while that is inside the window, lesson 3). The distance i − j is mapped to a row of a learned table of relative-position embeddings:

    δ(i, j) = 0            if i − j <= −k
            = 2k − 1       if i − j >= k
            = i − j + k    otherwise                                  (paper, eq. 3)

so the table has 2k rows. The clamp is not symmetric: the third case already gives 2k − 1 at
i − j = k − 1, so row 2k − 1 is read by every i − j >= k − 1 and row 0 by every i − j <= −k; the
distances −(k − 1) … k − 2 each keep a row of their own. The released code computes the same rows as
clamp(i − j + k, 0, 2k − 1). (Shaw et al., 2018, clip j − i to [−k, k] instead: 2k + 1 rows, symmetric.)

DeBERTa v2/v3 first squeeze the distance through a logarithmic bucketing (`log_bucket`): distances
up to ``position_buckets / 2`` are kept exactly, longer ones share logarithmically wider buckets,
so a table of 2 × 256 rows covers sequences of thousands of tokens. The same clamp then picks the
row, and the ends differ again: with 256 buckets and max_relative_positions 512, row 0 is read from
i − j <= −512 on, the top row already from i − j >= 506 (the ceil reaches bucket 255 early).
"""

from __future__ import annotations

import numbers

import torch


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"the maximum relative distance k must be a whole number, got {k!r}")
    if k < 1:
        raise ValueError(f"the maximum relative distance k must be >= 1, got k={k}")


def relative_distance(i: int, j: int, k: int) -> int:
    """δ(i, j) of eq. (3): the row of the relative-position table that token i uses for token j.

    Row 0 for i − j <= −k, row 2k − 1 for i − j >= k − 1 (k − 1 by the third case, the rest clamped).
    """
    _check_k(k)
    if i - j <= -k:
        return 0
    if i - j >= k:
        return 2 * k - 1
    return i - j + k


def log_bucket(relative_positions: torch.Tensor, position_buckets: int, max_relative_positions: int) -> torch.Tensor:
    """Map signed distances i − j to signed log buckets (DeBERTa v2/v3).

    |i − j| <= position_buckets / 2 is kept as is; beyond, the bucket grows with log|i − j| and reaches
    position_buckets − 1 at |i − j| = max_relative_positions − 1. The map is odd and monotone.
    The arithmetic (float32 log, ceil) follows transformers' ``make_log_bucket_position``, so that buckets match
    it exactly. Microsoft's current code first clamps i − j to ±(max_relative_positions − 1); the buckets agree
    for every shorter distance; beyond it theirs stay at ±(position_buckets − 1), ours keep growing.
    """
    if position_buckets < 2:
        raise ValueError(f"position_buckets must be >= 2 for log buckets, got {position_buckets}")
    if max_relative_positions <= position_buckets // 2 + 1:
        raise ValueError(
            f"max_relative_positions ({max_relative_positions}) must exceed position_buckets/2 + 1 "
            f"({position_buckets // 2 + 1}); otherwise there is nothing to bucket"
        )
    rel = relative_positions.long()
    sign = torch.sign(rel)
    mid = position_buckets // 2
    # Inside (−mid, mid) the log branch is unused; mid − 1 only keeps log() finite there.
    abs_pos = torch.where((rel < mid) & (rel > -mid), torch.full_like(rel, mid - 1), rel.abs())
    log_ratio = torch.log(abs_pos / mid) / torch.log(torch.tensor((max_relative_positions - 1) / mid))
    log_pos = torch.ceil(log_ratio * (mid - 1)) + mid
    return torch.where(abs_pos <= mid, rel.to(log_pos.dtype), log_pos * sign).long()


def table_span(k: int, position_buckets: int = -1) -> int:
    """Half the number of rows of the relative table: k (v1) or position_buckets (v2/v3)."""
    return position_buckets if position_buckets > 0 else k


def relative_distance_matrix(
    query_length: int,
    key_length: int | None = None,
    *,
    k: int,
    position_buckets: int = -1,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Vectorised δ: a (query_length, key_length) LongTensor of table rows.

    With ``position_buckets <= 0`` this is exactly eq. (3) with maximum distance k. With buckets, the
    distance is first log-bucketed (k then plays the role of ``max_relative_positions``) and the
    table has 2 × position_buckets rows.
    """
    key_length = query_length if key_length is None else key_length
    _check_k(k)
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in (query_length, key_length)):
        raise TypeError(f"lengths must be whole numbers, got query_length={query_length!r}, key_length={key_length!r}")
    if query_length < 0 or key_length < 0:
        raise ValueError(f"lengths must be >= 0, got query_length={query_length}, key_length={key_length}")
    i = torch.arange(query_length, device=device)[:, None]
    j = torch.arange(key_length, device=device)[None, :]
    rel = i - j  # (Lq, Lk) signed distance i − j
    if position_buckets > 0:
        rel = log_bucket(rel, position_buckets, k)
    span = table_span(k, position_buckets)
    return torch.clamp(rel + span, 0, 2 * span - 1)


def relative_rows_and_index(
    length: int, *, k: int, position_buckets: int = -1, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The table rows a sequence of ``length`` tokens uses, and where each (i, j) finds its row.

    Returns ``rows`` (R,) and ``index`` (L, L) with ``table[rows][index[i, j]] == table[δ(i, j)]``.
    A sequence of L tokens only has 2L − 1 distinct distances, so when 2L − 1 is smaller than the
    table we gather just those rows, one per distance, and project R = 2L − 1 rows instead of the
    whole table: the same numbers, less work. Then index[i, j] = L − 1 − i + j, a shift, whatever the
    buckets (attention.banded uses it). Otherwise rows is the whole table and index is δ.
    """
    _check_k(k)
    if length < 1:
        raise ValueError(f"a sequence needs at least one token, got length={length}")
    span = table_span(k, position_buckets)
    if 2 * length - 1 >= 2 * span:
        rows = torch.arange(2 * span, device=device)
        return rows, relative_distance_matrix(length, k=k, position_buckets=position_buckets, device=device)
    distances = torch.arange(length - 1, -length, -1, device=device)  # i − j from L−1 down to −(L−1)
    if position_buckets > 0:
        distances = log_bucket(distances, position_buckets, k)
    rows = torch.clamp(distances + span, 0, 2 * span - 1)  # (2L − 1,)
    i = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    index = (length - 1) - (i - j)  # position of distance i − j in `distances`
    return rows, index
