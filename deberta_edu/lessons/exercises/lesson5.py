"""Lesson 5: symmetric KL and the per-token L∞ step."""

from __future__ import annotations

import math

import numpy as np
import torch

from deberta_edu.training.sift import symmetric_kl

from ._common import CheckResult, _as_array, _call, _checker, _finish, _one_mistake


def _kl_rows(logits_p: torch.Tensor, logits_q: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """KL(p‖q) per row, from logits (``dim=0``: the mistake of normalising over the rows)."""
    log_p, log_q = logits_p.log_softmax(dim), logits_q.log_softmax(dim)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _kl_variants(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    p, q = a.softmax(-1), b.softmax(-1)
    both = _kl_rows(a, b) + _kl_rows(b, a)  # (B,)
    kl_div = torch.nn.functional.kl_div
    return {
        "one-sided KL(p‖q)": _kl_rows(a, b).mean(),
        "one-sided KL(q‖p)": _kl_rows(b, a).mean(),
        "sum over rows": both.sum(),
        "half of the sum": both.mean() / 2,
        "mean over every entry": both.mean() / a.size(-1),
        "probabilities instead of log-probabilities": ((p - q) * (p - q)).sum(-1).mean(),
        "kl_div of probabilities": kl_div(q, p, reduction="batchmean") + kl_div(p, q, reduction="batchmean"),
        "logits instead of log-probabilities": kl_div(b, p, reduction="batchmean")
        + kl_div(a, q, reduction="batchmean"),
        "softmax over the batch": (_kl_rows(a, b, dim=0) + _kl_rows(b, a, dim=0)).mean(),
    }


KL_HINTS = {
    "one-sided KL(p‖q)": "KL(p‖q) alone is not symmetric: add KL(q‖p).",
    "one-sided KL(q‖p)": "KL(q‖p) alone is not symmetric: add KL(p‖q).",
    "sum over rows": "average over the rows (.mean()), not sum: the loss must not grow with the batch size.",
    "half of the sum": (
        "the symmetric KL here is the sum KL(p‖q) + KL(q‖p), as sift.symmetric_kl has it, not their average."
    ),
    "no mean": "return one number, the mean over rows: your function returns one value per row.",
    "mean over every entry": (
        "you averaged over rows AND classes (F.kl_div's reduction='mean'); sum over the classes, average "
        "over the rows (reduction='batchmean')."
    ),
    "probabilities instead of log-probabilities": (
        "(log p − log q) needs log-probabilities: use log_softmax, not softmax, in the second factor."
    ),
    "kl_div of probabilities": "F.kl_div's first argument must be log-probabilities (log_softmax), not probabilities.",
    "logits instead of log-probabilities": (
        "raw logits are not log-probabilities (adding a constant to a row changes your answer): apply "
        "log_softmax first."
    ),
    "softmax over the batch": (
        "each row is one distribution over the classes: softmax/log_softmax over the last dimension (dim=-1), "
        "not over the rows (dim=0)."
    ),
    "a NaN answer": (
        "NaN comes from a log of 0 or 0 × ∞: torch.log(softmax(x)) underflows; take log_softmax(x) instead, and "
        "check for a division by a sum that can be 0."
    ),
}


def _fmt(x) -> str:
    """Numbers for a message: 4 significant digits (lists too); anything else as it is."""
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, list):
        return "(" + ", ".join(f"{v:.4g}" for v in x) + ", …)"
    return str(x)


def _scalar(x) -> float | None | tuple[int, ...]:
    """A float for a one-number answer, the shape for an array of several, None when not numeric."""
    arr = _as_array(x)
    if arr is None or not np.issubdtype(arr.dtype, np.number):
        return None
    return float(arr.reshape(())) if arr.size == 1 else tuple(arr.shape)


@_checker
def check_symmetric_kl(fn) -> CheckResult:
    """``fn(logits_p, logits_q)``, both (B, C), -> KL(p‖q) + KL(q‖p) averaged over the B rows (a scalar).

    Checked against ``deberta_edu.training.sift.symmetric_kl`` and for the properties a divergence must have:
    symmetric, zero for identical inputs, unchanged when a constant is added to a row of logits, >= 0.
    """
    name = "check_symmetric_kl"
    failures, found, cases = [], [], 0
    g = torch.Generator().manual_seed(0)

    def close(x, y):
        return math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-6)

    for rows, classes, scale in ((4, 3, 1.0), (8, 2, 2.0), (16, 10, 1.0), (5, 7, 4.0)):
        a, b = (torch.randn(rows, classes, generator=g) * scale for _ in range(2))
        shift, shift_q = (torch.randn(rows, 1, generator=g) * 3 for _ in range(2))  # one constant per row
        what = f"{rows}×{classes} logits"
        expected = float(symmetric_kl(a, b))
        got = _scalar(_call(fn, a.clone(), b.clone()))
        cases += 4
        if not isinstance(got, float):
            failures.append(
                f"{what}: expected one number (a scalar tensor), got "
                f"{'shape ' + str(got) if got else 'something that is not a number'}"
            )
            found.append(["no mean"] if got == (rows,) else [])
            continue
        if not close(got, expected):
            failures.append(f"{what}: expected {expected:.6g}, got {got:.6g}")
            found.append(["a NaN answer"] if math.isnan(got) else
                         [m for m, v in _kl_variants(a, b).items() if close(got, float(v))])
        swapped = _scalar(_call(fn, b.clone(), a.clone()))
        if not (isinstance(swapped, float) and close(swapped, got)):
            failures.append(f"{what}: not symmetric: f(p, q) = {got:.6g} but f(q, p) = {_fmt(swapped)}")
        same = _scalar(_call(fn, a.clone(), a.clone()))
        if not (isinstance(same, float) and abs(same) < 1e-6):
            failures.append(f"{what}: f(p, p) should be 0, got {_fmt(same)}")
        for moved_what, moved in (("logits_p", _call(fn, a + shift, b.clone())),
                                  ("logits_q", _call(fn, a.clone(), b + shift_q))):
            moved = _scalar(moved)
            if not (isinstance(moved, float) and close(moved, got)):
                failures.append(
                    f"{what}: adding a constant to each row of {moved_what} changed the answer from {got:.6g} to "
                    f"{_fmt(moved)} (softmax ignores it, so the divergence must too)"
                )
        if got < -1e-6:
            failures.append(f"{what}: a divergence is never negative, got {got:.6g}")
    mistake = _one_mistake(found)  # one that fits every failing case: on 2 classes, halving = a mean over classes
    hint = ""
    if mistake:
        hint = f"this looks like '{mistake}': {KL_HINTS[mistake]}"
    elif any("adding a constant" in f for f in failures):
        hint = KL_HINTS["logits instead of log-probabilities"]
    elif any("not symmetric" in f for f in failures):
        hint = "KL(p‖q) alone is not symmetric: the symmetric KL is KL(p‖q) + KL(q‖p)."
    elif failures:
        hint = "log_p, log_q = log_softmax of each; Σ over classes of (p − q)(log p − log q), then .mean() over rows."
    return _finish(name, cases, failures, hint)


