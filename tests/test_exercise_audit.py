"""Audit of the exercise checkers (lessons 1-6): wrong answers a learner may give that a checker let through, right
answers it refused, messages that contradicted themselves or ended in a raw traceback, and tests that kill the
mutants of the checkers that tests/test_exercises.py and tests/test_exercises_learners.py let survive.

Tests marked DEFECT failed on the checkers as they were (deberta_edu/lessons/exercises before this audit) and pass
with the proposed fix; every other test passes on both and fails on the mutant named in its docstring.
"""

import math
import statistics
import types

import numpy as np
import pytest
import torch

from deberta_edu import EnhancedMaskDecoder, exercises
from deberta_edu.lessons.exercises import lesson3


def _exact_window(k):
    return (-(k - 1), k - 2) if k >= 2 else None


# --- lesson 1 ---------------------------------------------------------------------------------------------------
def test_relative_distance_matrix_and_distinct_rows_try_every_case():
    """Mutants: the matrix checker's k reduced to (10,), distinct_rows' L to 1 … 3: all cases still passed."""
    right = lambda L, k: torch.clamp(torch.arange(L)[:, None] - torch.arange(L)[None, :] + k, 0, 2 * k - 1)  # noqa: E731
    assert exercises.check_relative_distance_matrix(right).cases == 16
    assert exercises.check_distinct_rows(lambda L, k: min(2 * L - 1, 2 * k)).cases == 160


def test_distinct_rows_refuses_a_cap_that_only_large_sequences_show():
    """Mutant l1_rows_range (L in 1 … 3 only): 2L − 1 capped at 2k − 1 ... is wrong only once L > k."""
    with pytest.raises(AssertionError, match="cases fail"):
        exercises.check_distinct_rows(lambda L, k: 2 * L - 1 if L <= 4 else min(2 * L - 1, 2 * k))


def test_exact_window_refuses_one_number_with_a_message():
    """Mutant l1_win_ndim (a 0-d array read as a pair): one number instead of a pair crashed with TypeError."""
    with pytest.raises(AssertionError, match="expected a pair"):
        exercises.check_exact_window(lambda k: k - 2)


def test_exact_window_refuses_a_triple_of_numbers():
    """Mutant l1_win_len (len(pair) < 2): (lo, hi, count) was cut to (lo, hi) and passed."""
    with pytest.raises(AssertionError, match="expected a pair"):
        exercises.check_exact_window(lambda k: None if k < 2 else (*_exact_window(k), 2 * k - 2))


# --- lesson 2 ---------------------------------------------------------------------------------------------------
def _head(rows, size=10.0):
    def fn(d, k):
        bias, k_r = torch.zeros(d), torch.zeros(2 * k, d)
        bias[0] = size
        for r in rows(k):
            k_r[r, 0] = size
        return bias, k_r

    return fn


@pytest.mark.parametrize(
    "rows",
    [lambda k: [k - 1, k + 1], lambda k: [k, k + 1], lambda k: range(0, k + 2)],
    ids=["next and previous", "self and previous", "every key from i - 1 on"],
)
def test_previous_token_head_refuses_a_tie(rows):
    """DEFECT: argmax breaks ties by the first index, so a head whose row k + 1 is only *as* high as rows k − 1 or k
    (softmax splits its attention between the previous token and the next one or itself) passed as a
    previous-token head. Fix (lesson2.check_previous_token_head): key i − 1 must score strictly above every other
    key of row i."""
    with pytest.raises(AssertionError, match="cases fail") as e:
        exercises.check_previous_token_head(_head(rows))
    assert "as high as" in str(e.value)


def test_previous_token_head_refuses_a_large_row_0():
    """Mutant l2_head_L (L = k tokens): row 0 (every key k or more to the right) was never read."""
    def fn(d, k):
        bias, k_r = _head(lambda k: [k + 1])(d, k)
        k_r[0, 0] = 20.0
        return bias, k_r

    with pytest.raises(AssertionError, match="beyond the window"):
        exercises.check_previous_token_head(fn)


def _mirror(q_r, k):
    return torch.cat([q_r[:1], q_r[1:].flip(0)])


