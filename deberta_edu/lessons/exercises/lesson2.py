"""Lesson 2: three exercises that ask for a design, not a copy of the lesson's code.

1. ``check_previous_token_head``: build a position table and a query bias so that c2p alone makes a head
   attend to the previous token whatever the words (the per-distance bias p2p would have given).
2. ``check_mirror_table`` and ``check_mirror_answers``: the table under which the released p2c (row δ(i, j))
   computes the paper's p2c (row δ(j, i)), and where that relabelling stops working.
3. ``check_diagnosis``: name what was changed in a head from its scores and its inputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from deberta_edu.model.attention import DisentangledSelfAttention
from deberta_edu.model.positions import relative_distance, relative_distance_matrix

from ._common import CheckResult, _answers_pending, _as_array, _call, _checker, _finish


def _c2p(q_c, k_r, index) -> torch.Tensor:
    """The library's c2p for one head (unscaled): Q^c_i · K^r_δ, with the given (L, L) row index."""
    return DisentangledSelfAttention.c2p(q_c[None, None], k_r[None], index)[0, 0]


def _p2c(k_c, q_r, index) -> torch.Tensor:
    """The library's p2c for one head (unscaled): K^c_j · Q^r_δ, with the given (L, L) row index."""
    return DisentangledSelfAttention.p2c(k_c[None, None], q_r[None], index)[0, 0]


def _tensor(x, shape, what: str, name: str) -> torch.Tensor:
    arr = _as_array(x)
    if arr is None or arr.shape != tuple(shape):
        raise AssertionError(f"{name}: {what} should have shape {tuple(shape)}, got "
                             f"{None if arr is None else arr.shape}")
    t = torch.as_tensor(arr, dtype=torch.float64)
    if not torch.isfinite(t).all():  # argmax would still find an inf, but softmax of inf or NaN scores is NaN
        raise AssertionError(f"{name}: {what} holds inf or NaN; attention's softmax of such a score is NaN. "
                             "Use large finite numbers (e.g. 10), not infinity")
    return t


# --- exercise 1: a previous-token head from c2p alone ----------------------------------------------------
HEAD_CASES = ((16, 4), (8, 3), (32, 6))  # (head size d, maximum distance k); k = 2 cannot work: row k + 1 = 2k − 1
HEAD_DRAWS = 25  # random contents per case


@_checker
def check_previous_token_head(fn) -> CheckResult:
    """``fn(d, k)`` returns ``(bias, k_r)``: a query bias (d,) and the table's position keys (2k, d).

    The checker draws contents X (L = 3k tokens, entries N(0, 1)), forms the queries Q^c = X + bias and the
    c2p map Q^c_i · K^r_δ(i,j); it passes when, for every draw and every query i ≥ 1, the entry of row i at key
    j = i − 1 is larger than every other entry of the row, beyond the window included (a tie is no peak: the
    softmax would split the attention).
    """
    name = "check_previous_token_head"
    failures, hints = [], []
    g = torch.Generator().manual_seed(0)
    for d, k in HEAD_CASES:
        answer = _call(fn, d, k)
        if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
            raise AssertionError(f"{name}: return a pair (bias, k_r): the bias (d,) first, then the table's keys "
                                 f"(2k, d); got {answer!r}"[:300])
        bias, k_r = answer
        bias = _tensor(bias, (d,), "the bias", name)
        k_r = _tensor(k_r, (2 * k, d), "k_r", name)
        L = 3 * k
        index = relative_distance_matrix(L, k=k)
        scores = torch.stack([
            _c2p(torch.randn(L, d, generator=g, dtype=torch.float64) + bias, k_r, index)[1:]
            for _ in range(HEAD_DRAWS)
        ])  # (draws, L - 1, L): the rows of the queries i >= 1
        previous = torch.arange(L - 1)  # row i - 1 of `scores` holds query i; its previous token is key i - 1
        target = scores[:, previous, previous]  # (draws, L - 1): the score of key i - 1
        others = scores.clone()
        others[:, previous, previous] = -math.inf
        rival = others.argmax(-1)  # (draws, L - 1): the best other key of each row
        wrong = others.amax(-1) >= target  # argmax alone would take a tie for a peak (it keeps the first index)
        if wrong.any():
            draw, row = (int(x) for x in wrong.nonzero()[0])
            i, j = row + 1, int(rival[draw, row])
            tie = bool(others[draw, row, j] == target[draw, row])
            peaks = scores.argmax(-1)
            hints.append(_head_hint(i, j, k, content_decides=bool((peaks != peaks[:1]).any()), tie=tie))
            where = (f"key {j} scores as high as key {i - 1}" if tie else f"peaks at key {j}")
            failures.append(f"d={d}, k={k}: {int(wrong.sum())} of {wrong.numel()} query rows do not peak at "
                            f"j = i − 1 alone (first: query {i} {where})")
    return _finish(name, len(HEAD_CASES) * HEAD_DRAWS, failures, hints[0] if hints else "")


