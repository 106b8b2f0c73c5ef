"""exercises: right answers pass, typical wrong answers fail with a message that names the mistake."""

import math

import pytest
import torch
import torch.nn.functional as F

from deberta_edu import (
    EnhancedMaskDecoder,
    exercises,
    mask_tokens,
    relative_distance,
    relative_distance_matrix,
)
from deberta_edu.data import packing
from deberta_edu.data.tokenizer import Tokenizer
from deberta_edu.training.sift import AdversarialConfig, SiFT, symmetric_kl


def not_yet(*args):
    raise NotImplementedError


# --- lesson 1 -------------------------------------------------------------------------------------
def delta_by_hand(i, j, k):
    """Eq. (3) written out here, apart from the library's relative_distance that the checker compares with."""
    return 0 if i - j <= -k else 2 * k - 1 if i - j >= k else i - j + k


def test_relative_distance_right_and_unfinished(capsys):
    result = exercises.check_relative_distance(delta_by_hand)
    assert result.passed and result.cases > 100
    assert "all" in capsys.readouterr().out
    pending = exercises.check_relative_distance(not_yet)
    assert not pending.passed and not pending.attempted
    assert "not attempted" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda i, j, k: relative_distance(j, i, k), "δ(j, i)"),
        (lambda i, j, k: i - j + k, "clamp: row 0 when i − j <= −k"),
        (lambda i, j, k: min(max(i - j + k, 0), 2 * k), "2k − 1, not 2k"),
        (lambda i, j, k: 0, "three cases"),
    ],
)
def test_relative_distance_mistakes(wrong, message):
    with pytest.raises(AssertionError, match="cases fail") as e:
        exercises.check_relative_distance(wrong)
    assert message in str(e.value)
    assert "expected" in str(e.value) and "got" in str(e.value)


def test_relative_distance_matrix():
    by_hand = lambda L, k: [[delta_by_hand(i, j, k) for j in range(L)] for i in range(L)]  # noqa: E731
    assert exercises.check_relative_distance_matrix(lambda L, k: torch.tensor(by_hand(L, k)))
    assert exercises.check_relative_distance_matrix(lambda L, k: relative_distance_matrix(L, k=k).numpy())
    with pytest.raises(AssertionError, match="transposed"):
        exercises.check_relative_distance_matrix(lambda L, k: relative_distance_matrix(L, k=k).T)
    with pytest.raises(AssertionError, match="integer"):
        exercises.check_relative_distance_matrix(lambda L, k: relative_distance_matrix(L, k=k).float())
    with pytest.raises(AssertionError, match="shape"):
        exercises.check_relative_distance_matrix(lambda L, k: relative_distance_matrix(L + 1, k=k))


def test_exact_window():
    result = exercises.check_exact_window(lambda k: (-(k - 1), k - 2) if k >= 2 else None)
    assert result.passed and result.cases == 12
    for wrong, message in [
        (lambda k: (-(k - 1), k - 1), "not symmetric"),
        (lambda k: (-k, k), "−k and k are clamped"),
        (lambda k: (-(k - 1), k - 2), "k = 1"),  # forgets that k = 1 leaves no distance a row of its own
        (lambda k: "all", "expected a pair"),
        (lambda k: (-(k - 1), k - 2, "x") if k >= 2 else None, "expected a pair"),  # extra elements are not cut off
        (lambda k: {"lo": -(k - 1), "hi": k - 2}, "expected a pair"),
    ]:
        with pytest.raises(AssertionError, match="cases fail") as e:
            exercises.check_exact_window(wrong)
        assert message in str(e.value)
    assert not exercises.check_exact_window(not_yet).attempted


def test_distinct_rows():
    assert exercises.check_distinct_rows(lambda L, k: min(2 * L - 1, 2 * k))
    with pytest.raises(AssertionError, match="L=1, k=1: expected 1, got 2"):
        exercises.check_distinct_rows(lambda L, k: 2 * k)


# --- lesson 2 -------------------------------------------------------------------------------------
def previous_token_head(d, k, row_offset=1, size=10.0, clamp=0.0):
    bias, k_r = torch.zeros(d), torch.zeros(2 * k, d)
    bias[0] = size
    k_r[k + row_offset, 0] = size
    k_r[0, 0] = k_r[-1, 0] = clamp
    return bias, k_r


