"""Lesson 6, the pictures: curves against tokens and against FLOPs, the grid, and every measure per seed.

    plot_curves    held-out MLM loss against tokens seen and against training FLOPs (one thin line per seed,
                   the unigram plateau dashed), masked-token accuracy against FLOPs, and the learning-rate grid
    plot_summary   each measure at equal FLOPs: one dot per seed, the mean as a bar, the baselines as lines
                   (the probes' random-init baseline per variant, a bar across its column); and the paper's
                   Table 4 beside
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.ticker import PercentFormatter

from deberta_edu.figures import save_figure, subplots

from .markdown import run_kind
from .plan import LABELS, VARIANTS
from .report import METRICS, PAPER

COLORS = {"bert": "tab:gray", "deberta": "tab:blue", "no_emd": "tab:orange", "no_c2p": "tab:green",
          "no_p2c": "tab:purple"}


def _main(results: dict):
    """(variant, [run summaries at its best rate]) for every variant with a finished main run."""
    for v in VARIANTS:
        runs = [results["runs"][r] for r in results["main_runs"].get(v, {}).values() if r in results["runs"]]
        runs = [r for r in runs if not r.get("failed")]
        if runs:
            yield v, runs


def plot_curves(results: dict):
    fig, axes = subplots(2, 2, figsize=(13, 8))
    base = results.get("unigram_baseline")
    for v, runs in _main(results):
        for i, r in enumerate(runs):
            label = f"{LABELS[v]} (lr {r['lr']:g})" if i == 0 else None
            c = r["curve"]
            axes[0, 0].plot(c["tokens"], c["val_loss"], color=COLORS[v], lw=1, marker="o", ms=2, label=label)
            axes[0, 1].plot(c["flops"], c["val_loss"], color=COLORS[v], lw=1, marker="o", ms=2, label=label)
            axes[1, 0].plot(c["flops"], c["val_accuracy"], color=COLORS[v], lw=1, marker="o", ms=2, label=label)
    for ax, key in ((axes[0, 0], "val_loss"), (axes[0, 1], "val_loss"), (axes[1, 0], "val_accuracy")):
        if base:
            ax.axhline(base[key], color="k", ls="--", lw=0.8, label="word frequencies alone")
        ax.grid(alpha=0.3)
    axes[0, 0].set(xlabel="tokens seen", ylabel="held-out MLM loss (nats)", title="equal tokens: loss vs tokens")
    axes[0, 1].set(xlabel="training FLOPs", ylabel="held-out MLM loss (nats)", title="equal FLOPs: loss vs FLOPs")
    axes[1, 0].set(xlabel="training FLOPs", ylabel="masked-token accuracy", title="accuracy vs FLOPs")
    axes[1, 0].yaxis.set_major_formatter(PercentFormatter(xmax=1))  # in percent, as the report's tables
    _zoom(axes[0, 0], results)
    _zoom(axes[0, 1], results)
    rates = [float(r) for r in results["lr_grid"]]
    missing = False
    for v in VARIANTS:
        ys = [x if isinstance(x, float) else math.nan for x in results["grid"][v].values()]
        missing |= any(math.isnan(y) for y in ys) or len(ys) < len(rates)
        axes[1, 1].plot(rates, ys, marker="o", color=COLORS[v], label=LABELS[v])
    if base:
        axes[1, 1].axhline(base["val_loss"], color="k", ls="--", lw=0.8)
    axes[1, 1].set(xscale="log", xlim=(min(rates) / 1.5, max(rates) * 1.5),  # also before any run has ended
                   xlabel="learning rate", ylabel="final held-out loss",
                   title=f"the grid, seed {results['seeds'][0]}" + (" (missing: not run yet)" if missing else ""))
    axes[1, 1].grid(alpha=0.3)
    axes[0, 1].legend(fontsize=7)
    fig.suptitle(f"{run_kind(results)} ablation, {results['layout']} layout: every run the same FLOPs "
                 f"({results['budget_tokens']:,} DeBERTa tokens); thin lines: one per pretraining seed")
    return fig


def _zoom(ax, results: dict) -> None:
    """Show the last two thirds of the runs, where variants differ (the first eval sits at ln V for all)."""
    ys = [y for _, runs in _main(results) for r in runs for y in r["curve"]["val_loss"][1:]]
    base = results.get("unigram_baseline")
    ys += [base["val_loss"]] if base else []
    if ys:
        ax.set_ylim(min(ys) - 0.1, max(ys) + 0.2)


def _baseline_values(results: dict, key: str) -> dict[str, float]:
    b = results.get("baselines") or {}
    out = {}
    if key == "sentiment" and b.get("sentiment"):
        s = b["sentiment"]
        out = {"majority": s["majority"], "bag of words": s["bag_of_words"]}
        tuned = [t["test"] for t in s.get("random_init", []) if not t.get("constant")]
        if tuned:
            out["DeBERTa, random init (mean)"] = sum(tuned) / len(tuned)
    elif key == "topic_probe" and b.get("topics") and "missing" not in b["topics"]:
        out = {"majority": b["topics"]["majority"], "bag of words": b["topics"]["bag_of_words"]}
    elif key == "position_probe":
        chance = [r[key]["chance"] for r in b.get("random_init", {}).values() if (r or {}).get(key)]
        if chance:
            out = {"chance": chance[0]}
    elif key == "val_loss" and results.get("unigram_baseline"):
        out = {"word frequencies alone": results["unigram_baseline"]["val_loss"]}
    return out


def _random_init_marks(ax, results: dict, key: str) -> None:
    """Each variant's own network from random weights, probed alike: a black bar across its column.

    The variants' random networks differ widely (BERT-style's absolute positions at the input give its
    position probe 100% untrained), so each trained column is read against its own mark, not DeBERTa's.
    """
    untrained = (results.get("baselines") or {}).get("random_init", {})
    marks = [(VARIANTS.index(v), r[key]["accuracy"]) for v, r in untrained.items()
             if v in VARIANTS and (r or {}).get(key)]
    if marks:
        xs, ys = zip(*marks, strict=True)
        ax.hlines(ys, [x - 0.4 for x in xs], [x + 0.4 for x in xs], colors="k", lw=2,
                  label="random init, same variant")


def plot_summary(results: dict):
    fig, axes = subplots(2, 3, figsize=(15, 8))
    shown = [("val_loss", axes[0, 0]), ("val_auc", axes[0, 1]), ("position_probe", axes[0, 2]),
             ("topic_probe", axes[1, 0]), ("sentiment", axes[1, 1])]
    labels = {key: label for key, label, _ in METRICS}
    for key, ax in shown:
        for v, runs in _main(results):
            i = VARIANTS.index(v)
            values = [r[key] for r in runs if r.get(key) is not None]
            if values:
                ax.bar(i, sum(values) / len(values), color=COLORS[v], alpha=0.5)
                ax.plot([i] * len(values), values, "o", color="k", ms=3)
            if key == "sentiment":  # constant classifiers: shown, and left out of the mean
                const = [r["sentiment_raw"] for r in runs if r.get("sentiment_constant")]
                ax.plot([i] * len(const), const, "x", color="tab:red", ms=6,
                        label="constant classifier (left out)" if const and i == first_constant(results) else None)
        for (name, y), ls in zip(_baseline_values(results, key).items(), ("--", ":", "-."), strict=False):
            ax.axhline(y, color="k", ls=ls, lw=0.8, label=name)
        if key in ("position_probe", "topic_probe"):
            _random_init_marks(ax, results, key)
        ax.set_xticks(range(len(VARIANTS)), [LABELS[v] for v in VARIANTS], fontsize=8)
        ax.set_title(labels[key], fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        if key in ("position_probe", "topic_probe", "sentiment"):  # accuracies: in percent, as the paper's panel
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        if key in ("val_loss", "val_auc"):
            _tight(ax, [r[key] for _, runs in _main(results) for r in runs if r.get(key) is not None]
                   + list(_baseline_values(results, key).values()))
    width = 0.38
    for k, (task, color) in enumerate((("MNLI-m", "tab:purple"), ("RACE", "tab:red"))):
        axes[1, 2].bar([i + (k - 0.5) * width for i in range(len(VARIANTS))], [PAPER[v][task] for v in VARIANTS],
                       width, label=task, color=color)
    axes[1, 2].set(ylim=(60, 90), title="paper, Table 4: base models, fine-tuned (%)")
    axes[1, 2].set_xticks(range(len(VARIANTS)), [LABELS[v] for v in VARIANTS], fontsize=8)
    axes[1, 2].legend(fontsize=7)
    fig.suptitle(f"{run_kind(results)}: each measure at equal FLOPs; dots: one per pretraining seed")
    return fig


def first_constant(results: dict) -> int | None:
    """The first variant (its index) with a constant classifier: the one that carries the legend's label."""
    return next((VARIANTS.index(v) for v, runs in _main(results) if any(r.get("sentiment_constant") for r in runs)),
                None)


def _tight(ax, values: list[float]) -> None:
    if values:
        lo, hi = min(values), max(values)
        pad = max(0.05, 0.5 * (hi - lo))
        ax.set_ylim(lo - pad, hi + pad)


def save(results: dict, curves: Path, summary: Path) -> None:
    save_figure(plot_curves(results), curves, dpi=72)
    save_figure(plot_summary(results), summary, dpi=72)
