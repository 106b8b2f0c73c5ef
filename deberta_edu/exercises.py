"""Checkers for the lessons' exercises: run the learner's function on many cases against the library.

Each ``check_*`` prints "✓ … all N cases pass" and returns a ``CheckResult``, or raises AssertionError
that names the failing cases (inputs, expected, got) and, when the answer matches a known mistake,
says which one. A function that still raises NotImplementedError is reported as "not attempted yet"
without an error, so a lesson runs top to bottom before the exercises are done.

    lesson 1  check_relative_distance, check_relative_distance_matrix, check_distinct_rows
    lesson 2  check_c2p, check_p2c, check_scores
    lesson 3  check_emd, check_shift_answers
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from .attention import DisentangledSelfAttention
from .config import make_config
from .emd import DebertaForMaskedLM, EnhancedMaskDecoder
from .model import DebertaModel
from .positions import relative_distance, relative_distance_matrix

SHOW = 5  # failing cases listed in a message


@dataclass
class CheckResult:
    name: str
    cases: int
    passed: bool
    attempted: bool = True
    failures: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    def _ipython_display_(self):
        """In a notebook the checker has already printed its verdict; show nothing more."""


class _NotYet(Exception):
    pass


def _call(fn, *args):
    """The learner's function on one case; NotImplementedError means "not attempted yet"."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise _NotYet from None


def _finish(name: str, cases: int, failures: list[str], hint: str = "") -> CheckResult:
    if failures:
        shown = "\n".join(f"  - {f}" for f in failures[:SHOW])
        more = f"\n  … and {len(failures) - SHOW} more" if len(failures) > SHOW else ""
        raise AssertionError(
            f"{name}: {len(failures)} of {cases} cases fail.\n{shown}{more}"
            + (f"\nHint: {hint}" if hint else "")
        )
    print(f"✓ {name}: all {cases} cases pass")
    return CheckResult(name, cases, True)


def _not_attempted(name: str, why: str = "your function raises NotImplementedError") -> CheckResult:
    print(f"… {name}: not attempted yet ({why}). Write your answer, then run this cell again.")
    return CheckResult(name, 0, False, attempted=False)


def _checker(run: Callable[[Callable], CheckResult]):
    """Wrap a checker so that an unfinished function gives a friendly note instead of an error."""

    def check(fn):
        try:
            return run(fn)
        except _NotYet:
            return _not_attempted(run.__name__)

    check.__name__ = run.__name__
    check.__doc__ = run.__doc__
    return check


def _as_int(x) -> int | None:
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


def _as_array(x) -> np.ndarray | None:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        return None


# --- lesson 1 -------------------------------------------------------------------------------------
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
                expected, got = relative_distance(i, j, k), _as_int(_call(fn, i, j, k))
                if got == expected:
                    continue
                failures.append(f"δ(i={i}, j={j}) with k={k}: expected {expected}, got {got}")
                mistakes["swapped"] += got == relative_distance(j, i, k)
                mistakes["no_clamp"] += got == i - j + k
                mistakes["top_row"] += got == 2 * k and i - j >= k
    hint = ""
    if failures:
        if mistakes["swapped"] == len(failures):
            hint = "your answers are δ(j, i): eq. (3) uses i − j (the query's position minus the key's)."
        elif mistakes["no_clamp"] == len(failures):
            hint = "clamp |i − j| >= k: to row 0 when i − j <= −k, to row 2k − 1 when i − j >= k."
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
            got = _as_int(_call(fn, length, k))
            if got != expected:
                failures.append(f"L={length}, k={k}: expected {expected}, got {got}")
    hint = (
        (
            "a sequence of L tokens has 2L − 1 different distances i − j; the table has 2k rows. "
            "Which limit wins, and when?"
        )
        if failures
        else ""
    )
    return _finish(name, cases, failures, hint)


# --- lesson 2 -------------------------------------------------------------------------------------
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


# --- lesson 3 -------------------------------------------------------------------------------------
def _emd_variant(
    model,
    out,
    attention_mask,
    *,
    keys_from=-2,
    query_from=-2,
    steps=2,
    positions=True,
    positions_in_keys=False,
) -> torch.Tensor:
    """The EMD with one thing changed: the mistakes the checker recognises."""
    hidden = out.hidden_states[keys_from]
    query = out.hidden_states[query_from] + (out.position_embeddings if positions else 0)
    keys = hidden + out.position_embeddings if positions_in_keys else hidden
    padding = (attention_mask == 0)[:, None, None, :]
    rel = model.encoder.relative_table(hidden.size(1), hidden.device)
    for _ in range(steps):
        query = model.encoder.layers[-1](keys, padding, rel, query_states=query)
    return query


EMD_MISTAKES = {
    "keys from the last layer": (
        {"keys_from": -1, "query_from": -1},
        "keys and values come from layer L − 1 (out.hidden_states[-2]); the last layer "
        "is what the EMD re-applies, so its output is not the input.",
    ),
    "query from the last layer": (
        {"query_from": -1},
        "the first query is H + P with H = out.hidden_states[-2], the same states as the keys.",
    ),
    "applied once": (
        {"steps": 1},
        "the last layer is applied twice (n = 2 in the paper), with the same weights.",
    ),
    "applied three times": ({"steps": 3}, "the last layer is applied twice, not three times."),
    "no positions": (
        {"positions": False},
        "the absolute positions (out.position_embeddings) must be added to "
        "the query: they are the whole point of the EMD.",
    ),
    "positions in keys": (
        {"positions_in_keys": True},
        "add the absolute positions to the query only; keys and values stay H.",
    ),
}