def test_previous_token_head():
    assert exercises.check_previous_token_head(previous_token_head).cases == 75
    with pytest.raises(AssertionError, match="NEXT token"):
        exercises.check_previous_token_head(lambda d, k: previous_token_head(d, k, row_offset=-1))
    with pytest.raises(AssertionError, match="beyond the window"):
        exercises.check_previous_token_head(lambda d, k: previous_token_head(d, k, clamp=20.0))
    with pytest.raises(AssertionError, match="the words decide"):
        exercises.check_previous_token_head(lambda d, k: previous_token_head(d, k, size=0.3))
    with pytest.raises(AssertionError, match="shape"):
        exercises.check_previous_token_head(lambda d, k: previous_token_head(d + 1, k))
    with pytest.raises(AssertionError, match=r"return a pair \(bias, k_r\).*got None"):
        exercises.check_previous_token_head(lambda d, k: None)
    assert not exercises.check_previous_token_head(not_yet).attempted


def test_mirror_table_and_answers():
    assert exercises.check_mirror_table(lambda q_r, k: torch.cat([q_r[:1], q_r[1:].flip(0)]))
    assert exercises.check_mirror_table(lambda q_r, k: torch.cat([q_r[-1:], q_r[1:].flip(0)]))  # row 0: free
    with pytest.raises(AssertionError, match="one row off"):
        exercises.check_mirror_table(lambda q_r, k: q_r.flip(0))
    with pytest.raises(AssertionError, match="pairs inside the window differ"):
        exercises.check_mirror_table(lambda q_r, k: q_r)
    right = {"every_pair": False, "c2p_unchanged": False, "own_projection": True}
    assert exercises.mirror_facts() == right
    assert exercises.check_mirror_answers(right)
    for key in right:  # every answer is checked: "all False" or "all True" fails
        with pytest.raises(AssertionError, match="rows 1 and 0"):
            exercises.check_mirror_answers({**right, key: not right[key]})
    assert not exercises.check_mirror_answers({**right, "every_pair": None}).attempted


def diagnose(scores, q_c, k_c, q_r, k_r, k):
    distance = {kind: float((exercises.head_scores(kind, q_c, k_c, q_r, k_r, k) - scores).abs().max())
                for kind in exercises.DIAGNOSES}
    return min(distance, key=distance.get)


def test_diagnosis():
    assert exercises.check_diagnosis(diagnose).cases == 20
    with pytest.raises(AssertionError, match="you said 'deberta'"):
        exercises.check_diagnosis(lambda *a: "deberta")
    # a rule of thumb on the size of the scores does not pass
    with pytest.raises(AssertionError, match="cases fail"):
        exercises.check_diagnosis(lambda s, *a: "sqrt_d" if s.std() > 0.8 else "deberta")


def test_an_answer_that_is_not_a_whole_number_is_not_rounded_to_one():
    with pytest.raises(AssertionError, match="got 1.5, not a whole number"):
        exercises.check_relative_distance(lambda i, j, k: relative_distance(i, j, k) + 0.5)
    with pytest.raises(AssertionError, match="not a whole number"):
        exercises.check_distinct_rows(lambda L, k: len(torch.unique(relative_distance_matrix(L, k=k))) + 0.9)
    assert exercises.check_relative_distance(lambda i, j, k: float(relative_distance(i, j, k)))  # 3.0 is 3


def test_an_error_in_the_learners_function_names_the_case():
    with pytest.raises(AssertionError, match=r"raised ZeroDivisionError: .*\n  when called with \(\[9.0\], \[100\]\)"):
        exercises.check_perplexity(lambda losses, tokens: 1 / 0)
    with pytest.raises(AssertionError, match="return one number, got None"):
        exercises.check_perplexity(lambda losses, tokens: None)


def test_true_false_answers_must_be_booleans():
    truth = {"no_emd": True, "bert": False, "deberta_encoder": True, "deberta_decoder": False}
    with pytest.raises(AssertionError, match="answer each with True or False"):
        exercises.check_shift_answers({k: str(v) for k, v in truth.items()})  # "False" is a true string


