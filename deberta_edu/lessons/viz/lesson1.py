"""Lesson 1 pictures: relative distance δ(i, j) of eq. (3), v1's clamp and v2/v3's log buckets, word pairs.

Arrays first (``delta_matrix``, ``table_rows``, ``distinct_rows``, ``pair_distance``), then the figures that
draw them. Every figure is built with ``deberta_edu.figures`` (no pyplot state) and returned.
"""

from __future__ import annotations

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
    """True where |i − j| >= k: the pairs whose distance eq. (3) clamps to row 0 or 2k − 1."""
    i, j = np.indices((length, length))
    return np.abs(i - j) >= k


def plot_delta(length: int, k: int) -> Figure:
    """Heat map of δ(i, j); pale cells beyond the white staircase are clamped to a row at the table's end."""
    if length < 1:
        raise ValueError(f"the sequence length must be >= 1, got {length}")
    delta = delta_matrix(length, k)
    clamped = clamped_mask(length, k)
    size = min(7.0, 3.0 + 0.2 * length)
    fig = new_figure((size + 1.3, size))
    ax = fig.subplots()
    im = ax.imshow(delta, cmap="viridis", vmin=0, vmax=2 * k - 1)
    veil = np.zeros((length, length, 4))
    veil[clamped] = (1.0, 1.0, 1.0, 0.55)  # white veil over the clamped cells
    ax.imshow(veil)
    for d in (k, -k):  # the staircase |i − j| = k that separates exact from clamped distances
        xs, ys = _staircase(length, d)
        ax.plot(xs, ys, color="white", lw=2)
    if length <= 16:
        for (i, j), v in np.ndenumerate(delta):
            ax.text(
                j,
                i,
                str(v),
                ha="center",
                va="center",
                fontsize=8,
                color="black" if clamped[i, j] or v > 1.3 * k else "white",
            )
    ax.set_xlabel("key position j")
    ax.set_ylabel("query position i")
    ax.set_title(f"δ(i, j) for L = {length}, k = {k}: rows 0 … {2 * k - 1}\npale: |i − j| ≥ k, clamped")
    ticks = range(0, length, max(1, length // 12))
    ax.set_xticks(list(ticks))
    ax.set_yticks(list(ticks))
    fig.colorbar(im, ax=ax, label="row of the relative table", fraction=0.046, pad=0.04)
    return fig


def _staircase(length: int, d: int) -> tuple[list[float], list[float]]:
    """Cell-edge path between the cells with i − j = d − sign(d) and those with i − j = d."""
    xs, ys = [], []
    for i in range(length):
        j = i - d if d > 0 else i - d - 1  # the last exact cell before the boundary
        edge = j + 0.5
        if -0.5 <= edge <= length - 0.5:
            xs += [edge, edge]
            ys += [i - 0.5, i + 0.5]
    return xs, ys


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

    Both use the same k (max_relative_positions): v1 has 2k rows and keeps |i − j| < k exact;
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
