"""The exercise checkers against answers learners write: a wrong answer that only the cases a checker happened
to try would let through (a guard too large for the lesson's own gradients, a hard-coded [MASK] id, one model
size, one slot), a right answer in another type (float64, a pair as an array), and hints that named the wrong
mistake. Each test failed on the checkers before they were changed."""

import dataclasses
import math
import re

import numpy as np
import pytest
import torch

from deberta_edu import exercises
from deberta_edu.model.positions import table_span


# --- helpers: right answers, written as a learner would -------------------------------------------
def exact_window(k):
    return (-(k - 1), k - 2) if k >= 2 else None


def emd(model, out):
    H = out.hidden_states[-2]
    state = out.encoder_state
    query = H + state.positions
    for _ in range(2):
        query = model.encoder.layers[-1](H, state.keep, state.rel, query_states=query)
    return query


def symmetric_kl(logits_p, logits_q):
    log_p, log_q = logits_p.log_softmax(-1), logits_q.log_softmax(-1)
    p, q = log_p.exp(), log_q.exp()
    return ((p * (log_p - log_q)).sum(-1) + (q * (log_q - log_p)).sum(-1)).mean()


def train_flops(config, L, *, rows=None, cap=None, ffn=None, sizes=None):
    """The notebook's solution; ``rows``/``cap``/``ffn``/``sizes`` swap in a learner's shortcut."""
    D, F, V = sizes or (config.hidden_size, config.intermediate_size, config.vocab_size)
    F = ffn(D) if ffn else F
    R = rows(config) if rows else 2 * table_span(config.max_relative_positions, config.position_buckets)
    R = min(R, cap(L) if cap else 2 * L - 1)
    terms = config.position_terms
    per_pass = 2 * (4 * D * D + 2 * D * F) + 2 * (2 * L * D) + len(terms) * 2 * R * D
    emd_cost = 0
    if config.emd:
        queries = 2 * (2 * D * D + 2 * D * F) + 2 * (2 * L * D) + ("c2p" in terms) * 2 * R * D
        keys = 2 * (2 * D * D) + ("p2c" in terms) * 2 * R * D
        emd_cost = 2 * (0.15 * queries + keys)
    head = 0.15 * 2 * (D * D + D * V)
    return 3 * (config.num_hidden_layers * per_pass + emd_cost + head)


# --- lesson 1 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("as_array", [np.array, torch.tensor], ids=["numpy", "torch"])
def test_exact_window_accepts_a_pair_returned_as_an_array(as_array):
    """(lo, hi) as a 2-element array is a pair; today it is refused with "expected a pair … got array([-1, 0])"."""
    exercises.check_exact_window(lambda k: None if k < 2 else as_array(exact_window(k)))


def test_exact_window_k1_mistake_is_not_called_an_asymmetry_problem():
    """Right for every k >= 2, (0, 0) at k = 1 (only distance 0 'has' row 1): the hint must be about k = 1,
    not "the window is not symmetric", which the learner got right."""
    with pytest.raises(AssertionError) as e:
        exercises.check_exact_window(lambda k: exact_window(k) if k >= 2 else (0, 0))
    assert "not symmetric" not in str(e.value)
    assert "k = 1" in str(e.value)


@pytest.mark.parametrize(
    "checker, fn",
    [
        (exercises.check_relative_distance,
         lambda i, j, k: str(0 if i - j <= -k else 2 * k - 1 if i - j >= k else i - j + k)),
        (exercises.check_distinct_rows, lambda L, k: str(min(2 * L - 1, 2 * k))),
        (exercises.check_perplexity,
         lambda l, n: str(math.exp(sum(a * b for a, b in zip(l, n, strict=True)) / sum(n)))),
    ],
    ids=["relative_distance", "distinct_rows", "perplexity"],
)
def test_a_number_answer_given_as_a_string_is_refused(checker, fn):
    """"5" cannot index a table; float("5") makes every number checker accept strings."""
    with pytest.raises(AssertionError):
        checker(fn)


# --- lesson 2 ---------------------------------------------------------------------------------------
def _inf_row(d, k):  # "so large that no word can win"
    bias, k_r = torch.zeros(d), torch.zeros(2 * k, d)
    k_r[k + 1] = math.inf
    return bias, k_r


def _nan_row(d, k):
    bias, k_r = torch.zeros(d), torch.zeros(2 * k, d)
    k_r[k + 1] = math.nan
    return bias, k_r


def _inf_entry(d, k):
    bias, k_r = torch.zeros(d), torch.zeros(2 * k, d)
    bias[0], k_r[k + 1, 0] = 10.0, math.inf
    return bias, k_r