def test_diagnosis_by_the_closest_allclose_candidate_passes():
    """A learner who rebuilds the candidates another way (einsum) and keeps the one torch.allclose accepts."""

    def by_allclose(scores, q_c, k_c, q_r, k_r, k):
        index = relative_distance_matrix(len(q_c), k=k)
        c2c = torch.einsum("id,jd->ij", q_c, k_c)
        c2p = torch.einsum("id,ijd->ij", q_c, k_r[index])
        p2c, paper_p2c = (torch.einsum("jd,ijd->ij", k_c, q_r[i]) for i in (index, index.T))
        p2p = torch.einsum("ijd,ijd->ij", q_r[index], k_r[index.T])
        d = q_c.shape[-1]
        candidates = {"deberta": (c2c + c2p + p2c) / math.sqrt(3 * d), "sqrt_d": (c2c + c2p + p2c) / math.sqrt(d),
                      "no_p2c": (c2c + c2p) / math.sqrt(3 * d), "paper_p2c": (c2c + c2p + paper_p2c) / math.sqrt(3 * d),
                      "with_p2p": (c2c + c2p + p2c + p2p) / math.sqrt(3 * d)}
        assert set(candidates) == set(exercises.DIAGNOSES)
        return next((kind for kind, c in candidates.items() if torch.allclose(c, scores)), "none matched")

    assert exercises.check_diagnosis(by_allclose)


def test_diagnosis_candidates_differ():
    """Every head kind gives different scores on the same inputs: the exercise has one answer per case."""
    g = torch.Generator().manual_seed(0)
    q_c, k_c = torch.randn(2, 9, 8, generator=g)
    q_r, k_r = torch.randn(2, 6, 8, generator=g)
    maps = [exercises.head_scores(kind, q_c, k_c, q_r, k_r, 3) for kind in exercises.DIAGNOSES]
    for a in range(len(maps)):
        for b in range(a):
            assert (maps[a] - maps[b]).abs().max() > 0.1


# --- lesson 3 -------------------------------------------------------------------------------------
def test_lesson3_emd():
    assert exercises.check_emd(lambda model, out: EnhancedMaskDecoder()(model.encoder.layers[-1], out.encoder_state))
    assert not exercises.check_emd(not_yet).attempted
    for mistake, (kw, hint) in exercises.EMD_MISTAKES.items():
        with pytest.raises(AssertionError) as e:
            exercises.check_emd(
                lambda model, out, kw=kw: exercises._emd_variant(model, out, **kw)
            )
        assert mistake in str(e.value) and hint in str(e.value)


def test_lesson3_emd_reads_the_real_tokens_and_notices_in_place_changes():
    def right(model, out):
        return EnhancedMaskDecoder()(model.encoder.layers[-1], out.encoder_state)

    def padding_zeroed(model, out):  # right on every real token
        return right(model, out) * out.encoder_state.keep.reshape(*out.hidden_states[-1].shape[:2], 1)

    assert exercises.check_emd(padding_zeroed)

    def in_place(model, out):
        out.hidden_states[-2].add_(out.encoder_state.positions)  # H += positions: the encoder's output changed
        return right(model, out)

    with pytest.raises(AssertionError, match="changed out.hidden_states or the positions in place"):
        exercises.check_emd(in_place)


def test_lesson3_shift_answers():
    truth = {"no_emd": True, "bert": False, "deberta_encoder": True, "deberta_decoder": False}
    measured = exercises.shift_invariance()
    assert {k: v < 1e-4 for k, v in measured.items()} == truth
    assert exercises.check_shift_answers(truth)
    assert not exercises.check_shift_answers(dict.fromkeys(truth)).attempted
    with pytest.raises(AssertionError, match="2 of 4 cases fail"):
        exercises.check_shift_answers(dict.fromkeys(truth, True))
    with pytest.raises(AssertionError, match="exactly the keys"):
        exercises.check_shift_answers({"bert": False})


def _with_anchor(position, token=None):  # lesson 3, exercise 3
    """Exercise 3 answers: probe_batch's windows with one more token at ``position`` (None: unchanged)."""
    from deberta_edu.facts import PAD_ID, SEP_ID
    from deberta_edu.training.probe import ProbeBatch, probe_batch

    def make_batch(task, n, generator):
        ids, mask, pos, label = probe_batch(task, n, generator)
        if position is not None:
            ids[:, position] = SEP_ID if token is None else token
        return ProbeBatch(ids, (ids != PAD_ID).long(), pos, label)

    return make_batch


def test_lesson3_anchor_batch_right_answers_pass(one_thread, capsys):
    assert exercises.check_anchor_batch(_with_anchor(-1))  # [SEP] at the end: within k − 1 of every noun
    assert "held-out accuracy 100.0%" in capsys.readouterr().out
    assert exercises.check_anchor_batch(_with_anchor(3))  # seen only by "the": two layers relay it
    assert not exercises.check_anchor_batch(not_yet).attempted


