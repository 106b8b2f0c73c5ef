"""Pictures for the lessons: pure functions that return numpy arrays or matplotlib figures.

Nothing here draws on a global pyplot state or calls ``show``: every plot builds its own figure (a
``matplotlib.figure.Figure`` that knows how to show itself as PNG) and returns it, so a notebook displays
it, a widget renders it to PNG, and a test inspects it, all the same way. For each lesson the arrays
come first (``delta_matrix``, ``attention_maps``, ``shift_difference``, ``fill_mask``), then the figures that
draw them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from deberta_edu.figures import PROB_CMAP, SCORE_CMAP, PlotFigure
from deberta_edu.model.positions import log_bucket, relative_distance, relative_distance_matrix


# --- lesson 1: relative distance ---------------------------------------------------------------
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
    fig = PlotFigure(figsize=(size + 1.3, size), layout="constrained")
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
    fig = PlotFigure(figsize=(11, 4), layout="constrained")
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
    fig = PlotFigure(figsize=(max(7.0, 0.75 * width + 3.2), 1.1 * len(pairs) + 0.7), layout="constrained")
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


# --- lesson 2: disentangled attention ----------------------------------------------------------
@dataclass
class AttentionMaps:
    """Every layer's per-term score maps and probabilities for one sequence, as numpy.

    ``maps[layer, t, head]`` is an (L, L) map for ``kinds[t]``: the scaled terms (c2c, c2p, p2c, ...),
    "sum" (their total, the score before the softmax) and "probs" (the attention probabilities).
    """

    tokens: list[str]
    kinds: tuple[str, ...]
    maps: np.ndarray  # (layers, kinds, heads, L, L)

    @property
    def num_layers(self) -> int:
        return self.maps.shape[0]

    @property
    def num_heads(self) -> int:
        return self.maps.shape[2]

    def get(self, layer: int, head: int, kind: str) -> np.ndarray:
        if kind not in self.kinds:
            raise ValueError(f"unknown map {kind!r}; this model has {self.kinds}")
        if not (0 <= layer < self.num_layers and 0 <= head < self.num_heads):
            raise ValueError(
                f"layer {layer}, head {head} out of range: {self.num_layers} layers, "
                f"{self.num_heads} heads (both counted from 0)"
            )
        return self.maps[layer, self.kinds.index(kind), head]


@torch.no_grad()
def attention_maps(
    model, input_ids, tokens: Sequence[str] | None = None, attention_mask=None
) -> AttentionMaps:
    """Run ``model`` (DebertaModel or DebertaForMaskedLM, in eval mode) on one sequence; collect its maps."""
    encoder = getattr(model, "deberta", model)
    ids = torch.as_tensor(input_ids)
    ids = ids.unsqueeze(0) if ids.dim() == 1 else ids
    if ids.size(0) != 1:
        raise ValueError(f"attention_maps reads one sequence; got a batch of {ids.size(0)}")
    if attention_mask is not None:
        attention_mask = torch.as_tensor(attention_mask).reshape(ids.shape)
    out = encoder(ids, attention_mask, return_details=True)
    terms = tuple(out.attentions[0].terms)
    kinds = (*terms, "sum", "probs")
    per_layer = []
    for details in out.attentions:
        layer_terms = [details.terms[t][0] for t in terms]  # each (H, L, L)
        per_layer.append(torch.stack([*layer_terms, sum(layer_terms), details.probs[0]]))
    maps = torch.stack(per_layer).float().numpy()  # (layers, kinds, H, L, L)
    tokens = [str(t) for t in ids[0].tolist()] if tokens is None else list(tokens)
    if len(tokens) != ids.size(1):
        raise ValueError(f"{len(tokens)} tokens given for {ids.size(1)} input ids")
    return AttentionMaps(tokens, kinds, maps)


def plot_map(ax, values: np.ndarray, tokens: Sequence[str], title: str, probs: bool = False, vmax=None):
    """Draw one (L, L) map on ``ax`` with tokens on both axes; returns the image for a colorbar."""
    if probs:
        im = ax.imshow(values, cmap=PROB_CMAP, vmin=0, vmax=vmax or max(float(values.max()), 1e-6))
    else:
        vmax = vmax or max(float(np.abs(values).max()), 1e-6)
        im = ax.imshow(values, cmap=SCORE_CMAP, vmin=-vmax, vmax=vmax)
    L = len(tokens)
    fontsize = 8 if L <= 16 else 6
    ax.set_xticks(range(L))
    ax.set_yticks(range(L))
    ax.set_xticklabels(tokens, rotation=90, fontsize=fontsize)
    ax.set_yticklabels(tokens, fontsize=fontsize)
    ax.set_title(title, fontsize=10)
    return im


def plot_maps(
    named: dict[str, np.ndarray], tokens: Sequence[str], suptitle: str = "", shared_scale: bool = False
) -> Figure:
    """A row of (L, L) maps side by side; a map named "probs" gets the probability colour scale."""
    if not named:
        raise ValueError("nothing to plot: pass at least one map")
    n = len(named)
    L = len(tokens)
    cell = 2.6 + 0.08 * L
    fig = PlotFigure(figsize=(cell * n + 0.6, cell + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    vmax = max(float(np.abs(v).max()) for k, v in named.items() if k != "probs") if shared_scale else None
    for ax, (name, values) in zip(axes, named.items(), strict=True):
        im = plot_map(
            ax,
            np.asarray(values),
            tokens,
            name,
            probs=name == "probs",
            vmax=None if name == "probs" else vmax,
        )
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_attention(maps: AttentionMaps, layer: int, head: int, kind: str = "sum") -> Figure:
    """One map of one head, large, with tokens on both axes."""
    values = maps.get(layer, head, kind)
    L = len(maps.tokens)
    fig = PlotFigure(figsize=(3.5 + 0.22 * L, 3.0 + 0.22 * L), layout="constrained")
    ax = fig.subplots()
    what = "probability" if kind == "probs" else "scaled score"
    im = plot_map(
        ax, values, maps.tokens, f"layer {layer}, head {head}: {kind} ({what})", probs=kind == "probs"
    )
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig


def plot_terms(maps: AttentionMaps, layer: int, head: int, shared_scale: bool = True) -> Figure:
    """Every term of one head side by side, then their sum and the probabilities."""
    named = {kind: maps.get(layer, head, kind) for kind in maps.kinds}
    return plot_maps(named, maps.tokens, f"layer {layer}, head {head}", shared_scale=shared_scale)


def score_variances(d: int, n_terms: int = 3, samples: int = 20000, seed: int = 0) -> tuple[float, float]:
    """Variance of one dot product of unit-variance d-vectors, and of a sum of ``n_terms`` of them."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n_terms, samples, d, generator=g)
    b = torch.randn(n_terms, samples, d, generator=g)
    dots = (a * b).sum(-1)  # (n_terms, samples): independent dot products
    return float(dots[0].var()), float(dots.sum(0).var())