@pytest.mark.parametrize("fn", [_inf_row, _nan_row, _inf_entry], ids=["inf row", "nan row", "inf entry"])
def test_previous_token_head_refuses_non_finite_tables(fn):
    """argmax of a row holding NaN/inf 'peaks' there, but the softmax of such scores is NaN: not a head."""
    with pytest.raises(AssertionError, match="inf or NaN"):
        exercises.check_previous_token_head(fn)


# --- lesson 3 ---------------------------------------------------------------------------------------
def test_emd_answer_in_float64_is_compared_not_crashed():
    """The right values as float64 (numpy or .double()) crash torch.allclose with a raw RuntimeError
    ('Double did not match Float') outside _call."""
    assert exercises.check_emd(lambda model, out: emd(model, out).double())
    assert exercises.check_emd(lambda model, out: emd(model, out).numpy().astype(np.float64))


def test_anchor_batch_refuses_windows_that_all_hold_one_slot():
    """No anchor at all, every phrase moved into the object slot: a constant guess scores 100% on held-out
    windows made the same way, and the checker passes it."""
    from deberta_edu.training.probe import ProbeBatch, probe_batch

    def object_slot_only(task, n, generator):
        ids, mask, pos, label = probe_batch(dataclasses.replace(task, first=task.middle), n, generator)
        return ProbeBatch(ids, mask, pos, (pos >= task.middle).long())

    with pytest.raises(AssertionError, match="100% of the windows are in the object slot"):
        exercises.check_anchor_batch(object_slot_only)


def test_anchor_batch_label_in_the_noun_is_not_reported_as_look_alike_windows():
    """'store' always subject, 'mall' always object (the lesson's own example): the checker redraws the nouns
    and then says the learner's windows 'look the same', which they do not; it should say the noun carries
    the label."""
    from deberta_edu.training.probe import ProbeBatch, probe_batch

    def noun_by_slot(task, n, generator):
        ids, mask, pos, label = probe_batch(task, n, generator)
        ids[torch.arange(n), pos] = torch.where(label == 1, task.nouns[1], task.nouns[0])
        return ProbeBatch(ids, mask, pos, label)

    with pytest.raises(AssertionError) as e:
        exercises.check_anchor_batch(noun_by_slot)
    assert "look the same" not in str(e.value) and "noun 7 is only ever in the subject slot" in str(e.value)


# --- lesson 4 ---------------------------------------------------------------------------------------
def test_mask_80_10_10_uses_the_mask_id_it_is_given():
    """[MASK] hard-coded as 4 (the course tokenizer's id) passes because every case uses mask_id = 4."""

    def hard_coded(input_ids, chosen, u, random_ids, mask_id):
        masked = torch.where(chosen & (u < 0.8), 4, input_ids)
        masked = torch.where(chosen & (u >= 0.8) & (u < 0.9), random_ids, masked)
        return masked, torch.where(chosen, input_ids, -100)

    with pytest.raises(AssertionError, match="2 of 5 cases fail") as e:
        exercises.check_mask_80_10_10(hard_coded)
    assert "this looks like '[MASK] written as 4'" in str(e.value)


def test_mask_80_10_10_notices_that_the_input_ids_were_overwritten():
    """labels = input_ids (no clone) writes -100 into the caller's batch; the checker passes clones and
    never looks (check_emd does check in-place changes)."""

    def aliased(input_ids, chosen, u, random_ids, mask_id):
        masked = input_ids.clone()
        masked[chosen & (u < 0.8)] = mask_id
        random = chosen & (u >= 0.8) & (u < 0.9)
        masked[random] = random_ids[random]
        labels = input_ids  # the same tensor
        labels[~chosen] = -100
        return masked, labels

    with pytest.raises(AssertionError, match="changed its arguments in place"):
        exercises.check_mask_80_10_10(aliased)


# --- lesson 5 ---------------------------------------------------------------------------------------
def test_symmetric_kl_halved_is_not_called_mean_over_every_entry():
    """½(KL(p‖q) + KL(q‖p)) matches 'mean over every entry' on the 8×2 case only (C = 2); the hint is taken
    from that one case and sends the learner to F.kl_div's reduction."""
    with pytest.raises(AssertionError) as e:
        exercises.check_symmetric_kl(lambda a, b: symmetric_kl(a, b) / 2)
    assert "this looks like 'half of the sum'" in str(e.value)


@pytest.mark.parametrize(
    "fn",
    [
        lambda g: g / g.abs().amax(-1, keepdim=True).clamp_min(1e-4),
        lambda g: g / g.abs().amax(-1, keepdim=True).clamp_min(1e-6),
        lambda g: g / g.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).eps),
        lambda g: g / (g.abs().amax(-1, keepdim=True) + 1e-8),
    ],
    ids=["floor 1e-4", "floor 1e-6", "floor float32 eps", "eps 1e-8 added"],
)
def test_linf_step_refuses_guards_that_shrink_the_lessons_own_gradients(fn):
    """The checker's gradients are >= 4e-4 per token, but the lesson's batch has a median ‖g‖∞ below 1e-7
    (its assert): each of these guards shortens (most of) those steps, the very effect of the official 1e-6
    that the lesson shows, yet passes."""
    with pytest.raises(AssertionError, match="this looks like '(eps added to the norm|guard too large)'"):
        exercises.check_linf_step(fn)


