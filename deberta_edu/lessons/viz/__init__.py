"""Pictures for the lessons, one module per lesson: pure functions that return numpy arrays or figures.

Nothing here draws on a global pyplot state or calls ``show``: every plot builds its own figure with
``deberta_edu.figures`` (a ``PlotFigure`` that knows how to show itself as PNG) and returns it, so a notebook
displays it, a widget renders it to PNG, and a test inspects it, all the same way. In each lesson's module the
arrays come first (``delta_matrix``, ``attention_maps``, ``shift_difference``, ``fill_mask``), then the
figures that draw them. Every public name is re-exported here: ``from deberta_edu import viz``, then
``viz.plot_delta(...)``.

    lesson1   relative distance: δ(i, j), its asymmetric clamp, Shaw's clip and T5's buckets, log buckets
    lesson2   disentangled attention: per-term maps, Algorithm 1, p2p as a c2p bias, the √(3d) scale
    lesson3   absolute positions and the EMD: outputs under a shift, rows for [CLS], the probe table
    lesson4   masked-language-model pretraining: the 80/10/10 rates, fill-in-the-blank guesses
"""

from __future__ import annotations

from .lesson1 import (
    PairDistance,
    clamped_mask,
    delta_matrix,
    distinct_rows,
    pair_distance,
    pale_cells,
    plot_buckets,
    plot_delta,
    plot_pairs,
    plot_schemes,
    shaw_rows,
    t5_buckets,
    table_rows,
)
from .lesson2 import (
    AttentionMaps,
    DistanceBiasFit,
    HeadPattern,
    ScaleStudy,
    algorithm1,
    attention_maps,
    fit_distance_bias,
    head_patterns,
    mirror_rows,
    plot_attention,
    plot_map,
    plot_maps,
    plot_scale_study,
    plot_terms,
    scale_study,
)
from .lesson3 import (
    anchor_rows,
    matrix_flops,
    plot_accuracies,
    plot_anchor_rows,
    plot_probe_table,
    plot_shift_difference,
    shift_difference,
)
from .lesson4 import FillMask, fill_mask, plot_fill_mask, plot_mask_rates

__all__ = [
    # lesson 1
    "PairDistance",
    "clamped_mask",
    "delta_matrix",
    "distinct_rows",
    "pair_distance",
    "pale_cells",
    "plot_buckets",
    "plot_delta",
    "plot_pairs",
    "plot_schemes",
    "shaw_rows",
    "t5_buckets",
    "table_rows",
    # lesson 2
    "AttentionMaps",
    "DistanceBiasFit",
    "HeadPattern",
    "ScaleStudy",
    "algorithm1",
    "attention_maps",
    "fit_distance_bias",
    "head_patterns",
    "mirror_rows",
    "plot_attention",
    "plot_map",
    "plot_maps",
    "plot_scale_study",
    "plot_terms",
    "scale_study",
    # lesson 3
    "anchor_rows",
    "matrix_flops",
    "plot_accuracies",
    "plot_anchor_rows",
    "plot_probe_table",
    "plot_shift_difference",
    "shift_difference",
    # lesson 4
    "FillMask",
    "fill_mask",
    "plot_fill_mask",
    "plot_mask_rates",
]