def test_mirror_table_checks_the_edge_of_the_window_and_every_case():
    """Mutants l2_mirror_inside (|i − j| < k − 1) and l2_mirror_cases (one case): row 1 (i − j = −(k − 1)) left
    as it was passed."""

    def row_1_unchanged(q_r, k):
        mirrored = _mirror(q_r, k)
        mirrored[1] = q_r[1]
        return mirrored

    with pytest.raises(AssertionError, match="3 of 3 cases fail"):
        exercises.check_mirror_table(row_1_unchanged)
    assert exercises.check_mirror_table(_mirror).cases == 3


def test_mirror_table_is_exact():
    """Mutant l2_mirror_atol (10% tolerance): a table 5% off passed. float32 and numpy answers still pass."""
    with pytest.raises(AssertionError, match="cases fail"):
        exercises.check_mirror_table(lambda q_r, k: 1.05 * _mirror(q_r, k))
    assert exercises.check_mirror_table(lambda q_r, k: _mirror(q_r, k).float())
    assert exercises.check_mirror_table(lambda q_r, k: _mirror(q_r, k).numpy())


# --- lesson 3 ---------------------------------------------------------------------------------------------------
def _emd(model, out, *, keep=None, keys_follow=False, layer_index=None):
    H, state = out.hidden_states[-2 if layer_index is None else layer_index], out.encoder_state
    keys, query = H, H + state.positions
    for _ in range(2):
        query = model.encoder.layers[-1](keys, state.keep if keep is None else keep(state.keep), state.rel,
                                         query_states=query)
        keys = query if keys_follow else keys
    return query


def test_emd_refuses_keys_that_follow_the_query():
    """The EMD as two stacked layers (the second pass reads the first's output as keys): off by ~5e-4 only; under
    a tolerance of 1e-3 (mutant l3_emd_atol) it passed."""
    with pytest.raises(AssertionError, match="3 of 3 cases fail"):
        exercises.check_emd(lambda m, o: _emd(m, o, keys_follow=True))


def test_emd_refuses_an_answer_that_ignores_padding():
    """Mutant l3_emd_pads (no padded tokens in any case): attention over padded keys passed."""
    with pytest.raises(AssertionError, match="2 of 3 cases fail"):
        exercises.check_emd(lambda m, o: _emd(m, o, keep=torch.ones_like))


def test_emd_refuses_a_layer_index_written_in():
    """Mutant l3_emd_layers (every model of 2 layers): hidden_states[1] instead of [-2] passed."""
    with pytest.raises(AssertionError, match="1 of 3 cases fail"):
        exercises.check_emd(lambda m, o: _emd(m, o, layer_index=1))


def test_emd_notices_positions_changed_in_place():
    """Mutant l3_emd_inplace_pos (positions not copied before the call): P changed in place (it is a view of the
    model's position table) went unseen."""

    def right_then_scale_p(model, out):
        answer = EnhancedMaskDecoder()(model.encoder.layers[-1], out.encoder_state).clone()
        out.encoder_state.positions.mul_(2.0)
        return answer

    with pytest.raises(AssertionError, match="changed out.hidden_states or the positions in place"):
        exercises.check_emd(right_then_scale_p)


def _with_sep_at_end(transform=None):
    from deberta_edu.facts import PAD_ID, SEP_ID
    from deberta_edu.training.probe import ProbeBatch, probe_batch

    def make_batch(task, n, generator):
        ids, mask, pos, label = probe_batch(task, n, generator)
        ids[:, -1] = SEP_ID
        batch = ProbeBatch(ids, (ids != PAD_ID).long(), pos, label)
        return transform(batch) if transform else batch

    return make_batch


def _fake_probe(accuracies, seen=None):
    """train_probe replaced: the accuracy of each seed in turn; ``seen`` collects one batch per call."""

    def train_probe(variant, task, *, vocab_size, steps, make_batch, seed):
        if seen is not None:
            seen.append(make_batch(task, 512, torch.Generator().manual_seed(seed)))
        return types.SimpleNamespace(accuracy=accuracies[seed])

    return train_probe


