"""Lesson 2: disentangled attention term by term, Algorithm 1, p2p against a c2p bias, the √(3d) scale.

``attention_maps`` runs a model once and keeps every layer's per-term score maps; the plots draw them.
``algorithm1`` transcribes the paper's Algorithm 1 for one head; ``mirror_rows`` relabels a table so that
δ(i, j) reads what δ(j, i) read; ``fit_distance_bias`` finds the query bias whose c2p part reproduces a
per-distance map such as p2p; ``scale_study`` measures a layer's softmax under √(3d) and under √d;
``head_patterns`` measures what each head of a trained model does (previous/next-token attention, diagonal
c2p, column p2c).
"""

from __future__ import annotations

import math
import textwrap
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


@dataclass
class HeadPattern:
    """What one head of a model does on one sequence, in numbers a reader can check against its maps.

    ``previous``/``following``: the mean attention probability on the token just before/after the query
    (uniform attention gives 1/L). ``offset_share``: the share of the c2p map's variance that its diagonals
    explain (1: c2p depends on i − j alone, a pure "diagonal band" map). ``column_share``: the same for
    p2c and its columns (1: p2c depends on the key j alone, a "column" map). ``lift``: for each score term
    (c2c, c2p, p2c), how far above its row's mean it scores the neighbour this head prefers (the previous
    token when ``previous >= following``, else the next), averaged over the queries: which terms make the
    head look one step away.
    """

    layer: int
    head: int
    previous: float
    following: float
    offset_share: float
    column_share: float
    lift: dict[str, float]


def _explained_share(values: np.ndarray, groups: np.ndarray) -> float:
    """Share of the variance of ``values`` explained by the group means (R² of a one-way layout)."""
    values, groups = values.ravel(), groups.ravel()
    total = float(((values - values.mean()) ** 2).sum())
    if total == 0:
        return 0.0
    _, index = np.unique(groups, return_inverse=True)
    means = np.bincount(index, values) / np.bincount(index)
    return float(((means[index] - values.mean()) ** 2).sum() / total)


def head_patterns(maps: AttentionMaps) -> list[HeadPattern]:
    """One ``HeadPattern`` per (layer, head) of ``maps`` (a model with c2p and p2c)."""
    L = len(maps.tokens)
    i, j = np.indices((L, L))
    found = []
    terms = [k for k in maps.kinds if k not in ("sum", "probs")]
    for layer in range(maps.num_layers):
        for head in range(maps.num_heads):
            probs = maps.get(layer, head, "probs")
            previous, following = float(np.diagonal(probs, -1).mean()), float(np.diagonal(probs, 1).mean())
            # the preferred neighbour's diagonal, and the queries it belongs to (all but the first or the last)
            offset, queries = (-1, slice(1, None)) if previous >= following else (1, slice(None, -1))
            lift = {}
            for kind in terms:
                m = maps.get(layer, head, kind)
                lift[kind] = float((np.diagonal(m, offset) - m.mean(1)[queries]).mean())
            found.append(HeadPattern(
                layer, head, previous, following,
                _explained_share(maps.get(layer, head, "c2p"), i - j),
                _explained_share(maps.get(layer, head, "p2c"), j), lift))
    return found


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


def plot_attention(maps: AttentionMaps, layer: int, head: int, kind: str = "sum", model: str = "") -> Figure:
    """One map of one head, large, with tokens on both axes; ``model`` (which model drew it) above, small."""
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
    if model:
        fig.suptitle(textwrap.fill(model, 70), fontsize=7)
    return fig


def plot_terms(maps: AttentionMaps, layer: int, head: int, shared_scale: bool = True, model: str = "") -> Figure:
    """Every term of one head side by side, then their sum and the probabilities; ``model`` (e.g. the label
    ``load_demo`` gives) goes under the title, to say which model drew the maps."""
    named = {kind: maps.get(layer, head, kind) for kind in maps.kinds}
    title = f"layer {layer}, head {head}" + (f"\n{textwrap.fill(model, 110)}" if model else "")
    return plot_maps(named, maps.tokens, title, shared_scale=shared_scale)


