"""Training curves from a run's records (``metrics.jsonl`` or ``TrainResult.history``), as matplotlib figures.

    plot_training(records)          loss (train, smoothed, held-out), masked-token accuracy, learning rate
    plot_loss(records)              the loss panel alone
    compare_runs({name: records})   one metric of several runs on shared axes (the ablation lesson)
    LivePlot(every=10)              a ``train(callback=...)`` that redraws the loss curve in a notebook

Functions return the figure, built with ``deberta_edu.figures`` (never pyplot's global state), so a notebook
shows it once, as the cell's value; ``LivePlot`` renders it to PNG and updates one output in place.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from deberta_edu.facts import LOG_FILE
from deberta_edu.figures import figure_png, smooth, subplots
from deberta_edu.training.state import read_jsonl


def load_records(source) -> list[dict]:
    """Records from a list, a TrainResult, a metrics.jsonl file, or a run folder holding one."""
    if hasattr(source, "history"):
        return list(source.history)
    if isinstance(source, (str, Path)):
        path = Path(source)
        return read_jsonl(path / LOG_FILE if path.is_dir() else path)
    return list(source)


def _series(records: list[dict], kind: str, key: str) -> tuple[list[float], list[float]]:
    rows = [r for r in records if r.get("kind", "train") == kind and key in r]  # no kind: a train record
    return [r["step"] for r in rows], [r[key] for r in rows]


def plot_loss(records, ax=None, smoothing: float = 0.9, label: str = "") -> Figure:
    """Training loss (raw and smoothed) and held-out loss against optimizer steps."""
    records = load_records(records)
    if ax is None:
        _, ax = subplots(figsize=(6, 4))
    steps, loss = _series(records, "train", "loss")
    if loss:
        ax.plot(steps, loss, color="tab:blue", alpha=0.25, linewidth=1)
        ax.plot(steps, smooth(loss, smoothing), color="tab:blue", label=f"{label}train (smoothed)".strip())
    val_steps, val_loss = _series(records, "eval", "val_loss")
    if val_loss:
        ax.plot(val_steps, val_loss, "o-", color="tab:orange", label=f"{label}held-out".strip())
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("MLM loss (nats per masked token)")
    ax.grid(alpha=0.3)
    if loss or val_loss:
        ax.legend()
    return ax.figure


def plot_training(records, smoothing: float = 0.9) -> Figure:
    """Three panels: loss; held-out accuracy on masked tokens (with perplexity); learning rate and tokens/s."""
    records = load_records(records)
    fig, (ax_loss, ax_acc, ax_lr) = subplots(1, 3, figsize=(15, 4))
    plot_loss(records, ax=ax_loss, smoothing=smoothing)

    steps, acc = _series(records, "eval", "val_accuracy")
    ax_acc.plot(steps, acc, "o-", color="tab:green")
    ax_acc.set_xlabel("optimizer step")
    ax_acc.set_ylabel("held-out accuracy on masked tokens")
    ax_acc.yaxis.set_major_formatter(PercentFormatter(xmax=1))  # in percent, as the title and the text say
    ax_acc.grid(alpha=0.3)
    _, ppl = _series(records, "eval", "val_perplexity")
    if ppl:
        ax_acc.set_title(f"last: accuracy {acc[-1]:.1%}, perplexity {ppl[-1]:.1f}")

    steps, lr = _series(records, "train", "lr")
    ax_lr.plot(steps, lr, color="tab:purple")
    ax_lr.set_xlabel("optimizer step")
    ax_lr.set_ylabel("learning rate", color="tab:purple")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    speed_steps, speed = _series(records, "train", "tokens_per_s")
    if speed:
        twin = ax_lr.twinx()
        twin.plot(speed_steps, speed, color="tab:gray", alpha=0.6)
        twin.set_ylabel("tokens / s", color="tab:gray")
    return fig  # laid out by the figure's constrained layout


def compare_runs(runs: dict, metric: str = "val_loss", x: str = "step", ax=None) -> Figure:
    """One line per run: ``compare_runs({"DeBERTa": result_a, "BERT": "runs/bert"}, "val_accuracy")``."""
    if ax is None:
        _, ax = subplots(figsize=(6, 4))
    for name, source in runs.items():
        rows = [r for r in load_records(source) if metric in r]
        values = [r[metric] for r in rows]
        if metric == "loss":
            values = smooth(values)
        ax.plot([r[x] for r in rows], values, "o-" if metric.startswith("val_") else "-", label=name)
    ax.set_xlabel({"step": "optimizer step", "tokens": "tokens seen"}.get(x, x))
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax.figure


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where a display can be updated in place)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class LivePlot:
    """A callback for ``train``: redraws the loss curve every ``every`` train records and at each evaluation.

    In a notebook it updates one output in place; anywhere else it only collects the records, so a
    script or a test can pass it safely. ``figure()`` draws the full training plot afterwards.
    """

    def __init__(self, every: int = 10, smoothing: float = 0.9, enabled: bool | None = None, title: str = ""):
        self.every = max(1, every)
        self.title = title  # which run it draws, above the curve
        self.smoothing = smoothing
        self.enabled = in_notebook() if enabled is None else enabled
        self.records: list[dict] = []
        self.draws = 0
        self._handle = None
        self._train_seen = 0

    def __call__(self, record: dict) -> None:
        self.records.append(record)
        if record.get("kind", "train") == "train":
            self._train_seen += 1
        due = record.get("kind") == "eval" or self._train_seen % self.every == 0
        if self.enabled and due:
            self.draw()

    def draw(self) -> None:
        from IPython.display import Image, display

        figure = plot_loss(self.records, smoothing=self.smoothing)
        figure.suptitle(self.title, fontsize=9)
        image = Image(figure_png(figure))
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)
        self.draws += 1

    def figure(self) -> Figure:
        return plot_training(self.records, smoothing=self.smoothing)
