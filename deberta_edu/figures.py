"""One way to make a figure, for the lessons' pictures, the training curves and the ablation report.

Every figure is a :class:`PlotFigure`: built without pyplot's global state, returned to the caller,
shown by Jupyter as PNG, rendered to bytes by :func:`figure_png`, written by :func:`save_figure`. Nothing
here imports the rest of the package, so every wing that draws can use it.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

SCORE_CMAP = "RdBu_r"  # signed scores: red attracts, blue repels, white is zero
PROB_CMAP = "Blues"  # probabilities: white 0 to dark blue


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """A matplotlib Figure rendered to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


class PlotFigure(Figure):
    """A Figure that shows itself in Jupyter (as PNG) with no pyplot and no inline backend."""

    def _repr_png_(self) -> bytes:
        return figure_png(self)


def new_figure(figsize: tuple[float, float], **kwargs) -> PlotFigure:
    """An empty figure with constrained layout (so labels never overlap)."""
    return PlotFigure(figsize=figsize, layout="constrained", **kwargs)


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6, 4), **kwargs):
    """(figure, axes) as ``plt.subplots`` gives them, without pyplot."""
    fig = new_figure(figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Figure, path: str | Path, dpi: int = 72) -> Path:
    """Write a figure as PNG (small, for committed results)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_png(fig, dpi=dpi))
    return path


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average, debiased at the start (as TensorBoard draws it)."""
    out, avg = [], 0.0
    for n, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**n))
    return out