@_checker
def check_emd(fn) -> CheckResult:
    """``fn(model, out, attention_mask)`` must return what ``EnhancedMaskDecoder`` returns: (B, L, D).

    ``model`` is a DebertaModel with absolute positions, ``out = model(ids, attention_mask,
    output_hidden_states=True)`` (use ``out.hidden_states``, ``out.position_embeddings``,
    ``model.encoder.layers[-1]`` and ``model.encoder.relative_table``).
    """
    name = "check_emd"
    failures, found, cases = [], [], 0
    for layers, seed, pad in ((2, 0, 0), (3, 1, 2), (2, 2, 3)):
        cases += 1
        torch.manual_seed(seed)
        config = make_config(
            "tiny",
            vocab_size=30,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            max_position_embeddings=32,
            position_buckets=-1,
            max_relative_positions=8,
        )
        model = DebertaModel(config).eval()
        ids = torch.randint(5, 30, (2, 9))
        mask = torch.ones_like(ids)
        mask[1, 9 - pad :] = 0
        with torch.no_grad():
            out = model(ids, mask, output_hidden_states=True)
            expected = EnhancedMaskDecoder()(model, out, mask)
            got = _as_array(_call(fn, model, out, mask))
            what = f"{layers} layers, batch of 2 with {pad} padded tokens"
            if got is None or got.shape != tuple(expected.shape):
                failures.append(
                    f"{what}: expected shape {tuple(expected.shape)}, got "
                    f"{None if got is None else got.shape}"
                )
                continue
            got_t = torch.as_tensor(got)
            if torch.allclose(got_t, expected, atol=1e-5):
                continue
            failures.append(f"{what}: max |difference| {float((got_t - expected).abs().max()):.3g}")
            for mistake, (kw, _) in EMD_MISTAKES.items():
                if torch.allclose(got_t, _emd_variant(model, out, mask, **kw), atol=1e-5):
                    found.append(mistake)
                    break
    hint = ""
    if found:
        hint = f"this looks like '{found[0]}': {EMD_MISTAKES[found[0]][1]}"
    elif failures:
        hint = (
            "H = out.hidden_states[-2]; query = out.position_embeddings + H; twice: query = last_layer(H, "
            "padding, rel, query_states=query)."
        )
    return _finish(name, cases, failures, hint)


SHIFT_QUESTIONS = {
    "no_emd": "relative-only DeBERTa (−EMD): encoder output",
    "bert": "BERT-style model (absolute positions at the input): encoder output",
    "deberta_encoder": "DeBERTa with EMD: encoder output (last_hidden_state)",
    "deberta_decoder": "DeBERTa with EMD: EMD output (decoder_hidden_state)",
}


def shift_invariance(seed: int = 0, shift: int = 3) -> dict[str, float]:
    """Measured max |change| of each output in SHIFT_QUESTIONS when a sentence moves ``shift`` places right."""
    torch.manual_seed(seed)
    kw = {"vocab_size": 30, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    no_emd = DebertaModel(make_config("tiny", "no_emd", **kw)).eval()
    bert = DebertaModel(make_config("tiny", "bert", **kw)).eval()
    mlm = DebertaForMaskedLM(make_config("tiny", "deberta", **kw)).eval()
    ids = torch.randint(5, 30, (1, 8))
    shifted = torch.cat([torch.zeros(1, shift, dtype=torch.long), ids], 1)
    mask = (shifted != 0).long()
    outputs = {
        "no_emd": lambda x, m: no_emd(x, m).last_hidden_state,
        "bert": lambda x, m: bert(x, m).last_hidden_state,
        "deberta_encoder": lambda x, m: mlm(x, m).last_hidden_state,
        "deberta_decoder": lambda x, m: mlm(x, m).decoder_hidden_state,
    }
    with torch.no_grad():
        return {
            name: float((run(ids, torch.ones_like(ids)) - run(shifted, mask)[:, shift:]).abs().max())
            for name, run in outputs.items()
        }


def check_shift_answers(answers: dict[str, bool]) -> CheckResult:
    """``answers[name]`` is True where you expect the output NOT to change when the sentence moves right."""
    name = "check_shift_answers"
    if not isinstance(answers, dict) or set(answers) != set(SHIFT_QUESTIONS):
        raise AssertionError(
            f"{name}: give a dict with exactly the keys {sorted(SHIFT_QUESTIONS)}, "
            f"each True (unchanged) or False (changes); got {answers!r}"
        )
    if any(v is None for v in answers.values()):
        return _not_attempted(name, "some answers are still None")
    measured = shift_invariance()
    failures = []
    for key, question in SHIFT_QUESTIONS.items():
        unchanged = measured[key] < 1e-4
        if bool(answers[key]) != unchanged:
            failures.append(
                f"{question}: you said {'unchanged' if answers[key] else 'changes'}, measured max "
                f"|change| = {measured[key]:.2g} ({'unchanged' if unchanged else 'changes'})"
            )
    return _finish(
        name,
        len(SHIFT_QUESTIONS),
        failures,
        "an output changes exactly when absolute positions have entered the computation before it.",
    )
