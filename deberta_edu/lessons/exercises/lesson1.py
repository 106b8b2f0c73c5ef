"""Lesson 1: relative distance δ(i, j), the asymmetric window of eq. (3), and the rows a sequence reads."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from deberta_edu.model.positions import relative_distance, relative_distance_matrix

from ._common import CheckResult, _as_array, _as_int, _call, _checker, _finish, _shown_int


@_checker
def check_relative_distance(fn: Callable[[int, int, int], int]) -> CheckResult:
    """``fn(i, j, k)`` must return δ(i, j) of eq. (3) for every i, j in 0 … 2k + 2 and several k."""
    name = "check_relative_distance"
    failures, cases = [], 0
    mistakes = {"swapped": 0, "no_clamp": 0, "top_row": 0}
    for k in (1, 2, 3, 4, 8):
        for i in range(2 * k + 3):
            for j in range(2 * k + 3):
                cases += 1
                expected, answer = relative_distance(i, j, k), _call(fn, i, j, k)
                got = _as_int(answer)
                if got == expected:
                    continue
                failures.append(f"δ(i={i}, j={j}) with k={k}: expected {expected}, got {_shown_int(got, answer)}")
                mistakes["swapped"] += got == relative_distance(j, i, k)
                mistakes["no_clamp"] += got == i - j + k
                mistakes["top_row"] += got == 2 * k and i - j >= k
    hint = ""
    if failures:
        if mistakes["swapped"] == len(failures):
            hint = "your answers are δ(j, i): eq. (3) uses i − j (the query's position minus the key's)."
        elif mistakes["no_clamp"] == len(failures):
            hint = (
                "clamp: row 0 when i − j <= −k, row 2k − 1 when i − j >= k "
                "(i − j = k − 1 already gives 2k − 1 unclamped)."
            )
        elif mistakes["top_row"]:
            hint = "the table has 2k rows, 0 … 2k − 1: the top row is 2k − 1, not 2k."
        else:
            hint = "three cases: i − j <= −k gives 0, i − j >= k gives 2k − 1, otherwise i − j + k."
    return _finish(name, cases, failures, hint)


@_checker
def check_relative_distance_matrix(fn: Callable[[int, int], object]) -> CheckResult:
    """``fn(length, k)`` must return the (length, length) integer matrix of δ(i, j)."""
    name = "check_relative_distance_matrix"
    failures, cases, transposed = [], 0, 0
    for length in (1, 3, 7, 12):
        for k in (1, 2, 4, 10):
            cases += 1
            expected = relative_distance_matrix(length, k=k).numpy()
            got = _as_array(_call(fn, length, k))
            if got is None or got.shape != expected.shape:
                failures.append(
                    f"L={length}, k={k}: expected shape {expected.shape}, "
                    f"got {None if got is None else got.shape}"
                )
            elif not np.issubdtype(got.dtype, np.integer):
                failures.append(
                    f"L={length}, k={k}: expected integer rows (they index a table), got dtype {got.dtype}"
                )
            elif not np.array_equal(got, expected):
                i, j = np.argwhere(got != expected)[0]
                failures.append(
                    f"L={length}, k={k}: at [i={i}, j={j}] expected {expected[i, j]}, got {got[i, j]}"
                )
                transposed += np.array_equal(got, expected.T)
    hint = ""
    if failures and transposed:
        hint = "your matrix is transposed: row i is the query, column j the key, and δ uses i − j."
    elif failures:
        hint = "build i as a column (L, 1) and j as a row (1, L); then i − j + k, clamped to [0, 2k − 1]."
    return _finish(name, cases, failures, hint)


@_checker
def check_distinct_rows(fn: Callable[[int, int], int]) -> CheckResult:
    """``fn(length, k)`` must return how many different table rows a sequence of ``length`` tokens reads."""
    name = "check_distinct_rows"
    failures, cases = [], 0
    for length in range(1, 21):
        for k in range(1, 9):
            cases += 1
            expected = len(torch.unique(relative_distance_matrix(length, k=k)))
            answer = _call(fn, length, k)
            got = _as_int(answer)
            if got != expected:
                failures.append(f"L={length}, k={k}: expected {expected}, got {_shown_int(got, answer)}")
    hint = (
        (
            "a sequence of L tokens has 2L − 1 different distances i − j; the table has 2k rows. "
            "Which limit wins, and when?"
        )
        if failures
        else ""
    )
    return _finish(name, cases, failures, hint)


def exact_window(k: int) -> tuple[int, int] | None:
    """The smallest and largest i − j that read a row no other distance reads; None if none does.

    Counted by brute force over distances far beyond ±k, from ``relative_distance`` itself.
    """
    distances = range(-3 * k - 2, 3 * k + 3)
    readers: dict[int, list[int]] = {}
    for d in distances:
        readers.setdefault(relative_distance(d, 0, k), []).append(d)
    own = sorted(ds[0] for ds in readers.values() if len(ds) == 1)
    return (own[0], own[-1]) if own else None


@_checker
def check_exact_window(fn: Callable[[int], object]) -> CheckResult:
    """``fn(k)`` must return (lo, hi): the smallest and largest distance i − j with a row of its own
    (no other distance reads it), or None when no distance has one."""
    name = "check_exact_window"
    failures, cases = [], 0
    symmetric = wide = small = 0
    for k in range(1, 13):
        cases += 1
        expected, got = exact_window(k), _call(fn, k)
        if got is not None:
            arr = None if isinstance(got, (str, bytes)) else _as_array(got)  # a tuple, a list or an array of two
            pair = tuple(arr.tolist()) if arr is not None and arr.ndim == 1 else ()
            if len(pair) != 2 or None in (_as_int(pair[0]), _as_int(pair[1])):
                failures.append(f"k={k}: expected a pair (lo, hi) of whole numbers, or None; got {got!r}")
                continue
            got = (_as_int(pair[0]), _as_int(pair[1]))
        if got != expected:
            failures.append(f"k={k}: expected {expected}, got {got}")
            symmetric += k > 1 and got == (-(k - 1), k - 1)
            wide += got == (-k, k)
            small += k == 1
    hint = ""
    if failures and wide:
        hint = "−k and k are clamped: row 0 is read by all i − j <= −k, the top row by all i − j >= k − 1."
    elif failures and symmetric:
        hint = "the window is not symmetric: which row does i − j = k − 1 read, and who else reads it?"
    elif failures and small == len(failures):
        hint = ("at k = 1 the table has two rows: row 0 for every i − j <= −1, row 1 for every i − j >= 0. Is any "
                "distance alone in its row?")
    elif failures:
        hint = (
            "list, for each row, the distances that read it (try k = 2 by hand); "
            "with k = 1 the table has two rows and every distance shares one."
        )
    return _finish(name, cases, failures, hint)