def test_anchor_batch_fails_when_the_probe_does_not_learn(monkeypatch):
    """Mutant l3_anchor_acc (accuracy never compared): a probe at 85% passed."""
    monkeypatch.setattr(lesson3, "train_probe", _fake_probe([0.85, 0.85, 0.85]))
    with pytest.raises(AssertionError, match=r"held-out accuracy 85.0%, expected >= 90%"):
        exercises.check_anchor_batch(_with_sep_at_end())


def test_anchor_batch_tries_three_seeds(monkeypatch):
    """Mutant l3_anchor_seeds (one seed): an anchor that only the third seed learns was refused."""
    monkeypatch.setattr(lesson3, "train_probe", _fake_probe([0.5, 0.6, 0.95]))
    assert exercises.check_anchor_batch(_with_sep_at_end())


def test_anchor_batch_trains_on_redrawn_nouns(monkeypatch):
    """Mutant l3_anchor_redraw: the probe trained on the learner's nouns, which here say the slot in all but one
    window per noun (so the per-noun check lets them through)."""
    from deberta_edu.training.probe import ProbeBatch

    def noun_follows_slot(batch):
        ids, mask, pos, label = batch
        task = exercises.anchor_task()
        noun = torch.where(label == 1, task.nouns[1], task.nouns[0])
        noun[0], noun[1] = task.nouns[1 - int(label[0])], task.nouns[1 - int(label[1])]  # one exception each
        ids = ids.clone()
        ids[torch.arange(len(ids)), pos] = noun
        return ProbeBatch(ids, mask, pos, label)

    seen = []
    monkeypatch.setattr(lesson3, "train_probe", _fake_probe([1.0, 1.0, 1.0], seen))
    exercises.check_anchor_batch(_with_sep_at_end(noun_follows_slot))
    ids, _, pos, label = seen[0]
    noun = ids[torch.arange(len(ids)), pos]
    task = exercises.anchor_task()
    follows = ((noun == task.nouns[1]) == (label == 1)).float().mean().item()
    assert follows < 0.7, follows  # redrawn: about 1/3 + 2/3 · 1/2 agree by chance, not ~100%


def test_anchor_batch_refuses_an_id_just_past_the_vocabulary():
    """Mutant l3_anchor_vocab (ids.max() > 12): id 12 passed the form check, then crashed in the embedding."""
    from deberta_edu.facts import PAD_ID
    from deberta_edu.training.probe import ProbeBatch, probe_batch

    def id_12(task, n, generator):
        ids, mask, pos, label = probe_batch(task, n, generator)
        ids[:, -1] = 12
        return ProbeBatch(ids, (ids != PAD_ID).long(), pos, label)

    with pytest.raises(AssertionError, match=r"ids must be integers in \[0, 11\]"):
        exercises.check_anchor_batch(id_12)


def test_anchor_batch_refuses_flipped_labels(monkeypatch):
    """Mutant l3_anchor_label (labels not compared with the slots): object = 0, subject = 1 passed."""
    monkeypatch.setattr(lesson3, "train_probe", _fake_probe([1.0, 1.0, 1.0]))
    with pytest.raises(AssertionError, match="the labels must stay the slots"):
        exercises.check_anchor_batch(_with_sep_at_end(lambda b: b._replace(label=1 - b.label)))


def test_anchor_batch_refuses_float_labels_with_a_message():
    """DEFECT: label.float() (the right windows, labels as floats) passed every form check and then crashed inside
    train_probe with a raw 'expected target dtype to be Long' traceback. Fix (lesson3._batch_problem): pos and
    label must be integer tensors, said in words."""
    with pytest.raises(AssertionError, match="integer"):
        exercises.check_anchor_batch(_with_sep_at_end(lambda b: b._replace(label=b.label.float())))


# --- lesson 4 ---------------------------------------------------------------------------------------------------
def _mask_in_float64(input_ids, chosen, u, random_ids, mask_id):
    u = u.double()  # or u.tolist() in a loop: the same numbers, compared in float64
    masked = torch.where(chosen & (u < 0.8), mask_id, input_ids)
    masked = torch.where(chosen & (u >= 0.8) & (u < 0.9), random_ids, masked)
    return masked, torch.where(chosen, input_ids, -100)