def test_lesson3_anchor_batch_wrong_answers_name_the_mistake():
    from deberta_edu.facts import PAD_ID, SEP_ID
    from deberta_edu.training.probe import ProbeBatch, probe_batch

    with pytest.raises(AssertionError, match="look the same to 2 layers of relative attention"):
        exercises.check_anchor_batch(probe_batch)  # unchanged: [CLS] is clamped for both slots
    with pytest.raises(AssertionError, match="look the same"):
        exercises.check_anchor_batch(_with_anchor(1))  # a second anchor, but as far away as [CLS]

    def leak(task, n, generator):  # a marker that follows the label
        ids, mask, pos, label = probe_batch(task, n, generator)
        ids[:, -1] = torch.where(label == 1, SEP_ID, PAD_ID)
        return ProbeBatch(ids, (ids != PAD_ID).long(), pos, label)

    with pytest.raises(AssertionError, match="a token that moves with the label"):
        exercises.check_anchor_batch(leak)

    def stale_mask(task, n, generator):
        ids, mask, pos, label = probe_batch(task, n, generator)
        ids[:, -1] = SEP_ID
        return ProbeBatch(ids, mask, pos, label)

    with pytest.raises(AssertionError, match="rebuild it after adding tokens"):
        exercises.check_anchor_batch(stale_mask)

    def moved(task, n, generator):  # the phrase moved back within reach of [CLS]
        import dataclasses

        batch = probe_batch(task, n, generator)
        return probe_batch(dataclasses.replace(task, first=3, last=8), n, generator)._replace(label=batch.label)

    with pytest.raises(AssertionError, match="must stay where probe_batch put it"):
        exercises.check_anchor_batch(moved)
    with pytest.raises(AssertionError, match=r"ids must be integers in \[0, 11\]"):
        exercises.check_anchor_batch(_with_anchor(-1, token=40))
    with pytest.raises(AssertionError, match="must return ProbeBatch"):
        exercises.check_anchor_batch(lambda task, n, generator: "windows")


# --- lesson 4 -------------------------------------------------------------------------------------
def test_80_10_10_reference_is_what_mask_tokens_does():
    """The checker's reference applies the rule exactly as mask_tokens does, draw for draw."""
    ids = torch.randint(5, 100, (6, 40), generator=torch.Generator().manual_seed(3))
    ids[:, 0], ids[:, -1] = 1, 2
    masked, labels = mask_tokens(
        ids,
        vocab_size=100,
        mask_token_id=4,
        special_token_ids=(0, 1, 2, 3, 4),
        generator=torch.Generator().manual_seed(7),
    )
    g = torch.Generator().manual_seed(7)  # the same draws, in mask_tokens' order
    chosen = (torch.rand(ids.shape, generator=g) < 0.15) & (ids > 4)
    u = torch.rand(ids.shape, generator=g)
    random_ids = torch.arange(5, 100)[torch.randint(95, ids.shape, generator=g)]
    ref_masked, ref_labels = exercises.apply_80_10_10(ids, chosen, u, random_ids, 4)
    assert torch.equal(ref_masked, masked) and torch.equal(ref_labels, labels)


def test_mask_80_10_10():
    def mine(input_ids, chosen, u, random_ids, mask_id):  # a learner's answer, in place
        masked = input_ids.clone()
        masked[chosen & (u < 0.8)] = mask_id
        replace = chosen & (u >= 0.8) & (u < 0.9)
        masked[replace] = random_ids[replace]
        labels = input_ids.clone()
        labels[~chosen] = -100
        return masked, labels

    assert exercises.check_mask_80_10_10(mine).cases == 5
    assert exercises.check_mask_80_10_10(lambda *a: exercises.apply_80_10_10(*a))
    assert not exercises.check_mask_80_10_10(not_yet).attempted
    for mistake, hint in exercises.MASKING_MISTAKES.items():
        with pytest.raises(AssertionError, match="cases fail") as e:
            exercises.check_mask_80_10_10(lambda *a, m=mistake: exercises.apply_80_10_10(*a, mistake=m))
        assert mistake in str(e.value) and hint in str(e.value)
        assert "expected" in str(e.value) and "got" in str(e.value)
    with pytest.raises(AssertionError, match="pair"):
        exercises.check_mask_80_10_10(lambda *a: exercises.apply_80_10_10(*a)[0])
    with pytest.raises(AssertionError, match="integer"):
        exercises.check_mask_80_10_10(lambda *a: tuple(t.float() for t in exercises.apply_80_10_10(*a)))

    def edge(input_ids, chosen, u, random_ids, mask_id, masked_below=0.8):  # u <= 0.8 where u < 0.8 is meant
        u = torch.where(u == torch.tensor(masked_below), torch.tensor(0.0), u)
        return mine(input_ids, chosen, u, random_ids, mask_id)

    with pytest.raises(AssertionError, match="1 of 5 cases fail"):
        exercises.check_mask_80_10_10(edge)


