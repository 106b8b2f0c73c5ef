"""Lesson 2 pictures: disentangled attention, term by term (c2c, c2p, p2c), and why scores are scaled by √3d.

``attention_maps`` runs a model once and keeps every layer's per-term score maps; the plots draw them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from deberta_edu.figures import PROB_CMAP, SCORE_CMAP, new_figure


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
    fig = new_figure((cell * n + 0.6, cell + 0.5))
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
    fig = new_figure((3.5 + 0.22 * L, 3.0 + 0.22 * L))
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
    fig = new_figure((10, 3.4))
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