# --- Algorithm 1 (§3.1.1), line by line, for one head ----------------------------------------------
def algorithm1(qc, kc, vc, qr, kr, delta, p2c_rows: str = "paper", scale_terms: int = 2):
    """Algorithm 1 of the paper for one head, as printed, with loops over i and j where it has them.

    qc, kc, vc (L, d); qr, kr (2k, d); delta (L, L) with delta[i, j] = δ(i, j). ``p2c_rows="paper"`` reads
    Ã_p2c[δ[j, i], j] as line 16 prints it, ``"released"`` reads δ[i, j] as the released code does.
    ``scale_terms`` is the n in softmax(Ã / √(n d)): line 20 prints 2, eq. (4) and the code use 3.
    Returns ({"c2c", "c2p", "p2c"} each (L, L) unscaled, H_o (L, d)).
    """
    if p2c_rows not in ("paper", "released"):
        raise ValueError(
            f"p2c_rows must be 'paper' (line 16: δ[j, i]) or 'released' (δ[i, j]), got {p2c_rows!r}"
        )
    L, d = qc.shape
    a_c2c = qc @ kc.T  # line 2
    a_c2p_all = torch.stack([qc[i] @ kr.T for i in range(L)])  # lines 3–5: (L, 2k), each query vs every row
    a_p2c_all = torch.stack([kc[j] @ qr.T for j in range(L)], dim=1)  # lines 11–13: (2k, L), column j
    a_c2p, a_p2c = torch.empty(L, L), torch.empty(L, L)
    for i in range(L):
        for j in range(L):
            a_c2p[i, j] = a_c2p_all[i, delta[i, j]]  # lines 6–10
            row = delta[j, i] if p2c_rows == "paper" else delta[i, j]
            a_p2c[i, j] = a_p2c_all[row, j]  # lines 14–18
    a = a_c2c + a_c2p + a_p2c  # line 19
    h_o = torch.softmax(a / math.sqrt(scale_terms * d), dim=-1) @ vc  # line 20
    return {"c2c": a_c2c, "c2p": a_c2p, "p2c": a_p2c}, h_o


def mirror_rows(table: torch.Tensor) -> torch.Tensor:
    """The table with row r moved to 2k − r (r >= 1), and row 0 given the old top row 2k − 1.

    Read at δ(i, j), it gives what the original gives at δ(j, i) for every i − j < k: the mirror
    δ(j, i) = 2k − δ(i, j) inside the window, and row 0 ↔ 2k − 1 for i − j <= −k. For i − j >= k no
    table can: δ(i, j) is the top row for i − j = k − 1 too, where δ(j, i) is 1, not 0.
    """
    return torch.cat([table[-1:], table[1:].flip(0)])


# --- p2p against a bias in c2p --------------------------------------------------------------------
@dataclass
class DistanceBiasFit:
    """A query bias b per head fitted so that scale · b · K^r_{δ(i,j)} matches a target (H, L, L) map."""

    bias: torch.Tensor  # (H, d)
    fitted: torch.Tensor  # (H, L, L)
    residual: torch.Tensor  # (H, L, L): fitted − target


def fit_distance_bias(target: torch.Tensor, pos_k: torch.Tensor, index: torch.Tensor, scale: float = 1.0):
    """Least squares, per head: the query bias b whose c2p part, scale · b · K^r_{δ(i,j)}, best fits ``target``.

    target (H, L, L), e.g. a p2p map; pos_k (H, R, d) the position keys; index (L, L) the rows δ(i, j).
    Any map that is a function of δ(i, j) alone is matched exactly when the rows it uses are linearly
    independent in d dimensions (at most d of them).
    """
    heads, length, _ = target.shape
    design = pos_k[:, index].reshape(heads, length * length, -1) * scale  # (H, L·L, d)
    flat = target.reshape(heads, length * length, 1)
    bias = torch.linalg.lstsq(design.double(), flat.double()).solution[..., 0].to(target.dtype)  # (H, d)
    fitted = (design @ bias[..., None]).reshape(heads, length, length)
    return DistanceBiasFit(bias, fitted, fitted - target)