def mean_loss(losses, tokens):
    return sum(lo * n for lo, n in zip(losses, tokens, strict=True)) / sum(tokens)


def test_perplexity():
    def mine(losses, tokens):
        return math.exp(mean_loss(losses, tokens))

    assert exercises.check_perplexity(mine).cases == 6
    assert exercises.check_perplexity(
        lambda l, n: torch.exp(torch.tensor(l) @ torch.tensor(n, dtype=torch.float) / sum(n))
    )
    assert not exercises.check_perplexity(not_yet).attempted
    wrong = {
        "unweighted": lambda l, n: math.exp(sum(l) / len(l)),
        "mean of perplexities": lambda l, n: sum(math.exp(x) for x in l) / len(l),
        "no exp": mean_loss,
        "base 2": lambda l, n: 2 ** mean_loss(l, n),
    }
    for mistake, fn in wrong.items():
        with pytest.raises(AssertionError, match="cases fail") as e:
            exercises.check_perplexity(fn)
        assert mistake in str(e.value) and exercises.PERPLEXITY_MISTAKES[mistake] in str(e.value)
    with pytest.raises(AssertionError, match="one number"):
        exercises.check_perplexity(lambda l, n: [1.0, 2.0])


def test_never_masked():
    truth = {
        "[PAD]": True,
        "[CLS]": True,
        "[SEP]": True,
        "[UNK]": True,
        "[MASK]": True,
        "<0x41>": False,
        "▁the": False,
    }
    assert exercises.never_masked() == truth
    assert exercises.check_never_masked(truth)
    assert not exercises.check_never_masked(dict.fromkeys(truth)).attempted
    with pytest.raises(AssertionError, match="2 of 7 cases fail") as e:
        exercises.check_never_masked({**truth, "[MASK]": False, "<0x41>": True})
    assert "already in the text" in str(e.value) and "tokenizer.special_ids" in str(e.value)
    with pytest.raises(AssertionError, match="exactly the keys"):
        exercises.check_never_masked({"[CLS]": True})


def test_never_masked_with_the_course_tokenizer():
    folder = packing.dataset_dir("bbc", 8000, 128)
    if not (folder / "tokenizer.model").exists():
        pytest.skip("the bbc tokenizer is not built here (python -m deberta_edu.packing build bbc)")
    tokenizer = Tokenizer(folder / "tokenizer.model")
    assert exercises.never_masked(tokenizer) == exercises.never_masked()


# --- lesson 5 -------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:reduction")  # a wrong answer that uses reduction="mean"
def test_symmetric_kl():
    def mine(logits_p, logits_q):
        log_p, log_q = logits_p.log_softmax(-1), logits_q.log_softmax(-1)
        p, q = log_p.exp(), log_q.exp()
        return ((p * (log_p - log_q)).sum(-1) + (q * (log_q - log_p)).sum(-1)).mean()

    assert exercises.check_symmetric_kl(mine).cases == 16
    assert exercises.check_symmetric_kl(symmetric_kl)
    assert not exercises.check_symmetric_kl(not_yet).attempted

    def kl(a, b):
        return F.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True, reduction="none").sum(-1)

    wrong = {
        "one-sided KL(p‖q)": lambda a, b: kl(a, b).mean(),
        "no mean": lambda a, b: kl(a, b) + kl(b, a),
        "sum over rows": lambda a, b: (kl(a, b) + kl(b, a)).sum(),
        "mean over every entry": lambda a, b: (
            F.kl_div(b.log_softmax(-1), a.softmax(-1), reduction="mean")
            + F.kl_div(a.log_softmax(-1), b.softmax(-1), reduction="mean")
        ),
        "probabilities instead of log-probabilities": lambda a, b: (
            ((a.softmax(-1) - b.softmax(-1)) * (a.softmax(-1) - b.softmax(-1))).sum(-1).mean()
        ),
        "kl_div of probabilities": lambda a, b: (
            F.kl_div(b.softmax(-1), a.softmax(-1), reduction="batchmean")
            + F.kl_div(a.softmax(-1), b.softmax(-1), reduction="batchmean")
        ),
        "logits instead of log-probabilities": lambda a, b: (
            F.kl_div(b, a.softmax(-1), reduction="batchmean")
            + F.kl_div(a, b.softmax(-1), reduction="batchmean")
        ),
        "softmax over the batch": lambda a, b: (
            F.kl_div(b.log_softmax(0), a.log_softmax(0), log_target=True, reduction="none").sum(-1)
            + F.kl_div(a.log_softmax(0), b.log_softmax(0), log_target=True, reduction="none").sum(-1)
        ).mean(),
        "a NaN answer": lambda a, b: (kl(a, b) + kl(b, a)).mean() * float("nan"),
    }
    for mistake, fn in wrong.items():
        with pytest.raises(AssertionError, match="cases fail") as e:
            exercises.check_symmetric_kl(fn)
        assert mistake in str(e.value) and exercises.KL_HINTS[mistake] in str(e.value), mistake
    with pytest.raises(AssertionError, match="not symmetric"):
        exercises.check_symmetric_kl(lambda a, b: kl(a, b).mean())
    with pytest.raises(AssertionError, match="adding a constant to each row"):
        exercises.check_symmetric_kl(wrong["logits instead of log-probabilities"])


