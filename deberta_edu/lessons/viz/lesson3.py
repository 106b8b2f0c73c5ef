"""Lesson 3 pictures: does an output move with the input, what a token can know of its place, the probe.

``shift_difference`` measures the first; ``matrix_flops`` counts a computation's cost (model complexity, A.7);
``anchor_rows`` says which row of the relative table a token at each
position uses for [CLS] at position 0 (all a relative-only model can know of its absolute place);
``plot_probe_table`` draws ``training.probe``'s table of accuracies against chance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from deberta_edu.facts import PAD_ID
from deberta_edu.figures import new_figure
from deberta_edu.model.positions import relative_distance_matrix
from deberta_edu.training.probe import ProbeTable


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


def plot_shift_difference(diffs: dict[str, np.ndarray], tokens: Sequence[str], shift: int, models: str = "") -> Figure:
    """Bars of max |Δ| per token for each model after moving the sentence ``shift`` places to the right;
    ``models`` says which models drew them (e.g. "tiny models, random weights"), under the title."""
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
    ax.set_title(f"the same sentence moved {shift} positions to the right" + (f"\n{models}" if models else ""))
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


def matrix_flops(fn: Callable[[], object]) -> int:
    """Matrix FLOPs (2 per multiply-add) of ``fn()``, counted by ``torch.utils.flop_counter``.

    The counter knows the GPU attention kernels but not the CPU one that ``scaled_dot_product_attention``
    runs here; it is counted the same way (QKᵀ and probs @ V), so c2c is not left out. ``fn`` runs with
    autograd on, even inside ``torch.no_grad()`` (the counter's module tracker fails without it); nothing is
    backpropagated.
    """
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_attention(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    cpu_op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    with (
        torch.enable_grad(),
        FlopCounterMode(display=False, custom_mapping={cpu_op: cpu_attention}) as counter,
    ):
        fn()
    return counter.get_total_flops()


def anchor_rows(length: int, k: int, position_buckets: int = -1) -> np.ndarray:
    """(length,) the relative-table row δ(p, 0) that a token at position p uses for the anchor at position 0.

    Two positions with the same row are the same to relative attention as far as [CLS] can tell: eq. (3)
    clamps every distance >= k − 1 to one row; the v2/v3 log buckets share a row among several distances
    beyond ``position_buckets / 2``.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    return relative_distance_matrix(length, 1, k=k, position_buckets=position_buckets)[:, 0].numpy()


def plot_anchor_rows(rows: dict[str, np.ndarray]) -> Figure:
    """Row δ(p, 0) against position p, one line per positional scheme: flat stretches are positions lost."""
    fig = new_figure((7.0, 3.4))
    ax = fig.subplots()
    for n, (name, r) in enumerate(rows.items()):
        distinct = len(np.unique(r))
        ax.plot(
            np.arange(len(r)),
            r,
            lw=4.0 if n == 0 else 1.5,
            alpha=0.5 if n == 0 else 1.0,  # shared stretches
            label=f"{name}: {distinct:,} of {len(r):,} positions told apart",
        )  # stay visible
    ax.set_xlabel("position p of the token (the anchor [CLS] sits at 0)")
    ax.set_ylabel("table row δ(p, 0)")
    ax.set_title("what relative attention can know of a token's absolute place")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_probe_table(table: ProbeTable, title: str = "subject or object slot?") -> Figure:
    """Grouped bars: a group per setting, a bar per model (mean over seeds, whiskers min–max); chance dashed."""
    settings = list(table.accuracy)
    models = list(table.accuracy[settings[0]])
    fig = new_figure((2.4 * len(settings) + 3.0, 3.6))
    ax = fig.subplots()
    width = 0.8 / len(models)
    for m, model in enumerate(models):
        x = np.arange(len(settings)) + (m - (len(models) - 1) / 2) * width
        acc = [np.asarray(table.accuracy[s][model]) for s in settings]
        mean = np.array([a.mean() for a in acc])
        spread = np.array([[a.mean() - a.min() for a in acc], [a.max() - a.mean() for a in acc]])
        ax.bar(x, mean, width, yerr=spread, capsize=3, color=f"C{m}", label=model)
        for xi, v in zip(x, mean, strict=True):
            ax.text(xi, v + 0.03, f"{v:.0%}", ha="center", fontsize=8)
    for n, s in enumerate(settings):
        ax.plot([n - 0.45, n + 0.45], [table.chance[s]] * 2, color="0.3", ls="--", lw=1)
    ax.text(len(settings) - 0.55, table.chance[settings[-1]] - 0.07, "chance", ha="right", fontsize=8)
    ax.set_xticks(np.arange(len(settings)))
    ax.set_xticklabels(settings)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("accuracy (held-out)")
    ax.set_title(f"{title}  ({table.steps} steps, seeds {', '.join(map(str, table.seeds))})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
