"""Lesson 3 pictures: does an output move when the sentence moves, and how well a probe reads position.

``shift_difference`` measures the first; ``plot_accuracies`` draws ``training.probe``'s accuracies and chance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from deberta_edu.facts import PAD_ID
from deberta_edu.figures import new_figure


def shift_difference(
    run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], input_ids, shift: int, pad_id: int = PAD_ID
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
    fig = new_figure((max(6.0, 0.7 * len(tokens) * len(diffs) ** 0.5 + 2), 3.4))
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
    fig = new_figure((1.6 * len(accuracies) + 2.5, 3.4))
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