# --- the √(3d) scale, measured on a model -----------------------------------------------------------
@dataclass
class ScaleStudy:
    """What the three-term scores of one layer look like on real tokens, under √(3d) and under √d."""

    term_variance: dict[str, float]  # var(raw term) / d: ≈ 1 when each term is a dot product of variance ≈ d
    scores: torch.Tensor  # (H, L, L) c2c + c2p + p2c divided by √(3d), as the model computes them
    entropy: dict[str, float]  # mean entropy of an attention row (nats), for "√(3d)" and "√d"
    max_prob: dict[str, float]  # mean largest probability of a row
    uniform_entropy: float  # log L: a row that attends to every key equally
    n_terms: int = 3  # terms in the score: the model divides by √(n_terms · d)


def _entropy(scores: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(scores, dim=-1)
    return -(logp.exp() * logp).sum(-1)


@torch.no_grad()
def scale_study(model, input_ids, layer: int = 0) -> ScaleStudy:
    """Run ``model`` on one sequence; measure one layer's terms, and its softmax under √(3d) and under √d.

    √d is what a one-term (BERT) layer would divide by: the same scores multiplied by √n for a layer of n terms
    (√3 for DeBERTa's c2c + c2p + p2c).
    """
    encoder = getattr(model, "deberta", model)
    ids = torch.as_tensor(input_ids).reshape(1, -1)
    details = encoder(ids, return_details=True).attentions[layer]
    attention = encoder.encoder.layers[layer].attention
    n_terms = 1 + len([t for t in details.terms if t != "c2c"])
    d = attention.head_size
    raw = {t: v[0] / attention.scale for t, v in details.terms.items()}  # unscaled dot products
    scores = sum(details.terms.values())[0]  # (H, L, L)
    by_scale = {f"√({n_terms}d)": scores, "√d": scores * math.sqrt(n_terms)}
    return ScaleStudy(
        term_variance={t: float(v.var() / d) for t, v in raw.items()},
        scores=scores,
        entropy={name: float(_entropy(s).mean()) for name, s in by_scale.items()},
        max_prob={name: float(torch.softmax(s, -1).amax(-1).mean()) for name, s in by_scale.items()},
        uniform_entropy=math.log(ids.size(1)),
        n_terms=n_terms,
    )


def plot_scale_study(study: ScaleStudy, title: str = "") -> Figure:
    """Left: the scores under each scale. Right: mean row entropy as the scores are multiplied by c."""
    (big, small), (e_big, e_small) = study.entropy.keys(), study.entropy.values()
    factor = math.sqrt(study.n_terms)  # ÷ √d instead of ÷ √(n d): every score √n times larger
    fig = new_figure((10, 3.4))
    left, right = fig.subplots(1, 2)
    bins = np.linspace(-6, 6, 61)
    for name, scores in ((big, study.scores), (small, study.scores * factor)):
        left.hist(scores.flatten().numpy(), bins=bins, alpha=0.6, density=True,
                  label=f"÷ {name}: std {float(scores.std()):.2f}")
    left.set_xlabel("score c2c + c2p + p2c" if study.n_terms == 3 else f"score, the sum of {study.n_terms} terms")
    left.set_title("scores entering the softmax")
    left.legend(fontsize=8)
    c = np.geomspace(0.25, 8, 40)
    right.plot(c, [float(_entropy(study.scores * x).mean()) for x in c], lw=2)
    right.axhline(study.uniform_entropy, color="0.6", ls=":", label="log L: uniform rows")
    right.plot([1, factor], [e_big, e_small], "o", color="C3")
    right.annotate(f"÷ {big}", (1, e_big), textcoords="offset points", xytext=(6, 4), fontsize=8)
    right.annotate(f"÷ {small}", (factor, e_small), textcoords="offset points", xytext=(6, 4), fontsize=8)
    right.set_xscale("log")
    right.set_xticks([0.25, 0.5, 1, 2, 4, 8], ["¼", "½", "1", "2", "4", "8"])
    right.minorticks_off()
    right.set_xlabel(f"scores multiplied by c (÷ √d is c = √{study.n_terms})")
    right.set_ylabel("mean row entropy (nats)")
    right.set_title("larger scores, sharper rows")
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
