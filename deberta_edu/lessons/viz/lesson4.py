"""Lesson 4 pictures: the 80/10/10 rates against the rule, and a masked LM's top-k guesses at each [MASK].

``plot_mask_rates`` draws what ``mask_tokens`` did; ``fill_mask`` collects guesses and ``plot_fill_mask``
draws them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from deberta_edu.figures import new_figure
from deberta_edu.training.evaluate import answer_rank


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
    device = next(model.parameters()).device  # pretrain.train leaves its model on the GPU, when there is one
    probs = model(ids[None].to(device)).logits[0].float().softmax(-1).cpu()  # (L, V)
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
                answer_rank=answer_rank(p, answer),
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
    fig = new_figure((4.2 * len(names) + 0.5, 1.55 * rows + 0.6))
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


def plot_mask_rates(rates: dict[str, float], expected: dict[str, float], title: str = "") -> Figure:
    """A bar per measured rate (chosen, [MASK], random, unchanged) and a black tick at what the rule says."""
    fig = new_figure((6, 2.6))
    ax = fig.subplots()
    names = list(rates)
    colors = ["0.6", "tab:blue", "tab:orange", "tab:green"][: len(names)]  # chosen, [MASK], random, unchanged
    ax.bar(names, [rates[n] for n in names], color=colors)
    ticks = [expected[n] for n in names]
    ax.scatter(names, ticks, marker="_", s=900, color="black", label="the rule", zorder=3)
    ax.set(ylabel="measured rate", title=title)
    ax.legend()
    return fig