def linf_step(grad: torch.Tensor) -> torch.Tensor:
    """SiFT's ascent direction: each token's gradient divided by its L∞ norm over the hidden dimension.

    As ``sift.SiFT.ascent_step`` with ``step_eps=0``: a token whose gradient is exactly 0 (padding) keeps a
    zero step. (The official code divides by 1e-6 + the norm instead, lesson 5 shows what that changes.)
    """
    return grad / grad.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)


def _guard_variants(grad: torch.Tensor, got: torch.Tensor) -> dict[str, torch.Tensor]:
    """Two guards against 0 / 0 that are too large, with the constant read off the answer's short steps."""
    norm = grad.abs().amax(dim=-1, keepdim=True)  # (B, L, 1)
    size = got.abs().amax(dim=-1, keepdim=True).nan_to_num(1.0)
    short = (size < 1 - 1e-3) & (size > 0)  # real tokens whose step came back shorter than 1
    if not short.any() or not ((size - 1).abs() < 1e-3).any():  # a guard leaves the large gradients alone
        return {}
    eps = (norm / size - norm)[short].median()  # g / (|g|∞ + eps) has max |step| = |g|∞ / (|g|∞ + eps)
    floor = (norm / size)[short].median()  # g / max(|g|∞, floor)
    return {"eps added to the norm": grad / (norm + eps), "guard too large": grad / norm.clamp_min(floor)}


def _linf_variants(grad: torch.Tensor, got: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "global L∞": grad / grad.abs().max(),
        "L2 per token": grad / grad.norm(dim=-1, keepdim=True),
        "global L2": grad / grad.norm(),
        "over the sequence": grad / grad.abs().amax(dim=1, keepdim=True),
        "no abs": grad / grad.amax(dim=-1, keepdim=True),
        "sign": grad.sign(),
        **_guard_variants(grad, got),
    }