def _head_hint(i: int, j: int, k: int, content_decides: bool, tie: bool = False) -> str:
    if tie:
        return (f"a tie is not a peak: key {j} (row δ = {relative_distance(i, j, k)}) scores exactly as high as key "
                f"{i - 1} (row k + 1), so the softmax splits the attention between them. Only row k + 1 may score "
                "high; leave the other rows (the clamped ones too) small.")
    if content_decides:
        return ("the words decide where it looks: with X of size ~1, the bias · K^r_(k+1) term must beat every "
                "X_i · K^r_r, so make the bias and row k + 1 large and aligned, the other rows small.")
    if j == i + 1:
        return ("it attends to the NEXT token: δ(i, j) = i − j + k, so key j = i − 1 is row k + 1 "
                "(row k − 1 is j = i + 1).")
    if abs(i - j) >= k - 1:
        return ("it peaks beyond the window: rows 0 and 2k − 1 hold every far key (the clamp), so they must "
                "score below row k + 1.")
    return "key j = i − 1 is row δ(i, j) = k + 1 of the table: that row must score highest."


# --- exercise 2: the mirror table --------------------------------------------------------------------------
MIRROR_QUESTIONS = {
    "every_pair": "one table makes the released p2c equal the paper's on every pair, the clamped ones included",
    "c2p_unchanged": "when the table is shared (v3: Q^r = P W_q and K^r = P W_k), mirroring P leaves c2p as it was",
    "own_projection": "when p2c has its own projection (v1: W_{q,r}, apart from c2p's W_{k,r}) and 2k ≤ D, "
                      "P's width, a new "
                      "W_{q,r} alone gives the released p2c the paper's values inside the window, c2p untouched",
}


@_checker
def check_mirror_table(fn) -> CheckResult:
    """``fn(q_r, k)`` returns q_r' (2k, d): the released p2c (row δ(i, j)) with q_r' must equal the paper's
    eq. (4) p2c (row δ(j, i)) with q_r on every pair inside the window, |i − j| < k."""
    name = "check_mirror_table"
    g = torch.Generator().manual_seed(1)
    failures, flipped, cases = [], False, 0
    for L, k, d in ((9, 3, 4), (12, 5, 8), (6, 2, 3)):
        cases += 1
        k_c = torch.randn(L, d, generator=g, dtype=torch.float64)
        q_r = torch.randn(2 * k, d, generator=g, dtype=torch.float64)
        mirrored = _tensor(_call(fn, q_r.clone(), k), (2 * k, d), "q_r'", name)
        index = relative_distance_matrix(L, k=k)
        inside = (torch.arange(L)[:, None] - torch.arange(L)[None, :]).abs() < k
        paper = _p2c(k_c, q_r, index.T)[inside]
        got = _p2c(k_c, mirrored, index)[inside]
        if not torch.allclose(got, paper, atol=1e-8):
            failures.append(f"L={L}, k={k}, d={d}: {int((~torch.isclose(got, paper)).sum())} of "
                            f"{int(inside.sum())} pairs inside the window differ")
            flipped = flipped or torch.allclose(mirrored, q_r.flip(0))
    hint = ("q_r.flip(0) sends row r to 2k − 1 − r, one row off: inside the window δ(j, i) = 2k − δ(i, j)."
            if flipped else "write δ(j, i) in terms of δ(i, j) for |i − j| < k; row 0 is never read there.")
    return _finish(name, cases, failures, hint)


def mirror_facts() -> dict[str, bool]:
    """Measured: is the best mirror table exact on all pairs, does mirroring a shared P leave c2p alone, and can
    p2c's own projection absorb the mirror (P W' = P_mirror W_{q,r}, solved by least squares)?"""
    g = torch.Generator().manual_seed(2)
    L, k, d = 10, 3, 6
    index = relative_distance_matrix(L, k=k)
    k_c, q_c = torch.randn(2, L, d, generator=g, dtype=torch.float64)
    p = torch.randn(2 * k, d, generator=g, dtype=torch.float64)
    w_q, w_k = torch.randn(2, d, d, generator=g, dtype=torch.float64)
    best = torch.cat([p[-1:], p[1:].flip(0)])  # row 0 <- row 2k - 1 (serves i - j <= -k), rows r <- 2k - r
    every_pair = torch.allclose(_p2c(k_c, best @ w_q, index), _p2c(k_c, p @ w_q, index.T))
    c2p_unchanged = torch.allclose(_c2p(q_c, best @ w_k, index), _c2p(q_c, p @ w_k, index))
    w_new = torch.linalg.lstsq(p, best @ w_q).solution  # (d, d): p2c's projection only; c2p keeps p @ w_k
    window = (torch.arange(L)[:, None] - torch.arange(L)).abs() < k  # (L, L): |i − j| < k
    paper = _p2c(k_c, p @ w_q, index.T)
    own_projection = torch.allclose(_p2c(k_c, p @ w_new, index)[window], paper[window])
    return {"every_pair": bool(every_pair), "c2p_unchanged": bool(c2p_unchanged),
            "own_projection": bool(own_projection)}