def _mask_by_loops(input_ids, chosen, u, random_ids, mask_id):
    masked = input_ids.clone()
    for b, row in enumerate(u.tolist()):
        for t, x in enumerate(row):
            if chosen[b, t] and x < 0.8:
                masked[b, t] = mask_id
            elif chosen[b, t] and x < 0.9:
                masked[b, t] = random_ids[b, t]
    return masked, torch.where(chosen, input_ids, -100)


@pytest.mark.parametrize("fn", [_mask_in_float64, _mask_by_loops], ids=["u.double()", "loops over u.tolist()"])
def test_mask_80_10_10_accepts_the_rule_in_float64(fn):
    """DEFECT: the edge case u = float32(0.9) = 0.89999998 is below 0.9, so the rule as stated makes it a random
    token; the reference (float32 comparison, where 0.9 rounds to the same 0.89999998) keeps it, and refused
    these right answers with the self-contradicting 'token [0, 1] (chosen, 0.8 <= u < 0.9: random) expected
    51 [its own id], got 46'. Fix (lesson4._masking_cases): the edge value is the first float32 above 0.9, where
    both precisions agree (u = 0.8 stays: float32(0.8) is above 0.8 in both)."""
    assert exercises.check_mask_80_10_10(fn)


def test_mask_80_10_10_message_names_the_rule_the_reference_applied():
    """DEFECT (message): whatever the token's u, the rule named beside a mismatch is the one the expected value
    follows. Fix (lesson4._rule): compare u as the reference does (float32 tensor), and show u."""

    def random_up_to_0_9_inclusive(input_ids, chosen, u, random_ids, mask_id):
        u = torch.where(u == torch.tensor(0.9).nextafter(torch.tensor(1.0)), torch.tensor(0.85), u)
        return _mask_in_float64(input_ids, chosen, u, random_ids, mask_id)

    with pytest.raises(AssertionError, match="1 of 5 cases fail") as e:
        exercises.check_mask_80_10_10(random_up_to_0_9_inclusive)
    assert "(chosen, u = 0.90000004 >= 0.9: unchanged) expected 51, got 46" in str(e.value)


def test_mask_80_10_10_tries_a_batch_with_nothing_chosen():
    """Mutant l4_mask_none (the 'none chosen' case replaced by another 15% case): an answer that gives the
    batch itself as labels when nothing is chosen passed."""

    def labels_when_none(input_ids, chosen, u, random_ids, mask_id):
        masked, labels = exercises.apply_80_10_10(input_ids, chosen, u, random_ids, mask_id)
        return (masked, labels) if chosen.any() else (masked, input_ids.clone())

    with pytest.raises(AssertionError, match=r"(?s)1 of 5 cases fail.*none chosen"):
        exercises.check_mask_80_10_10(labels_when_none)


def test_perplexity_is_exact():
    """Mutant l4_ppl_tol (1% tolerance): weights n − 1 instead of n (0.04-0.4% off) passed."""
    with pytest.raises(AssertionError, match="3 of 6 cases fail"):
        exercises.check_perplexity(
            lambda losses, n: math.exp(sum(lo * (t - 1) for lo, t in zip(losses, n, strict=True)) / sum(t - 1 for t in n))
        )


# --- lesson 5 ---------------------------------------------------------------------------------------------------
def _kl(a, b):
    log_p, log_q = a.log_softmax(-1), b.log_softmax(-1)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1).mean()


def test_symmetric_kl_reports_each_broken_property():
    """Mutants l5_kl_same, l5_kl_neg, l5_kl_sym (each property check removed): the value check alone still failed
    these answers, but the message no longer said which property a divergence lacks, which the exercise asks."""

    def cross_entropy(a, b):  # sift_symmetric_ce: H(p, q) + H(q, p), not 0 at p = q
        return (-(a.softmax(-1) * b.log_softmax(-1)).sum(-1) - (b.softmax(-1) * a.log_softmax(-1)).sum(-1)).mean()

    with pytest.raises(AssertionError, match=r"f\(p, p\) should be 0"):
        exercises.check_symmetric_kl(cross_entropy)
    with pytest.raises(AssertionError, match="a divergence is never negative"):
        exercises.check_symmetric_kl(lambda a, b: -_kl(a, b))
    one_sided = lambda a, b: (a.softmax(-1) * (a.log_softmax(-1) - b.log_softmax(-1))).sum(-1).mean()  # noqa: E731
    with pytest.raises(AssertionError, match=r"not symmetric: f\(p, q\) = "):
        exercises.check_symmetric_kl(one_sided)


