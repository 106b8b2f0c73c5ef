"""Interactive views for JupyterLab: ipywidgets controls wired to the pure functions of ``viz``.

Each builder returns a ``Panel`` (a VBox) that shows a figure as a PNG image under its controls.
``panel.controls`` maps names to the sliders and buttons, ``panel.image`` is the image widget,
``panel.data`` the array or numbers behind the latest picture and ``panel.message`` an error or note:
set ``panel.controls["k"].value = 6`` from code and the picture redraws, as when a learner drags it.
There is no logic here beyond wiring; what is drawn lives in ``viz``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import ipywidgets as widgets
import numpy as np

from deberta_edu.figures import figure_png

from . import viz
from .explorer import DESCRIPTIONS


class Panel(widgets.VBox):
    """Controls above an image; ``update()`` recomputes ``data`` and redraws the image from the controls."""

    def __init__(self, controls: Mapping[str, widgets.Widget], draw: Callable[..., tuple[object, object]]):
        self.controls = dict(controls)
        self.image = widgets.Image(format="png")
        self.message = widgets.HTML()
        self.data = None
        self.figure = None
        self._draw = draw
        rows = widgets.HBox(list(self.controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__([rows, self.message, self.image])
        for control in self.controls.values():
            control.observe(lambda _change: self.update(), names="value")
        self.update()

    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def update(self):
        """Redraw from the controls' values; a ValueError from viz is shown to the learner, not raised."""
        try:
            self.data, self.figure = self._draw(**self.values())
        except ValueError as e:
            self.message.value = f"<span style='color:#b00'>{e}</span>"
            return
        self.message.value = ""
        self.image.value = figure_png(self.figure)


def _slider(description: str, value: int, lo: int, hi: int, step: int = 1) -> widgets.IntSlider:
    return widgets.IntSlider(
        value=value,
        min=lo,
        max=hi,
        step=step,
        description=description,
        continuous_update=False,
        style={"description_width": "initial"},
    )


# --- lesson 1 -------------------------------------------------------------------------------------
def delta_widget(length: int = 12, k: int = 4) -> Panel:
    """Sliders for the sequence length L and the maximum distance k redraw the δ(i, j) heat map."""

    def draw(length, k):
        return viz.delta_matrix(length, k), viz.plot_delta(length, k)

    return Panel(
        {"length": _slider("sequence length L", length, 2, 40), "k": _slider("max distance k", k, 1, 16)},
        draw,
    )


def bucket_widget(length: int = 2048, k: int = 512, position_buckets: int = 256) -> Panel:
    """v1 clamp vs v2/v3 log buckets; ``data`` is (distinct rows in v1, distinct rows in v2/v3) for L."""

    def draw(length, k, position_buckets):
        counts = np.array([viz.distinct_rows(length, k), viz.distinct_rows(length, k, position_buckets)])
        return counts, viz.plot_buckets(length, k, position_buckets)

    return Panel(
        {
            "length": _slider("sequence length L", length, 16, 4096, 16),
            "k": _slider("k (max_relative_positions)", k, 16, 1024, 16),
            "position_buckets": widgets.SelectionSlider(
                options=[8, 16, 32, 64, 128, 256],
                value=position_buckets,
                description="position_buckets",
                continuous_update=False,
                style={"description_width": "initial"},
            ),
        },
        draw,
    )


# --- lesson 2 -------------------------------------------------------------------------------------
def attention_widget(maps: viz.AttentionMaps, layer: int = 0, head: int = 0, kind: str = "sum",
                     model: str = "") -> Panel:
    """Choose a layer, a head and a map (c2c, c2p, p2c, sum, probs) of ``viz.attention_maps`` output; ``model``
    names the model that drew them above each figure."""

    def draw(layer, head, kind):
        return maps.get(layer, head, kind), viz.plot_attention(maps, layer, head, kind, model=model)

    return Panel(
        {
            "layer": widgets.Dropdown(options=list(range(maps.num_layers)), value=layer, description="layer"),
            "head": widgets.Dropdown(options=list(range(maps.num_heads)), value=head, description="head"),
            "kind": widgets.ToggleButtons(
                options=list(maps.kinds),
                value=kind,
                description="map",
                tooltips=[DESCRIPTIONS.get(k, k) for k in maps.kinds],
            ),
        },
        draw,
    )


# --- lesson 3 -------------------------------------------------------------------------------------
def shift_widget(
    runs: Mapping[str, Callable], input_ids, tokens, shift: int = 3, max_shift: int = 12, models: str = ""
) -> Panel:
    """A slider moves the sentence right by ``shift`` masked pad tokens; bars show how each output moved.

    ``runs[name](ids, attention_mask) -> (1, L, D)``; ``data`` maps each name to max |Δ| per token; ``models``
    names the models under the figure's title.
    """

    def draw(shift):
        diffs = {name: viz.shift_difference(run, input_ids, shift) for name, run in runs.items()}
        return diffs, viz.plot_shift_difference(diffs, tokens, shift, models=models)

    return Panel({"shift": _slider("shift (pad tokens on the left)", shift, 0, max_shift)}, draw)
