"""Checkers for the lessons' exercises: run the learner's function on many cases against the library.

Each ``check_*`` prints "✓ … all N cases pass" and returns a ``CheckResult``, or raises AssertionError
that names the failing cases (inputs, expected, got) and, when the answer matches a known mistake,
says which one. A function that still raises NotImplementedError is reported as "not attempted yet"
without an error, so a lesson runs top to bottom before the exercises are done.

    lesson 1  check_relative_distance, check_relative_distance_matrix, check_distinct_rows
    lesson 2  check_c2p, check_p2c, check_scores
    lesson 3  check_emd, check_shift_answers
    lesson 4  check_mask_80_10_10, check_perplexity, check_never_masked
    lesson 5  check_symmetric_kl, check_linf_step
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
from .masking import mask_tokens
from .model import DebertaModel
from .positions import relative_distance, relative_distance_matrix
from .sift import symmetric_kl
from .tokenizer import Tokenizer

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


# --- lesson 4 -------------------------------------------------------------------------------------
MASKING_MISTAKES = {
    "labels everywhere": (
        "a label is -100 wherever the token was not chosen: the loss reads only the chosen ~15%, so "
        "labels = torch.where(chosen, input_ids, -100)."
    ),
    "labels of the masked input": (
        "a label is the ORIGINAL token (input_ids), not what the model is shown: the model must recover "
        "the word that was hidden."
    ),
    "ignores chosen": (
        "only the chosen tokens change; the other ~85% are shown as they are. Combine every rule with `chosen &`."
    ),
    "no unchanged 10%": (
        "the last 10% of the chosen tokens (u >= 0.9) stay unchanged: [MASK] if u < 0.8, random if "
        "0.8 <= u < 0.9, else the original token."
    ),
    "no random 10%": "10% of the chosen tokens (0.8 <= u < 0.9) are replaced by random_ids.",
    "80% random, 10% [MASK]": "the other way round: u < 0.8 gives [MASK], 0.8 <= u < 0.9 a random token.",
}


def apply_80_10_10(input_ids, chosen, u, random_ids, mask_id: int, mistake: str | None = None):
    """(masked_ids, labels): the 80/10/10 rule of ``mask_tokens`` once the tokens are chosen.

    ``mistake`` (a key of MASKING_MISTAKES) gives a known wrong version, for the checker's hints.
    """
    where = torch.ones_like(chosen) if mistake == "ignores chosen" else chosen
    to_mask = where & (u < 0.8)  # 80%: [MASK]
    to_random = where & (u >= 0.8) & (u < 0.9)  # 10%: a random token; the last 10% stay unchanged
    if mistake == "no unchanged 10%":
        to_random = where & (u >= 0.8)
    elif mistake == "no random 10%":
        to_random = torch.zeros_like(chosen)
    elif mistake == "80% random, 10% [MASK]":
        to_mask, to_random = to_random, to_mask
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    if mistake == "labels everywhere":
        labels = input_ids.clone()
    elif mistake == "labels of the masked input":
        labels = torch.where(chosen, masked, torch.full_like(input_ids, -100))
    return masked, labels


def _rule(chosen: bool, u: float) -> str:
    if not chosen:
        return "not chosen: shown as it is, label -100"
    if u < 0.8:
        return "chosen, u < 0.8: [MASK]"
    return "chosen, 0.8 <= u < 0.9: random" if u < 0.9 else "chosen, u >= 0.9: unchanged"


def _first_mismatch(expected: torch.Tensor, got: torch.Tensor, chosen, u, what: str, case: str) -> str:
    b, t = (int(x) for x in (got != expected).nonzero()[0])
    return (
        f"{case}: {what} of token [{b}, {t}] ({_rule(bool(chosen[b, t]), float(u[b, t]))}) "
        f"expected {int(expected[b, t])}, got {int(got[b, t])}"
    )


@_checker
def check_mask_80_10_10(fn) -> CheckResult:
    """``fn(input_ids, chosen, u, random_ids, mask_id)`` -> ``(masked_ids, labels)``, all (B, L).

    ``chosen`` (bool) marks the ~15% of tokens to predict, ``u`` holds one uniform draw in [0, 1) per token:
    a chosen token becomes ``mask_id`` if u < 0.8, ``random_ids`` (same place) if 0.8 <= u < 0.9, and stays
    itself otherwise. ``labels`` holds the original id of every chosen token and -100 elsewhere.
    """
    name = "check_mask_80_10_10"
    failures, found, cases = [], [], 0
    g = torch.Generator().manual_seed(0)
    for shape, chosen_kind in (
        ((4, 16), "15%"),
        ((2, 50), "15%"),
        ((8, 32), "15%"),
        ((3, 20), "all"),
        ((2, 10), "none"),
    ):
        cases += 1
        ids = torch.randint(5, 60, shape, generator=g)
        draw = torch.rand(shape, generator=g)
        chosen = {"15%": draw < 0.15, "all": draw >= 0, "none": draw < 0}[chosen_kind]
        u = torch.rand(shape, generator=g)
        random_ids = torch.randint(5, 60, shape, generator=g)
        case = f"{shape[0]}×{shape[1]} tokens, {chosen_kind} chosen"
        expected = apply_80_10_10(ids, chosen, u, random_ids, 4)
        got = _call(fn, ids.clone(), chosen.clone(), u.clone(), random_ids.clone(), 4)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            failures.append(f"{case}: return a pair (masked_ids, labels), got {type(got).__name__}")
            continue
        arrays = [_as_array(x) for x in got]
        bad = [a for a in arrays if a is None or a.shape != shape or not np.issubdtype(a.dtype, np.integer)]
        if bad:
            failures.append(
                f"{case}: expected two integer tensors of shape {shape}, got "
                + ", ".join("?" if a is None else f"{a.dtype} {a.shape}" for a in arrays)
            )
            continue
        masked, labels = (torch.as_tensor(a).long() for a in arrays)
        if torch.equal(masked, expected[0]) and torch.equal(labels, expected[1]):
            continue
        if not torch.equal(masked, expected[0]):
            failures.append(_first_mismatch(expected[0], masked, chosen, u, "the input shown", case))
        else:
            failures.append(_first_mismatch(expected[1], labels, chosen, u, "the label", case))
        for mistake in MASKING_MISTAKES:
            m, lab = apply_80_10_10(ids, chosen, u, random_ids, 4, mistake)
            if torch.equal(m, masked) and torch.equal(lab, labels):
                found.append(mistake)
                break
    hint = ""
    if found:
        hint = f"this looks like '{found[0]}': {MASKING_MISTAKES[found[0]]}"
    elif failures:
        hint = (
            "to_mask = chosen & (u < 0.8); to_random = chosen & (u >= 0.8) & (u < 0.9); build masked_ids with "
            "two torch.where calls, and labels = torch.where(chosen, input_ids, -100)."
        )
    return _finish(name, cases, failures, hint)


PERPLEXITY_MISTAKES = {
    "unweighted": (
        "batches hold different numbers of masked tokens: weight each batch's mean loss by its token count "
        "(the evaluator sums the loss over all tokens, then divides once)."
    ),
    "mean of perplexities": (
        "perplexity is exp of the mean loss over all tokens, not the mean of the batches' perplexities "
        "(exp is convex, so that overestimates it)."
    ),
    "no exp": "that is the mean loss itself; perplexity is e to the power of it.",
    "base 2": "the loss is in nats (cross_entropy uses the natural log), so perplexity is e^loss; 2^loss is for bits.",
}


def _perplexity_variants(losses: list[float], tokens: list[int]) -> dict[str, float]:
    n = sum(tokens)
    mean = sum(lo * t for lo, t in zip(losses, tokens, strict=True)) / n
    return {
        "right": math.exp(mean),
        "unweighted": math.exp(sum(losses) / len(losses)),
        "mean of perplexities": sum(math.exp(lo) for lo in losses) / len(losses),
        "weighted mean of perplexities": sum(math.exp(lo) * t for lo, t in zip(losses, tokens, strict=True))
        / n,
        "no exp": mean,
        "base 2": 2**mean,
    }


@_checker
def check_perplexity(fn) -> CheckResult:
    """``fn(batch_losses, batch_tokens)`` -> the held-out perplexity.

    ``batch_losses[i]`` is the mean cross-entropy (nats) over the ``batch_tokens[i]`` masked tokens of batch i.
    """
    name = "check_perplexity"
    failures, found = [], []
    all_cases = (
        ([9.0], [100]),
        ([math.log(8000)], [585]),  # guessing uniformly over 8,000 pieces
        ([2.0, 3.0], [100, 100]),
        ([2.0, 4.0], [300, 100]),
        ([5.1, 4.7, 6.3, 5.9], [120, 95, 130, 20]),
        ([0.5, 1.5, 1.0], [10, 1, 50]),
    )
    for losses, tokens in all_cases:
        variants = _perplexity_variants(losses, tokens)
        try:
            got = float(_call(fn, list(losses), list(tokens)))
        except (TypeError, ValueError):
            failures.append(f"losses {losses}, tokens {tokens}: return one number")
            continue
        if math.isclose(got, variants["right"], rel_tol=1e-6):
            continue
        failures.append(f"losses {losses}, tokens {tokens}: expected {variants['right']:.6g}, got {got:.6g}")
        mistake = next(
            (m for m, v in variants.items() if m != "right" and math.isclose(got, v, rel_tol=1e-6)), None
        )
        if mistake is not None:
            found.append("mean of perplexities" if "perplexities" in mistake else mistake)
    hint = ""
    if found:
        hint = f"this looks like '{found[0]}': {PERPLEXITY_MISTAKES[found[0]]}"
    elif failures:
        hint = "mean loss = Σ loss_i · tokens_i / Σ tokens_i; perplexity = exp(mean loss)."
    return _finish(name, len(all_cases), failures, hint)


NEVER_MASKED_QUESTIONS = {
    "[PAD]": "[PAD], the padding token",
    "[CLS]": "[CLS], which opens every row",
    "[SEP]": "[SEP], which closes every row",
    "[UNK]": "[UNK], the unknown token",
    "[MASK]": "a [MASK] that was already in the text",
    "<0x41>": "a byte piece (byte fallback), here the byte of 'A'",
    "▁the": "an ordinary word piece",
}


def never_masked(tokenizer=None, rows: int = 20, seed: int = 0) -> dict[str, bool]:
    """Measured: for each piece of NEVER_MASKED_QUESTIONS, True if ``mask_tokens`` never chose it for prediction.

    Masks ``rows`` rows holding every piece 100 times, with the special ids the trainer passes
    (``tokenizer.special_ids``). Without a tokenizer, the course tokenizer's fixed layout is used:
    specials 0-4, byte b at 5 + b, learned pieces from 261 on.
    """
    if tokenizer is None:
        ids = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3, "[MASK]": 4, "<0x41>": 5 + 0x41, "▁the": 261}
        specials, mask_id, vocab_size = Tokenizer.special_ids, Tokenizer.mask_id, 8000
    else:
        ids = {piece: tokenizer.sp.piece_to_id(piece) for piece in NEVER_MASKED_QUESTIONS}
        specials, mask_id, vocab_size = tokenizer.special_ids, tokenizer.mask_id, tokenizer.vocab_size
    pieces = list(ids)
    row = torch.tensor([ids[p] for p in pieces] * 100)  # (7 * 100,)
    batch = row.repeat(rows, 1)  # (rows, 700)
    _, labels = mask_tokens(
        batch,
        vocab_size=vocab_size,
        mask_token_id=mask_id,
        special_token_ids=specials,
        generator=torch.Generator().manual_seed(seed),
    )
    return {p: bool((labels[batch == ids[p]] == -100).all()) for p in pieces}


def check_never_masked(answers: dict[str, bool], tokenizer=None) -> CheckResult:
    """``answers[piece]`` is True where you expect the piece NEVER to be chosen for prediction (label -100)."""
    name = "check_never_masked"
    if not isinstance(answers, dict) or set(answers) != set(NEVER_MASKED_QUESTIONS):
        raise AssertionError(
            f"{name}: give a dict with exactly the keys {list(NEVER_MASKED_QUESTIONS)}, each True (never "
            f"chosen) or False (can be chosen); got {answers!r}"
        )
    if any(v is None for v in answers.values()):
        return _not_attempted(name, "some answers are still None")
    measured = never_masked(tokenizer)
    failures = []
    for piece, question in NEVER_MASKED_QUESTIONS.items():
        if bool(answers[piece]) != measured[piece]:
            failures.append(
                f"{question}: you said {'never chosen' if answers[piece] else 'can be chosen'}; measured: "
                f"{'never chosen' if measured[piece] else 'chosen'} in 2,000 tries"
            )
    hint = (
        "mask_tokens never chooses the special ids the trainer passes (tokenizer.special_ids: [PAD], [CLS], "
        "[SEP], [UNK], [MASK]); every other piece, bytes included, is a candidate."
    )
    return _finish(name, len(NEVER_MASKED_QUESTIONS), failures, hint)


# --- lesson 5 -------------------------------------------------------------------------------------
def _kl_rows(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) per row, from logits."""
    log_p, log_q = logits_p.log_softmax(-1), logits_q.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _kl_variants(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    p, q = a.softmax(-1), b.softmax(-1)
    both = _kl_rows(a, b) + _kl_rows(b, a)  # (B,)
    kl_div = torch.nn.functional.kl_div
    return {
        "one-sided KL(p‖q)": _kl_rows(a, b).mean(),
        "one-sided KL(q‖p)": _kl_rows(b, a).mean(),
        "sum over rows": both.sum(),
        "mean over every entry": both.mean() / a.size(-1),
        "probabilities instead of log-probabilities": ((p - q) * (p - q)).sum(-1).mean(),
        "kl_div of probabilities": kl_div(q, p, reduction="batchmean") + kl_div(p, q, reduction="batchmean"),
        "logits instead of log-probabilities": kl_div(b, p, reduction="batchmean")
        + kl_div(a, q, reduction="batchmean"),
    }


KL_HINTS = {
    "one-sided KL(p‖q)": "KL(p‖q) alone is not symmetric: add KL(q‖p).",
    "one-sided KL(q‖p)": "KL(q‖p) alone is not symmetric: add KL(p‖q).",
    "sum over rows": "average over the rows (.mean()), not sum: the loss must not grow with the batch size.",
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

    Checked against ``deberta_edu.sift.symmetric_kl`` and for the properties a divergence must have:
    symmetric, zero for identical inputs, unchanged when a constant is added to a row of logits, >= 0.
    """
    name = "check_symmetric_kl"
    failures, found, cases = [], [], 0
    g = torch.Generator().manual_seed(0)

    def close(x, y):
        return math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-6)

    for rows, classes, scale in ((4, 3, 1.0), (8, 2, 2.0), (16, 10, 1.0), (5, 7, 4.0)):
        a, b = (torch.randn(rows, classes, generator=g) * scale for _ in range(2))
        shift = torch.randn(rows, 1, generator=g) * 3  # one constant per row
        what = f"{rows}×{classes} logits"
        expected = float(symmetric_kl(a, b))
        got = _scalar(_call(fn, a.clone(), b.clone()))
        cases += 4
        if not isinstance(got, float):
            failures.append(
                f"{what}: expected one number (a scalar tensor), got "
                f"{'shape ' + str(got) if got else 'something that is not a number'}"
            )
            found.append("no mean" if got == (rows,) else None)
            continue
        if not close(got, expected):
            failures.append(f"{what}: expected {expected:.6g}, got {got:.6g}")
            found.append(next((m for m, v in _kl_variants(a, b).items() if close(got, float(v))), None))
        swapped = _scalar(_call(fn, b.clone(), a.clone()))
        if not (isinstance(swapped, float) and close(swapped, got)):
            failures.append(f"{what}: not symmetric: f(p, q) = {got:.6g} but f(q, p) = {_fmt(swapped)}")
        same = _scalar(_call(fn, a.clone(), a.clone()))
        if not (isinstance(same, float) and abs(same) < 1e-6):
            failures.append(f"{what}: f(p, p) should be 0, got {_fmt(same)}")
        moved = _scalar(_call(fn, a + shift, b.clone()))
        if not (isinstance(moved, float) and close(moved, got)):
            failures.append(
                f"{what}: adding a constant to each row of logits_p changed the answer from {got:.6g} to {_fmt(moved)} "
                "(softmax ignores it, so the divergence must too)"
            )
        if got < -1e-6:
            failures.append(f"{what}: a divergence is never negative, got {got:.6g}")
    mistake = next((m for m in found if m), None)
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

    As in ``sift.Adversary.ascent_step``: a token whose gradient is exactly 0 (padding) keeps a zero step.
    """
    return grad / grad.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)


def _linf_variants(grad: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "global L∞": grad / grad.abs().max(),
        "L2 per token": grad / grad.norm(dim=-1, keepdim=True),
        "global L2": grad / grad.norm(),
        "over the sequence": grad / grad.abs().amax(dim=1, keepdim=True),
        "no abs": grad / grad.amax(dim=-1, keepdim=True),
        "sign": grad.sign(),
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
        sizes = 10 ** (-4 * torch.rand(*shape[:2], 1, generator=g))  # (B, L, 1) from 1e-4 to 1 per token
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
            found.append("padding")
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
        variants = _linf_variants(grad).items()
        found.append(
            next((m for m, v in variants if torch.allclose(got_t, v, rtol=1e-4, equal_nan=True)), None)
        )
    mistake = next((m for m in found if m), None)
    hint = ""
    if mistake:
        hint = f"this looks like '{mistake}': {LINF_HINTS[mistake]}"
    elif failures:
        hint = "grad / grad.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)"
    return _finish(name, cases, failures, hint)
