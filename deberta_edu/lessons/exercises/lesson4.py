"""Lesson 4: the 80/10/10 rule, perplexity, tokens never masked."""

from __future__ import annotations

import math

import numpy as np
import torch

from deberta_edu.data.tokenizer import Tokenizer
from deberta_edu.training.masking import mask_tokens

from ._common import CheckResult, _answers_pending, _as_array, _as_number, _call, _checker, _finish

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
    "[MASK] written as 4": (
        "use the mask_id you are given: 4 is [MASK] in the course's tokenizer, not in every tokenizer."
    ),
}


def apply_80_10_10(input_ids, chosen, u, random_ids, mask_id: int, mistake: str | None = None):
    """(masked_ids, labels): the 80/10/10 rule of ``mask_tokens`` once the tokens are chosen.

    ``mistake`` (a key of MASKING_MISTAKES) gives a known wrong version, for the checker's hints.
    """
    where = torch.ones_like(chosen) if mistake == "ignores chosen" else chosen
    mask_id = 4 if mistake == "[MASK] written as 4" else mask_id
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


def _rule(chosen: bool, u: torch.Tensor) -> str:
    """The rule the reference applied to one token: ``u`` compared in its own dtype, as ``apply_80_10_10`` does
    (a Python float would compare float32(0.9) = 0.89999998 with the double 0.9 and name another rule)."""
    if not chosen:
        return "not chosen: shown as it is, label -100"
    shown = f"u = {float(u):.8g}"
    if bool(u < 0.8):
        return f"chosen, {shown} < 0.8: [MASK]"
    return f"chosen, 0.8 <= {shown} < 0.9: random" if bool(u < 0.9) else f"chosen, {shown} >= 0.9: unchanged"


def _first_mismatch(expected: torch.Tensor, got: torch.Tensor, chosen, u, what: str, case: str) -> str:
    b, t = (int(x) for x in (got != expected).nonzero()[0])
    return (
        f"{case}: {what} of token [{b}, {t}] ({_rule(bool(chosen[b, t]), u[b, t])}) "
        f"expected {int(expected[b, t])}, got {int(got[b, t])}"
    )


def _masking_cases():
    """(case, input_ids, chosen, u, random_ids, mask_id) for the checker: 15%, all and none chosen; [MASK] is 4 in
    the course's tokenizer, not in every one."""
    g = torch.Generator().manual_seed(0)
    for shape, chosen_kind, mask_id in (
        ((4, 16), "15%", 4), ((2, 50), "15%", 63), ((8, 32), "15%", 4), ((3, 20), "all", 3), ((2, 10), "none", 4),
    ):
        ids = torch.randint(5, 60, shape, generator=g)
        draw = torch.rand(shape, generator=g)
        chosen = {"15%": draw < 0.15, "all": draw >= 0, "none": draw < 0}[chosen_kind]
        u = torch.rand(shape, generator=g)
        if chosen_kind == "all":  # the edges, where u <= 0.8 and u < 0.8 part: 0.8 is random, 0.9 stays
            # float32(0.8) = 0.800000012 is above 0.8 in float32 and float64 alike: random either way. float32(0.9) =
            # 0.899999976 is below 0.9, a random token by the rule, yet float32's `u < 0.9` keeps it (0.9 rounds to
            # the same float32): a right answer in float64 was refused. The first float32 above 0.9 stays in both.
            u[0, 0], u[0, 1] = 0.8, torch.tensor(0.9).nextafter(torch.tensor(1.0))
        random_ids = torch.randint(5, 60, shape, generator=g)
        yield (f"{shape[0]}×{shape[1]} tokens, {chosen_kind} chosen, mask_id {mask_id}", ids, chosen, u, random_ids,
               mask_id)


@_checker
def check_mask_80_10_10(fn) -> CheckResult:
    """``fn(input_ids, chosen, u, random_ids, mask_id)`` -> ``(masked_ids, labels)``, all (B, L).

    ``chosen`` (bool) marks the ~15% of tokens to predict, ``u`` holds one uniform draw in [0, 1) per token:
    a chosen token becomes ``mask_id`` if u < 0.8, ``random_ids`` (same place) if 0.8 <= u < 0.9, and stays
    itself otherwise. ``labels`` holds the original id of every chosen token and -100 elsewhere.
    """
    name = "check_mask_80_10_10"
    failures, found, cases = [], [], 0
    for case, ids, chosen, u, random_ids, mask_id in _masking_cases():
        cases += 1
        shape = tuple(ids.shape)
        expected = apply_80_10_10(ids, chosen, u, random_ids, mask_id)
        given = (ids.clone(), chosen.clone(), u.clone(), random_ids.clone())
        got = _call(fn, *given, mask_id)
        if any(not torch.equal(a, b) for a, b in zip(given, (ids, chosen, u, random_ids), strict=True)):
            failures.append(f"{case}: your function changed its arguments in place (e.g. labels = input_ids, then "
                            "labels[...] = -100, writes into the caller's batch); start from input_ids.clone() "
                            "or use torch.where")
            continue
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
            m, lab = apply_80_10_10(ids, chosen, u, random_ids, mask_id, mistake)
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
        answer = _call(fn, list(losses), list(tokens))  # an error inside your function is shown as it is
        got = _as_number(answer)
        if got is None:
            failures.append(f"losses {losses}, tokens {tokens}: return one number, got {answer!r}")
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
    pending = _answers_pending(name, answers, NEVER_MASKED_QUESTIONS, "True (never chosen) or False (can be chosen)")
    if pending is not None:
        return pending
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
