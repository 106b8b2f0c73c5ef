"""Lesson 1 pictures: relative distance δ(i, j) of eq. (3), v1's clamp and v2/v3's log buckets, word pairs,
and the two schemes eq. (3) sits between (Shaw et al.'s symmetric clip, T5's log buckets).

Arrays first (``delta_matrix``, ``clamped_mask``, ``table_rows``, ``shaw_rows``, ``t5_buckets``,
``distinct_rows``, ``pair_distance``), then the figures that draw them. Every figure is built with
``deberta_edu.figures`` (no pyplot state) and returned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from deberta_edu.figures import new_figure
from deberta_edu.model.positions import log_bucket, relative_distance, relative_distance_matrix


def delta_matrix(length: int, k: int) -> np.ndarray:
    """δ(i, j) of eq. (3) for every query i and key j of a sequence: an (L, L) integer array."""
    return relative_distance_matrix(length, k=k).numpy()


def clamped_mask(length: int, k: int) -> np.ndarray:
    """True where (i, j) reads one of the two end rows of eq. (3), the rows that many distances share.

    The clamp is not symmetric: row 0 takes every i − j <= −k, but row 2k − 1 takes every i − j >= k − 1,
    because the "otherwise" branch i − j + k already gives 2k − 1 at i − j = k − 1. Written from these
    inequalities, not from δ, so that a lesson can check the one against the other.
    """
    i, j = np.indices((length, length))
    return (i - j <= -k) | (i - j >= k - 1)


def plot_delta(length: int, k: int) -> Figure:
    """Heat map of δ(i, j); pale cells read an end row (0 or 2k − 1) that farther distances share too."""
    if length < 1:
        raise ValueError(f"the sequence length must be >= 1, got {length}")
    if k < 1:
        raise ValueError(f"the maximum relative distance k must be >= 1, got k={k}")
    delta = delta_matrix(length, k)
    clamped = clamped_mask(length, k)
    size = min(7.0, 3.0 + 0.2 * length)
    fig = new_figure((size + 1.3, size))
    ax = fig.subplots()
    im = ax.imshow(delta, cmap="viridis", vmin=0, vmax=2 * k - 1)
    veil = np.zeros((length, length, 4))
    veil[clamped] = (1.0, 1.0, 1.0, 0.55)  # white veil over the cells on a shared end row
    ax.imshow(veil)
    for d in (-k, k - 2):  # edges between i − j = −k | −k + 1 and between k − 2 | k − 1
        xs, ys = _staircase(length, d)
        ax.plot(xs, ys, color="white", lw=2)
    if length <= 16:
        for (i, j), v in np.ndenumerate(delta):
            dark = clamped[i, j] or v > 1.3 * k
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="black" if dark else "white")
    ax.set_xlabel("key position j")
    ax.set_ylabel("query position i")
    ax.set_title(
        f"δ(i, j) for L = {length}, k = {k}: rows 0 … {2 * k - 1}\n"
        f"pale: row 0 (i − j ≤ {-k}) and row {2 * k - 1} (i − j ≥ {k - 1})"
    )
    ticks = range(0, length, max(1, length // 12))
    ax.set_xticks(list(ticks))
    ax.set_yticks(list(ticks))
    fig.colorbar(im, ax=ax, label="row of the relative table", fraction=0.046, pad=0.04)
    return fig


def pale_cells(fig: Figure) -> np.ndarray:
    """Read back from a ``plot_delta`` figure which cells it veiled: (L, L) bool, as drawn."""
    return np.asarray(fig.axes[0].images[1].get_array())[..., 3] > 0


def _staircase(length: int, d: int) -> tuple[list[float], list[float]]:
    """Cell-edge path between the cells with i − j = d (right of it) and those with i − j = d + 1 (left)."""
    xs, ys = [], []
    for i in range(length):
        edge = i - d - 0.5  # between column i − d − 1 (i − j = d + 1) and column i − d (i − j = d)
        if 0 <= edge <= length - 1:
            xs += [edge, edge]
            ys += [i - 0.5, i + 0.5]
    return xs, ys


def shaw_rows(distances: np.ndarray | Sequence[int], k: int) -> np.ndarray:
    """Shaw et al. (2018) for a signed i − j: row clip(j − i, −k, k) + k of 2k + 1 rows, symmetric."""
    return np.clip(-np.asarray(distances), -k, k) + k


def t5_buckets(
    distances: np.ndarray | Sequence[int], num_buckets: int = 32, max_distance: int = 128
) -> np.ndarray:
    """T5's bidirectional bucket for a signed i − j (T5 itself measures j − i).

    Half the buckets per direction; in each half, distances below a quarter of num_buckets are exact,
    the rest share buckets that widen with log|j − i|, in steps that would pass the last bucket at
    max_distance; rounded down, the last bucket starts earlier (at 91 for 32 buckets and 128) and holds
    every farther distance.
    float32 and truncation as T5's code, so that the buckets match it.
    """
    rel = -torch.as_tensor(np.asarray(distances), dtype=torch.long)  # j − i
    half = num_buckets // 2
    exact = half // 2
    n = rel.abs()
    scaled = torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)
    far = torch.clamp(exact + scaled.long(), max=half - 1)
    return ((rel > 0).long() * half + torch.where(n < exact, n, far)).numpy()


def plot_schemes(k: int = 4, num_buckets: int = 32, max_distance: int = 128, span: int = 24) -> Figure:
    """Three ways to turn a distance into a table row: Shaw's symmetric clip, eq. (3), T5's log buckets.

    Each panel draws the signed row (row minus the table's centre, in the i − j convention) so that the
    three read alike; the shaded band marks the distances with a row of their own.
    """
    d = np.arange(-span, span + 1)
    d5 = np.arange(-(max_distance + 32), max_distance + 33)
    half = num_buckets // 2
    t5 = t5_buckets(d5, num_buckets, max_distance)
    t5_signed = np.where(t5 >= half, -(t5 - half), t5)  # upper half is j − i > 0, i.e. i − j < 0
    exact = num_buckets // 4 - 1
    shared_from = int(np.abs(d5[t5_signed == t5_signed.max()]).min())  # the start of the last bucket
    panels = [
        (f"Shaw et al.: clip to [−{k}, {k}], {2 * k + 1} rows", d, k - shaw_rows(d, k), (-(k - 1), k - 1)),
        (f"DeBERTa eq. (3): {2 * k} rows, ends at −{k} and {k - 1}", d, table_rows(d, k) - k,
         (-(k - 1), k - 2)),
        (f"T5: {num_buckets} scalar buckets, shared from ±{shared_from}", d5, t5_signed, (-exact, exact)),
    ]
    fig = new_figure((12, 3.4))
    for ax, (title, x, rows, (lo, hi)) in zip(fig.subplots(1, 3), panels, strict=True):
        ax.axvspan(lo - 0.5, hi + 0.5, color="0.88", zorder=0, label="a row of its own")
        ax.step(x, rows, where="mid", lw=1.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("distance i − j")
        ax.legend(fontsize=7, loc="upper left")
    fig.axes[0].set_ylabel("signed row (row − centre)")
    return fig


def table_rows(distances: np.ndarray | Sequence[int], k: int, position_buckets: int = -1) -> np.ndarray:
    """The table row for each signed distance i − j: eq. (3) (v1) or log buckets (v2/v3), then the clamp."""
    rel = torch.as_tensor(np.asarray(distances), dtype=torch.long)
    if position_buckets > 0:
        rel = log_bucket(rel, position_buckets, k)
        span = position_buckets
    else:
        span = k
    return torch.clamp(rel + span, 0, 2 * span - 1).numpy()


def distinct_rows(length: int, k: int, position_buckets: int = -1) -> int:
    """How many different rows of the relative table a sequence of ``length`` tokens reads."""
    distances = np.arange(-(length - 1), length)
    return len(np.unique(table_rows(distances, k, position_buckets)))


def plot_buckets(length: int, k: int, position_buckets: int) -> Figure:
    """v1's clamp against the v2/v3 log buckets: row per distance, and distinct rows per sequence length.

    Both use the same k (max_relative_positions): v1 has 2k rows, one of its own for each i − j in
    −(k − 1) … k − 2 (k − 1 already reads the top row, with every larger distance);
    v2/v3 have 2 × position_buckets rows, exact up to position_buckets / 2, logarithmic beyond.
    """
    d = np.arange(-(length - 1), length)
    v1 = table_rows(d, k) - k
    v2 = table_rows(d, k, position_buckets) - position_buckets  # raises a clear ValueError when invalid
    fig = new_figure((11, 4))
    left, right = fig.subplots(1, 2)
    left.plot(d, v1, label=f"v1: clamp at k = {k} ({2 * k} rows)", lw=2)
    left.plot(d, v2, label=f"v2/v3: log buckets ({2 * position_buckets} rows)", lw=2)
    left.axvspan(
        -position_buckets // 2,
        position_buckets // 2,
        color="0.9",
        zorder=0,
        label=f"|i − j| ≤ {position_buckets // 2}: exact in v2/v3",
    )
    left.set_xlabel("distance i − j")
    left.set_ylabel("signed row (row − table centre)")
    left.set_title("which row does a distance use?")
    left.legend(fontsize=8, loc="upper left")
    lengths = np.unique(np.geomspace(2, max(length, 2), 60).astype(int))
    left_counts = [distinct_rows(n, k) for n in lengths]
    right_counts = [distinct_rows(n, k, position_buckets) for n in lengths]
    right.plot(lengths, left_counts, label="v1", lw=2)
    right.plot(lengths, right_counts, label="v2/v3", lw=2)
    right.set_xscale("log")
    right.set_xlabel("sequence length L")
    right.set_ylabel("distinct rows read")
    right.set_title(
        f"L = {length}: v1 reads {distinct_rows(length, k)} rows, "
        f"v2/v3 {distinct_rows(length, k, position_buckets)}"
    )
    right.legend(fontsize=8)
    return fig


@dataclass
class PairDistance:
    """Where two words sit in a sentence and the table rows that connect them."""

    tokens: list[str]
    i: int  # position of the first word
    j: int  # position of the second word
    delta_ij: int  # δ(i, j): the row word i uses for word j
    delta_ji: int  # δ(j, i)


def pair_distance(tokens: Sequence[str], word_a: str, word_b: str, k: int) -> PairDistance:
    """The first occurrence of ``word_a`` and ``word_b`` in ``tokens`` and δ between them."""
    tokens = list(tokens)
    missing = [w for w in (word_a, word_b) if w not in tokens]
    if missing:
        raise ValueError(f"{missing} not found in the sentence {tokens}")
    i, j = tokens.index(word_a), tokens.index(word_b)
    return PairDistance(tokens, i, j, relative_distance(i, j, k), relative_distance(j, i, k))


def plot_pairs(sentences: Sequence[Sequence[str]], word_a: str, word_b: str, k: int) -> Figure:
    """One sentence per line, an arc from ``word_a`` to ``word_b`` labelled with the rows δ they use."""
    pairs = [pair_distance(s, word_a, word_b, k) for s in sentences]
    lefts = [np.concatenate([[0.0], np.cumsum([0.4 + 0.12 * len(t) for t in p.tokens])]) for p in pairs]
    width = max(float(x[-1]) for x in lefts)
    fig = new_figure((max(7.0, 0.75 * width + 3.2), 1.1 * len(pairs) + 0.7))
    ax = fig.subplots()
    for row, (p, x) in enumerate(zip(pairs, lefts, strict=True)):
        y = -1.3 * row
        centre = (x[:-1] + x[1:]) / 2 - 0.2  # middle of each token's box
        for t, tok in enumerate(p.tokens):
            hot = t in (p.i, p.j)
            ax.text(
                centre[t],
                y,
                tok,
                ha="center",
                va="center",
                fontsize=10,
                fontweight="bold" if hot else "normal",
                bbox={"boxstyle": "round,pad=0.25", "fc": "#ffd27f" if hot else "#eeeeee", "ec": "none"},
            )
        ax.add_patch(
            FancyArrowPatch(
                (centre[p.i], y + 0.3),
                (centre[p.j], y + 0.3),
                connectionstyle="arc3,rad=-0.3",
                arrowstyle="<->",
                mutation_scale=10,
                color="C3",
                lw=1.5,
            )
        )
        ax.text(
            width + 0.3,
            y,
            f"i − j = {p.i - p.j:+d}   δ(i,j) = {p.delta_ij}   δ(j,i) = {p.delta_ji}",
            ha="left",
            va="center",
            fontsize=9,
            color="C3",
        )
    ax.set_xlim(-0.5, width + 4.2)
    ax.set_ylim(-1.3 * len(pairs) + 0.6, 1.0)
    ax.axis("off")
    ax.set_title(
        f"'{word_a}' (i) and '{word_b}' (j), k = {k}: the rows depend on the distance, not the place",
        fontsize=10,
    )
    return fig