def test_linf_step_reference_is_what_the_adversary_does():
    """The checker's reference is the step of sift.SiFT.ascent_step with step_eps=0 (no 1e-6 beside the norm)."""
    torch.manual_seed(0)
    embeddings = torch.nn.Module()
    embeddings.norm = torch.nn.LayerNorm(8)
    head = torch.nn.Linear(8, 3)
    x = torch.randn(2, 5, 8)

    def logits_fn():
        return head(embeddings.norm(x)).mean(1)  # (2, 3)

    adversary = SiFT(embeddings, AdversarialConfig(step_size=0.1, step_eps=0.0))
    clean = logits_fn().detach()
    delta0 = adversary.initial_delta((2, 5, 8), "cpu")
    grad, _ = adversary.delta_grad(logits_fn, clean, delta0)
    delta1, _ = adversary.ascent_step(logits_fn, clean, delta0)
    assert torch.allclose((delta1 - delta0) / 0.1, exercises.linf_step(grad), atol=1e-5)


def test_linf_step():
    def naive(grad):  # the first thing a learner writes: right, except on padding
        return grad / grad.abs().amax(dim=-1, keepdim=True)

    assert exercises.check_linf_step(exercises.linf_step).cases == 4
    assert exercises.check_linf_step(lambda g: g / g.abs().amax(-1, keepdim=True).clamp_min(1e-12))
    assert exercises.check_linf_step(lambda g: (g / g.abs().amax(-1, keepdim=True)).nan_to_num(0.0))
    assert not exercises.check_linf_step(not_yet).attempted
    with pytest.raises(AssertionError, match="1 of 4 cases fail") as e:
        exercises.check_linf_step(naive)
    assert "NaN" in str(e.value) and exercises.LINF_HINTS["padding"] in str(e.value)
    wrong = {
        "global L∞": lambda g: g / g.abs().max(),
        "L2 per token": lambda g: g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12),
        "global L2": lambda g: g / g.norm(),
        "over the sequence": lambda g: g / g.abs().amax(dim=1, keepdim=True),
        "no abs": lambda g: g / g.amax(dim=-1, keepdim=True),
        "sign": torch.sign,
        "eps added to the norm": lambda g: g / (g.abs().amax(-1, keepdim=True) + 1e-6),  # the official code's
        "guard too large": lambda g: g / g.abs().amax(-1, keepdim=True).clamp_min(1e-3),
    }
    for mistake, fn in wrong.items():
        with pytest.raises(AssertionError, match="cases fail") as e:
            exercises.check_linf_step(fn)
        assert mistake in str(e.value) and exercises.LINF_HINTS[mistake] in str(e.value), mistake
    with pytest.raises(AssertionError, match="expected shape"):
        exercises.check_linf_step(lambda g: exercises.linf_step(g)[0])
    with pytest.raises(AssertionError, match="got None"):
        exercises.check_linf_step(lambda g: None)
    # the max over the batch fits 'sign' only where the batch has one row: no mistake is named from one case
    with pytest.raises(AssertionError, match="cases fail") as e:
        exercises.check_linf_step(lambda g: g / g.abs().amax(0, keepdim=True).clamp_min(1e-12))
    assert "looks like 'sign'" not in str(e.value)