def plot_score_variance(d: int, samples: int = 20000, seed: int = 0) -> Figure:
    """Histograms of scores: one term and three terms, each divided by sqrt(d) and by sqrt(3d)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(3, samples, d, generator=g)
    b = torch.randn(3, samples, d, generator=g)
    dots = (a * b).sum(-1)
    one, three = dots[0], dots.sum(0)
    fig = PlotFigure(figsize=(10, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    bins = np.linspace(-5, 5, 81)
    for ax, scale, name in ((left, math.sqrt(d), "√d"), (right, math.sqrt(3 * d), "√(3d)")):
        for scores, label in ((one, "c2c alone"), (three, "c2c + c2p + p2c")):
            scaled = scores / scale
            ax.hist(scaled.numpy(), bins=bins, alpha=0.6, density=True,
                    label=f"{label}: var {float(scaled.var()):.2f}")
        ax.set_title(f"scores divided by {name} (d = {d})")
        ax.set_xlabel("score")
        ax.legend(fontsize=8)
    return fig


# --- lesson 3: absolute positions and the EMD --------------------------------------------------
def shift_difference(
    run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], input_ids, shift: int, pad_id: int = 0
) -> np.ndarray:
    """max |Δ| per token between ``run`` on a sequence and on the same sequence after ``shift`` pad tokens.

    ``run(ids, attention_mask) -> (1, L, D)`` states; the pads sit on the left and are masked out, so the
    real tokens are the same sentence, only placed ``shift`` positions further right.
    """
    ids = torch.as_tensor(input_ids).reshape(1, -1)
    n = ids.size(1)
    shifted = torch.cat([torch.full((1, shift), pad_id, dtype=ids.dtype), ids], dim=1)
    mask = torch.cat([torch.zeros(1, shift, dtype=torch.long), torch.ones(1, n, dtype=torch.long)], dim=1)
    with torch.no_grad():
        here = run(ids, torch.ones_like(ids))[0]  # (n, D)
        there = run(shifted, mask)[0, shift:]  # (n, D) the same tokens, moved right
    return (here - there).abs().amax(-1).float().numpy()


def plot_shift_difference(diffs: dict[str, np.ndarray], tokens: Sequence[str], shift: int) -> Figure:
    """Bars of max |Δ| per token for each model after moving the sentence ``shift`` places to the right."""
    fig = PlotFigure(figsize=(max(6.0, 0.7 * len(tokens) * len(diffs) ** 0.5 + 2), 3.4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(diffs)
    x = np.arange(len(tokens))
    for n, (name, values) in enumerate(diffs.items()):
        ax.bar(x + (n - (len(diffs) - 1) / 2) * width, np.maximum(values, 1e-9), width, label=name)
    ax.set_yscale("log")
    ax.axhline(1e-5, color="0.4", ls=":", lw=1)
    ax.text(-0.5, 1.3e-5, "float rounding", ha="left", fontsize=8, color="0.4")
    ax.set_xticks(x)
    ax.set_xticklabels(tokens, rotation=30)
    ax.set_ylabel("max |change| of the output")
    ax.set_title(f"the same sentence moved {shift} positions to the right")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never on them
    return fig


def plot_accuracies(accuracies: dict[str, float], chance: float, title: str = "probe accuracy") -> Figure:
    """A bar per model with its accuracy, and a dashed line at chance."""
    fig = PlotFigure(figsize=(1.6 * len(accuracies) + 2.5, 3.4), layout="constrained")
    ax = fig.subplots()
    names = list(accuracies)
    values = [accuracies[n] for n in names]
    bars = ax.bar(names, values, color=[f"C{n}" for n in range(len(names))])
    for bar, v in zip(bars, values, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, v + 0.02, f"{v:.0%}", ha="center")
    ax.axhline(chance, color="0.3", ls="--", lw=1)
    ax.text(len(names) - 0.5, chance + 0.02, f"chance {chance:.0%}", ha="right", fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("accuracy (held-out)")
    ax.set_title(title)
    return fig


# --- lesson 4: masked-language-model pretraining -----------------------------------------------
@dataclass
class FillMask:
    """A masked language model's top-k guesses for one hidden token."""

    position: int  # index in the sequence
    answer: str  # the piece that was hidden
    pieces: list[str]  # the k most probable pieces, best first
    probs: list[float]  # their probabilities
    answer_prob: float  # the probability the model gives the answer
    answer_rank: int  # 1 = the model's first choice