LINF_HINTS = {
    "global L∞": (
        "you divided by the largest |g| of the whole batch: tokens with small gradients then get almost no "
        "step. Normalise each token by its own max over the hidden dimension (amax(dim=-1, keepdim=True))."
    ),
    "L2 per token": "that is the L2 norm per token; SiFT uses the L∞ norm, the largest |g_d| (abs().amax(-1)).",
    "global L2": (
        "that is one L2 norm for the whole batch; SiFT normalises every token by its own L∞ norm over the "
        "hidden dimension."
    ),
    "over the sequence": "take the max over the hidden dimension (the last, dim=-1), not over the tokens (dim=1).",
    "no abs": "the L∞ norm is the largest |g_d|: take .abs() before the max, or negative entries are ignored.",
    "sign": (
        "sign(g) is the steepest step under an L∞ budget, but SiFT keeps the gradient's shape: g / max_d |g_d| "
        "(the largest coordinate becomes ±1, the others stay proportional)."
    ),
    "padding": (
        "a padding token's gradient is exactly 0, and 0 / 0 is NaN: guard the division, e.g. "
        ".clamp_min(1e-12) on the norm, so that such a token keeps a zero step."
    ),
    "eps added to the norm": (
        "a constant added to the norm shortens the step of every token whose gradient is small (here gradients "
        "go down to 1e-10, and the lesson's own are mostly below 1e-7; the official code's 1e-6 does this too, "
        "as the lesson shows). Guard only 0 / 0: .clamp_min(1e-12) on the norm."
    ),
    "guard too large": (
        "the floor on the norm is larger than some tokens' gradients (here down to 1e-10; the lesson's own are "
        "mostly below 1e-7), so their step comes back shorter than 1. Use a floor far below any real gradient: "
        ".clamp_min(1e-12)."
    ),
}


@_checker
def check_linf_step(fn) -> CheckResult:
    """``fn(grad)``: grad (B, L, D) -> the same shape, each token's gradient divided by max_d |g_d| (its L∞
    norm over the hidden dimension D); an all-zero token (padding) must come back as zeros, not NaN."""
    name = "check_linf_step"
    failures, found, cases = [], [], 0
    g = torch.Generator().manual_seed(0)
    for shape, padded in (((2, 5, 8), 0), ((1, 7, 16), 0), ((3, 4, 32), 0), ((2, 6, 8), 2)):
        cases += 1
        # (B, L, 1) from 1e-10 to 1 per token: the lesson's own batch has a median L∞ below 1e-7
        sizes = 10 ** (-10 * torch.rand(*shape[:2], 1, generator=g))
        grad = torch.randn(shape, generator=g) * sizes
        if padded:
            grad[:, -padded:] = 0.0  # padding tokens: no gradient at all
        what = f"grad of shape {shape}" + (
            f", the last {padded} tokens padding (gradient 0)" if padded else ""
        )
        expected = linf_step(grad)
        got = _as_array(_call(fn, grad.clone()))
        if got is None or got.shape != shape:
            failures.append(f"{what}: expected shape {shape}, got {None if got is None else got.shape}")
            continue
        got_t = torch.as_tensor(got, dtype=torch.float32)
        if torch.allclose(got_t, expected, rtol=1e-4, atol=1e-6):
            continue
        if (
            padded
            and torch.isnan(got_t).any()
            and torch.allclose(got_t[:, :-padded], expected[:, :-padded], rtol=1e-4)
        ):
            failures.append(f"{what}: NaN where the gradient is 0 (padding tokens)")
            found.append(["padding"])
            continue
        token = (got_t - expected).abs().nan_to_num(float("inf")).amax(-1).flatten().argmax()
        b, t = divmod(int(token), shape[1])
        size = got_t[b, t].abs().max().item()
        if math.isclose(size, 1.0, rel_tol=1e-4):  # the right size, the wrong direction
            failures.append(
                f"{what}: token [{b}, {t}]: expected a step starting {_fmt(expected[b, t, :4].tolist())}, "
                f"got {_fmt(got_t[b, t, :4].tolist())}"
            )
        else:
            failures.append(
                f"{what}: token [{b}, {t}] should have max |step| 1, got {size:.3g} "
                f"(its gradient's L∞ norm is {grad[b, t].abs().max().item():.3g})"
            )
        variants = _linf_variants(grad, got_t).items()
        real = slice(None, -padded) if padded else slice(None)  # how a mistake treats padding is its own question
        found.append([m for m, v in variants if torch.allclose(got_t[:, real], v[:, real], rtol=1e-4, equal_nan=True)])
    mistake = _one_mistake(found)
    hint = ""
    if mistake:
        hint = f"this looks like '{mistake}': {LINF_HINTS[mistake]}"
    elif failures:
        hint = "grad / grad.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)"
    return _finish(name, cases, failures, hint)
