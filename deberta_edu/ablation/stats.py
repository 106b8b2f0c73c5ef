"""Lesson 6, the statistics: is a difference between two variants larger than the seeds make?

The runs are paired by pretraining seed: seed s of every variant saw the same rows, in the same order,
with the same masks. So the question is asked of the per-seed differences d_s = x_s(DeBERTa) − x_s(other):

    mean ± std over seeds         of each variant
    paired t-test                 t = mean(d) / (std(d) / sqrt(n)), n − 1 degrees of freedom (scipy.stats.ttest_rel)
    95% confidence interval       mean(d) ± t_{0.975, n−1} · std(d) / sqrt(n)
    verdict                       "agrees" (DeBERTa better, p < 0.05), "disagrees" (DeBERTa worse, p < 0.05),
                                  or "within noise"

With n = 3 the t quantile is 4.30, not 2: the "difference > 2 SE" rule calls noise a finding far too often.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

ALPHA = 0.05  # two-sided
VERDICTS = ("agrees", "disagrees", "within noise")


def mean_std(values: Sequence[float]) -> dict:
    """{"mean", "std" (sample std, n − 1), "n", "values"}; std is None with fewer than 2 values."""
    values = [float(v) for v in values]
    if not values:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """The paired t-test of a − b (two-sided) and the 95% CI of the mean difference.

    ``a`` and ``b`` hold one value per seed, in the same seed order. With fewer than two pairs nothing is
    tested (p is None). Identical differences at every seed have no spread: p is 0 (or 1 when they are 0).
    """
    if len(a) != len(b):
        raise ValueError(f"a paired test needs one value per seed on both sides; got {len(a)} and {len(b)}")
    d = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    n = len(d)
    out = {"n": n, "mean_difference": statistics.fmean(d) if d else None, "differences": d,
           "t": None, "p": None, "ci95": None}
    if n < 2:
        return out
    try:
        from scipy import stats
    except ImportError:  # the GPU machine may lack it: the runs stand, the test waits for a rebuild with scipy
        return {**out, "note": "scipy is missing: rebuild the report where it is installed"}
    sd = statistics.stdev(d)
    if sd <= 1e-12 * max(1.0, abs(out["mean_difference"])):  # no spread (up to rounding): t is not defined
        out["p"] = 1.0 if out["mean_difference"] == 0 else 0.0
        out["ci95"] = [out["mean_difference"]] * 2
        return out
    test = stats.ttest_rel(list(map(float, a)), list(map(float, b)))
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * sd / math.sqrt(n)
    out.update(t=float(test.statistic), p=float(test.pvalue),
               ci95=[out["mean_difference"] - half, out["mean_difference"] + half])
    return out


def verdict(test: dict, higher_is_better: bool) -> str | None:
    """What a paired test of DeBERTa − other says about the paper's claim "DeBERTa is better"; None: untested."""
    if test["p"] is None:
        return None
    if test["p"] >= ALPHA:
        return "within noise"
    better = test["mean_difference"] > 0 if higher_is_better else test["mean_difference"] < 0
    return "agrees" if better else "disagrees"


def area_under(x: Sequence[float], y: Sequence[float]) -> float:
    """Mean of y over the range of x (trapezoids): the area under a curve divided by its width."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"area_under needs two or more (x, y) points, got {len(x)} x and {len(y)} y")
    area = sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2 for i in range(len(x) - 1))
    return area / (x[-1] - x[0])


def interpolate(x: Sequence[float], y: Sequence[float], at: float) -> float | None:
    """y at ``at`` on the broken line through (x, y); None outside its range."""
    for i in range(len(x) - 1):
        if x[i] <= at <= x[i + 1]:
            w = 0.0 if x[i + 1] == x[i] else (at - x[i]) / (x[i + 1] - x[i])
            return y[i] + w * (y[i + 1] - y[i])
    return None