@torch.no_grad()
def fill_mask(model, input_ids, labels, id_to_piece: Callable[[int], str], k: int = 5) -> list[FillMask]:
    """Top-k predictions of ``model`` (a DebertaForMaskedLM in eval mode) at every labelled position of one sequence.

    ``input_ids`` (L,) is what the model sees ([MASK] where a token is hidden); ``labels`` (L,) holds the
    hidden token's id there and -100 elsewhere, as ``mask_tokens`` returns them.
    """
    ids, labels = torch.as_tensor(input_ids).reshape(-1), torch.as_tensor(labels).reshape(-1)
    if ids.shape != labels.shape:
        raise ValueError(f"input_ids has {ids.numel()} tokens but labels has {labels.numel()}")
    probs = model(ids[None]).logits[0].float().softmax(-1)  # (L, V)
    out = []
    for t in (labels != -100).nonzero().flatten().tolist():
        p, answer = probs[t], int(labels[t])
        top = p.topk(k)
        out.append(
            FillMask(
                position=t,
                answer=id_to_piece(answer),
                pieces=[id_to_piece(i) for i in top.indices.tolist()],
                probs=top.values.tolist(),
                answer_prob=float(p[answer]),
                answer_rank=int((p > p[answer]).sum()) + 1,
            )
        )
    return out