def test_symmetric_kl_right_answers_in_other_forms_pass():
    """(p − q)·(logits_p − logits_q) equals (p − q)·(log p − log q) (Σ (p − q) = 0), and float64 answers."""
    assert exercises.check_symmetric_kl(lambda a, b: ((a.softmax(-1) - b.softmax(-1)) * (a - b)).sum(-1).mean())
    assert exercises.check_symmetric_kl(lambda a, b: _kl(a.double(), b.double()))


def test_symmetric_kl_shifts_each_argument_on_its_own():
    """The exercise says a constant added to a row of logits changes nothing; only logits_p was shifted, so an
    answer that used logits_q as log-probabilities went unnamed (the value check failed it, with no property)."""

    def q_as_log_probs(a, b):  # KL(p‖q) + Σ q (logits_q − log p): the second term reads logits_q as log q
        log_p, log_q = a.log_softmax(-1), b.log_softmax(-1)
        return ((log_p.exp() * (log_p - log_q)).sum(-1) + (log_q.exp() * (b - log_p)).sum(-1)).mean()

    with pytest.raises(AssertionError, match="adding a constant to each row of logits_q") as e:
        exercises.check_symmetric_kl(q_as_log_probs)
    assert "row of logits_p" not in str(e.value)


def test_linf_step_refuses_an_eps_of_1e_12_added_to_the_norm():
    """Mutants l5_linf_tol (rtol 1e-2) and l5_linf_atol (atol 1e-2): + 1e-12 shortens the steps of 1e-10
    gradients by 1% and passed."""
    with pytest.raises(AssertionError, match="cases fail"):
        exercises.check_linf_step(lambda g: g / (g.abs().amax(-1, keepdim=True) + 1e-12))


def test_a_bfloat16_answer_is_compared_not_crashed():
    """DEFECT (message): a bfloat16 tensor crashed _as_array with a raw 'TypeError: Got unsupported ScalarType
    BFloat16' from inside the checker. Fix (_common._as_array): read it as float32."""
    with pytest.raises(AssertionError, match="cases fail"):
        exercises.check_linf_step(lambda g: exercises.linf_step(g).bfloat16())
    with pytest.raises(AssertionError, match="cases fail"):
        exercises.check_symmetric_kl(lambda a, b: _kl(a, b).bfloat16() + 1)


# --- lesson 6 ---------------------------------------------------------------------------------------------------
def _verdict_by(noise):
    from scipy import stats

    def verdict(a, b):
        p = stats.ttest_rel(a, b).pvalue
        return "noise" if noise(p) else ("A" if statistics.mean(a) > statistics.mean(b) else "B")

    return verdict


@pytest.mark.parametrize("noise", [lambda p: p > 0.05, lambda p: p >= 0.05], ids=["p > 0.05", "p >= 0.05"])
def test_verdict_refuses_a_rule_that_calls_nan_a_finding(noise):
    """DEFECT: "noise if p > 0.05" reads NaN (identical results for every seed: ttest_rel gives p = NaN) as a
    finding and says "B"; the exercise says noise unless p < 0.05, but no case had identical results. Fix
    (lesson6.VERDICT_CASES): a case with a == b, and _verdict's rules guarded against a zero spread."""
    with pytest.raises(AssertionError, match="expected 'noise', got 'B'"):
        exercises.check_verdict(_verdict_by(noise))


def test_verdict_right_answers_pass():
    """not p < 0.05 (the notebook's), ttest_1samp on the differences, and a sign taken from t."""
    from scipy import stats

    assert exercises.check_verdict(_verdict_by(lambda p: not p < 0.05))

    def one_sample(a, b):
        r = stats.ttest_1samp(np.subtract(a, b), 0.0)
        return "noise" if not r.pvalue < 0.05 else ("A" if r.statistic > 0 else "B")

    assert exercises.check_verdict(one_sample)
