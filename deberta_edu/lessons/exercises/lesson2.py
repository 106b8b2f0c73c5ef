"""Lesson 2: the attention terms c2p, p2c and the scaled sum."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from deberta_edu.model.attention import DisentangledSelfAttention
from deberta_edu.model.positions import relative_distance_matrix

from ._common import CheckResult, _as_array, _call, _checker, _finish


def _term_cases(seed: int = 0) -> Iterable[dict]:
    """Random one-head inputs: content queries/keys (L, d) and relative table projections (2k, d)."""
    g = torch.Generator().manual_seed(seed)
    for length, k, d in ((5, 2, 4), (8, 3, 8), (6, 6, 16), (11, 4, 8)):
        yield {
            "length": length,
            "k": k,
            "d": d,
            "q_c": torch.randn(length, d, generator=g),
            "k_c": torch.randn(length, d, generator=g),
            "q_r": torch.randn(2 * k, d, generator=g),
            "k_r": torch.randn(2 * k, d, generator=g),
        }


def _c2p(c: dict, index) -> torch.Tensor:
    """The library's c2p for one head (unscaled), with the given (L, L) row index."""
    return DisentangledSelfAttention.c2p(c["q_c"][None, None], c["k_r"][None], index)[0, 0]


def _p2c(c: dict, index) -> torch.Tensor:
    return DisentangledSelfAttention.p2c(c["k_c"][None, None], c["q_r"][None], index)[0, 0]


def _compare(expected: torch.Tensor, got, what: str, variants: dict[str, torch.Tensor]):
    """None if ``got`` equals ``expected``; else (failure line, the first known mistake it matches)."""
    arr = _as_array(got)
    if arr is None or arr.shape != tuple(expected.shape):
        return (
            f"{what}: expected shape {tuple(expected.shape)}, got {None if arr is None else arr.shape}",
            None,
        )
    got_t = torch.as_tensor(arr, dtype=torch.float64)
    exp = expected.double()
    if torch.allclose(got_t, exp, rtol=1e-4, atol=1e-5):
        return None
    mistake = next(
        (m for m, v in variants.items() if torch.allclose(got_t, v.double(), rtol=1e-4, atol=1e-5)), None
    )
    i, j = np.unravel_index(int((got_t - exp).abs().argmax()), exp.shape)
    return (
        f"{what}: at [i={i}, j={j}] expected {exp[i, j].item():.4f}, got {got_t[i, j].item():.4f}",
        mistake,
    )


MISTAKE_HINTS = {
    "sqrt_d": (
        "your scores are √3 times too large: DeBERTa divides by √(3d), not √d, because three terms "
        "are summed and each has variance ≈ d."
    ),
    "unscaled": "your scores are not scaled: divide by √(3d), d being the head size (the last dimension).",
    "swapped_delta_p2c": (
        "you used δ(j, i), as eq. (4) of the paper writes. The released code, its checkpoints and this "
        "library use δ(i, j) for p2c, the same row as c2p (see the note in attention.py)."
    ),
    "swapped_delta": "you used δ(j, i); c2p looks up the row δ(i, j): where key j sits as seen from query i.",
    "transposed": "your map is transposed: entry [i, j] is query i (row) attending to key j (column).",
    "missing_c2c": "the content-to-content term Q^c_i · K^c_j is missing.",
    "missing_c2p": "the content-to-position term Q^c_i · K^r_δ(i,j) is missing.",
    "missing_p2c": "the position-to-content term K^c_j · Q^r_δ(i,j) is missing.",
    "with_p2p": "you added p2p: DeBERTa drops it (it depends on i − j alone: a bias without content).",
}


def _term_checker(name: str, fn, build_expected, build_variants, args) -> CheckResult:
    failures, found = [], []
    cases = 0
    for c in _term_cases():
        cases += 1
        index = relative_distance_matrix(c["length"], k=c["k"])
        scale = 1 / math.sqrt(3 * c["d"])
        expected = build_expected(c, index) * scale
        variants = build_variants(c, index, scale)
        got = _call(fn, *(c[a] for a in args), c["k"])
        what = f"L={c['length']}, k={c['k']}, d={c['d']}"
        outcome = _compare(expected, got, what, variants)
        if outcome is not None:
            failures.append(outcome[0])
            found.append(outcome[1])
    hint = next((MISTAKE_HINTS[m] for m in found if m), "")
    return _finish(name, cases, failures, hint)


def _scale_variants(term: torch.Tensor, scale: float) -> dict[str, torch.Tensor]:
    return {"sqrt_d": term * scale * math.sqrt(3), "unscaled": term}


@_checker
def check_c2p(fn) -> CheckResult:
    """``fn(q_c, k_r, k)``: q_c (L, d) content queries, k_r (2k, d) the table's position keys; returns the
    (L, L) c2p map Q^c_i · K^r_δ(i,j) divided by √(3d)."""

    def variants(c, index, scale):
        c2p = _c2p(c, index)
        return {
            **_scale_variants(c2p, scale),
            "swapped_delta": _c2p(c, index.T) * scale,
            "transposed": c2p.T * scale,
        }

    return _term_checker("check_c2p", fn, _c2p, variants, ("q_c", "k_r"))


@_checker
def check_p2c(fn) -> CheckResult:
    """``fn(k_c, q_r, k)``: k_c (L, d) content keys, q_r (2k, d) the table's position queries; returns the
    (L, L) p2c map K^c_j · Q^r_δ(i,j) divided by √(3d) (δ(i, j), as in the released code)."""

    def variants(c, index, scale):
        p2c = _p2c(c, index)
        return {
            **_scale_variants(p2c, scale),
            "swapped_delta_p2c": _p2c(c, index.T) * scale,
            "transposed": p2c.T * scale,
        }

    return _term_checker("check_p2c", fn, _p2c, variants, ("k_c", "q_r"))


@_checker
def check_scores(fn) -> CheckResult:
    """``fn(q_c, k_c, q_r, k_r, k)``: the (L, L) score c2c + c2p + p2c, divided by √(3d)."""

    def parts(c, index):
        return {"c2c": c["q_c"] @ c["k_c"].T, "c2p": _c2p(c, index), "p2c": _p2c(c, index)}

    def expected(c, index):
        return sum(parts(c, index).values())

    def variants(c, index, scale):
        p = parts(c, index)
        total = sum(p.values())
        p2p = (c["q_r"][index] * c["k_r"][index.T]).sum(-1)  # Q^r_δ(i,j) · K^r_δ(j,i)
        out = {
            **_scale_variants(total, scale),
            "swapped_delta_p2c": (total - p["p2c"] + _p2c(c, index.T)) * scale,
            "with_p2p": (total + p2p) * scale,
        }
        for term in p:
            out[f"missing_{term}"] = (total - p[term]) * scale
        return out

    return _term_checker("check_scores", fn, expected, variants, ("q_c", "k_c", "q_r", "k_r"))