def check_mirror_answers(answers: dict[str, bool]) -> CheckResult:
    """``answers[name]`` is True or False for each statement in MIRROR_QUESTIONS; the checker measures them."""
    name = "check_mirror_answers"
    pending = _answers_pending(name, answers, MIRROR_QUESTIONS, "True or False")
    if pending is not None:
        return pending
    measured = mirror_facts()
    failures = [f"{q}: you said {answers[key]}, measured {measured[key]}"
                for key, q in MIRROR_QUESTIONS.items() if bool(answers[key]) != measured[key]]
    hint = ("released row 2k − 1 serves i − j = k − 1 and every i − j ≥ k; the paper reads those at rows 1 and 0. "
            "And c2p reads the same P: relabel its rows and c2p's rows move too. A projection of p2c's own is "
            "another matter: with 2k ≤ D (P's width), P W' = P_mirror W_{q,r} can be solved exactly.")
    return _finish(name, len(MIRROR_QUESTIONS), failures, hint)


# --- exercise 3: what was changed in this head? ----------------------------------------------------------
DIAGNOSES = {
    "deberta": "nothing: c2c + c2p + p2c with δ(i, j), divided by √(3d)",
    "sqrt_d": "the scale: divided by √d, not √(3d)",
    "paper_p2c": "p2c reads row δ(j, i), as eq. (4) prints it",
    "no_p2c": "p2c is left out (c2c + c2p: what earlier relative schemes such as Shaw et al.'s amount to, §3.1)",
    "with_p2p": "p2p is added: Q^r_δ(i,j) · K^r_δ(j,i)",
}


def head_scores(kind: str, q_c, k_c, q_r, k_r, k: int) -> torch.Tensor:
    """The (L, L) scores of one head, built as DIAGNOSES[kind] says."""
    L, d = q_c.shape
    index = relative_distance_matrix(L, k=k)
    c2c, c2p = q_c @ k_c.T, _c2p(q_c, k_r, index)
    p2c = _p2c(k_c, q_r, index.T if kind == "paper_p2c" else index)
    total = c2c + c2p + (0 if kind == "no_p2c" else p2c)
    if kind == "with_p2p":
        total = total + (q_r[index] * k_r[index.T]).sum(-1)
    return total / math.sqrt((1 if kind == "sqrt_d" else 3) * d)


@_checker
def check_diagnosis(fn) -> CheckResult:
    """``fn(scores, q_c, k_c, q_r, k_r, k)`` returns the key of DIAGNOSES that made ``scores`` from the inputs
    (content queries/keys (L, d), the table's position queries/keys (2k, d)). Heads are drawn at random."""
    name = "check_diagnosis"
    g = torch.Generator().manual_seed(3)
    rng = np.random.default_rng(3)
    failures, cases = [], 0
    for L, k, d in ((7, 2, 4), (10, 4, 8), (12, 3, 16), (9, 6, 8)):
        for kind in rng.permutation(list(DIAGNOSES)).tolist():
            cases += 1  # float64: a candidate rebuilt another way matches to torch.allclose's default tolerance
            q_c, k_c = torch.randn(2, L, d, generator=g, dtype=torch.float64)
            q_r, k_r = torch.randn(2, 2 * k, d, generator=g, dtype=torch.float64)
            scores = head_scores(kind, q_c, k_c, q_r, k_r, k)
            said = _call(fn, scores.clone(), q_c.clone(), k_c.clone(), q_r.clone(), k_r.clone(), k)
            if said != kind:
                failures.append(f"L={L}, k={k}, d={d}: the head was {kind!r} ({DIAGNOSES[kind]}), you said {said!r}")
    hint = ("build each candidate from the inputs and compare it with the scores: only one matches; "
            "a rule of thumb such as 'the scores are large' confuses √d with p2p.")
    return _finish(name, cases, failures, hint)