# --- lesson 6 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fn, named",
    [
        (lambda c, L: train_flops(c, L, rows=lambda c: 2 * c.position_buckets), "buckets as the table"),  # v1
        (lambda c, L: train_flops(c, L, ffn=lambda D: 4 * D), "FFN as 4D"),  # "the FFN is 4x wider"
        (lambda c, L: train_flops(c, L, sizes=(512, 2048, 32000)), None),  # the GPU scale's sizes, hard-coded
    ],
    ids=["R from position_buckets", "FFN as 4D", "hard-coded D F V"],
)
def test_flops_is_checked_beyond_one_model_size_and_layout(fn, named):
    """Every case is the GPU scale in the v3 layout: one D, F = 4D, V and buckets = 256. R = 2 x
    position_buckets gives R = -2 in the v1 layout (plan.py's default, Table 4's: 7-46% too few FLOPs); the
    hard-coded sizes are right for this one model only; F = 4D holds in every course config but not for
    any config (lesson 3's probe and EMD models use F = 2D) and the exercise names F."""
    with pytest.raises(AssertionError, match="of 20 cases fail") as e:
        exercises.check_flops(fn)
    assert named is None or f"this looks like '{named}'" in str(e.value)


def test_flops_message_shows_the_difference_it_refuses():
    """R capped at 2L instead of 2L − 1 is off by ~0.03%: refused, but shown as 'expected 155.4 MFLOP per
    token, got 155.4'."""
    with pytest.raises(AssertionError) as e:
        exercises.check_flops(lambda c, L: train_flops(c, L, cap=lambda L: 2 * L))
    shown = re.findall(r"expected (\S+) MFLOP per token, got (\S+)", str(e.value))
    assert shown and all(expected != got for expected, got in shown), shown
    assert "this looks like 'cap at 2L'" in str(e.value)


def _by_hand(ddof, df_of_n):
    """A paired t-test written out with numpy (a learner's variant of ttest_rel)."""
    from scipy import stats

    def verdict(a, b):
        d = np.array(a) - np.array(b)
        with np.errstate(invalid="ignore"):  # identical results: 0 / 0 is NaN, and NaN is not < 0.05: noise
            t = d.mean() / (d.std(ddof=ddof) / math.sqrt(len(d)))
        p = 2 * stats.t.sf(abs(t), df_of_n(len(d)))
        return "noise" if not p < 0.05 else ("A" if t > 0 else "B")

    return verdict


@pytest.mark.parametrize(
    "fn",
    [_by_hand(ddof=0, df_of_n=lambda n: n - 1), _by_hand(ddof=1, df_of_n=lambda n: n)],
    ids=["np.std (ddof=0)", "n degrees of freedom"],
)
def test_verdict_refuses_a_t_test_with_the_wrong_spread_or_degrees_of_freedom(fn):
    """No case has a t between the wrong and the right critical value (n = 3: 3.18 / 3.51 … 4.30)."""
    with pytest.raises(AssertionError, match="this looks like 't by hand'"):
        exercises.check_verdict(fn)


def test_verdict_sign_rule_is_not_called_two_standard_errors():
    """'A if every seed agrees' gives the same 7 answers as the 2-SE rule, so it is told about 2 SE."""

    def same_sign(a, b):
        d = [x - y for x, y in zip(a, b, strict=True)]
        return "A" if all(x > 0 for x in d) else "B" if all(x < 0 for x in d) else "noise"

    with pytest.raises(AssertionError) as e:
        exercises.check_verdict(same_sign)
    assert "looks like '2 SE'" not in str(e.value) and "this looks like 'every seed agrees'" in str(e.value)


@pytest.mark.parametrize("wrap", [np.array, torch.tensor], ids=["numpy", "torch"])
def test_one_number_in_an_array_is_read_alike_from_numpy_and_torch(wrap):
    """A right answer returned as a one-element array passes whether it is numpy's or torch's (torch's passed and
    numpy's was refused as 'not a whole number'); two numbers are refused by both."""
    exact = lambda i, j, k: 0 if i - j <= -k else 2 * k - 1 if i - j >= k else i - j + k  # noqa: E731
    assert exercises.check_relative_distance(lambda i, j, k: wrap([exact(i, j, k)]))
    assert exercises.check_perplexity(lambda l, n: wrap([math.exp(sum(a * b for a, b in zip(l, n, strict=True))
                                                                  / sum(n))]))
    with pytest.raises(AssertionError):
        exercises.check_relative_distance(lambda i, j, k: wrap([exact(i, j, k)] * 2))