def plot_fill_mask(
    predictions: dict[str, list[FillMask]],
    contexts: Sequence[str] | None = None,
    vocab_size: int | None = None,
) -> Figure:
    """One row per hidden token, one column per model: the top-k guesses as bars, the answer in green.

    ``predictions`` maps a model's name to ``fill_mask`` results for the same hidden tokens;
    ``contexts`` (optional, one per hidden token) labels each row, e.g. the words around the [MASK].
    The probability axis is logarithmic; with ``vocab_size`` a dotted line marks an even guess, 1 / V.
    """
    names = list(predictions)
    rows = len(predictions[names[0]])
    if any(len(p) != rows for p in predictions.values()):
        raise ValueError("every model needs predictions for the same hidden tokens")
    if contexts is not None and len(contexts) != rows:
        raise ValueError(f"{len(contexts)} contexts for {rows} hidden tokens")
    lowest = min(min(g.probs[-1], g.answer_prob) for p in predictions.values() for g in p)
    left = 10 ** math.floor(math.log10(max(min(lowest, 1 / vocab_size if vocab_size else 1.0) / 2, 1e-12)))
    fig = PlotFigure(figsize=(4.2 * len(names) + 0.5, 1.55 * rows + 0.6), layout="constrained")
    axes = np.asarray(fig.subplots(rows, len(names), squeeze=False))
    for c, name in enumerate(names):
        for r, guess in enumerate(predictions[name]):
            ax = axes[r, c]
            y = np.arange(len(guess.pieces))[::-1]  # best guess on top
            colors = ["tab:green" if p == guess.answer else "0.7" for p in guess.pieces]
            ax.barh(y, np.asarray(guess.probs) - left, left=left, color=colors)
            ax.axvline(
                guess.answer_prob, color="tab:green", lw=1.5, ls="--"
            )  # the answer, in the top k or not
            if vocab_size:
                ax.axvline(1 / vocab_size, color="0.3", lw=1, ls=":")
            ax.set_xscale("log")
            ax.set_xlim(left, 1)
            ax.set_yticks(y)
            ax.set_yticklabels(guess.pieces, fontsize=8)
            ax.tick_params(axis="x", labelsize=7)
            ax.set_title(
                f"answer {guess.answer}: rank {guess.answer_rank:,}, p = {guess.answer_prob:.2g}",
                fontsize=8,
                color="tab:green" if guess.answer_rank == 1 else "black",
            )
            if r == 0:
                ax.annotate(name, (0.5, 1.45), xycoords="axes fraction", ha="center", fontsize=11)
            if c == 0 and contexts is not None:
                ax.set_ylabel(contexts[r], fontsize=8, rotation=0, ha="right", va="center")
        note = " (dotted: 1 / V, dashed: the answer)" if vocab_size else " (dashed: the answer)"
        axes[-1, c].set_xlabel("probability" + note, fontsize=8)
    return fig
