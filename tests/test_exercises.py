"""exercises: right answers pass, typical wrong answers fail with a message that names the mistake."""

import math

import pytest
import torch

from deberta_edu import EnhancedMaskDecoder, exercises, relative_distance, relative_distance_matrix


def not_yet(*args):
    raise NotImplementedError


# --- lesson 1 -------------------------------------------------------------------------------------
def test_relative_distance_right_and_unfinished(capsys):
    result = exercises.check_relative_distance(relative_distance)
    assert result.passed and result.cases > 100
    assert "all" in capsys.readouterr().out
    pending = exercises.check_relative_distance(not_yet)
    assert not pending.passed and not pending.attempted
    assert "not attempted" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda i, j, k: relative_distance(j, i, k), "δ(j, i)"),
        (lambda i, j, k: i - j + k, "clamp |i − j| >= k"),
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
    assert exercises.check_relative_distance_matrix(lambda L, k: relative_distance_matrix(L, k=k))
    assert exercises.check_relative_distance_matrix(lambda L, k: relative_distance_matrix(L, k=k).numpy())
    with pytest.raises(AssertionError, match="transposed"):
        exercises.check_relative_distance_matrix(lambda L, k: relative_distance_matrix(L, k=k).T)
    with pytest.raises(AssertionError, match="integer"):
        exercises.check_relative_distance_matrix(lambda L, k: relative_distance_matrix(L, k=k).float())
    with pytest.raises(AssertionError, match="shape"):
        exercises.check_relative_distance_matrix(lambda L, k: relative_distance_matrix(L + 1, k=k))


def test_distinct_rows():
    assert exercises.check_distinct_rows(lambda L, k: min(2 * L - 1, 2 * k))
    with pytest.raises(AssertionError, match="L=1, k=1: expected 1, got 2"):
        exercises.check_distinct_rows(lambda L, k: 2 * k)


# --- lesson 2 -------------------------------------------------------------------------------------
def c2p(q_c, k_r, k, scale=3):
    L, d = q_c.shape
    return (q_c @ k_r.T).gather(1, relative_distance_matrix(L, k=k)) / math.sqrt(scale * d)


def p2c(k_c, q_r, k, swap=False, scale=3):
    L, d = k_c.shape
    out = torch.zeros(L, L)
    for i in range(L):
        for j in range(L):
            row = relative_distance(j, i, k) if swap else relative_distance(i, j, k)
            out[i, j] = k_c[j] @ q_r[row] / math.sqrt(scale * d)
    return out


def scores(q_c, k_c, q_r, k_r, k, drop=()):
    d = q_c.shape[1]
    terms = {"c2c": q_c @ k_c.T / math.sqrt(3 * d), "c2p": c2p(q_c, k_r, k), "p2c": p2c(k_c, q_r, k)}
    return sum(v for t, v in terms.items() if t not in drop)


def test_c2p():
    assert exercises.check_c2p(c2p).cases == 4
    with pytest.raises(AssertionError, match="√3 times too large"):
        exercises.check_c2p(lambda *a: c2p(*a, scale=1))
    with pytest.raises(AssertionError, match="transposed"):
        exercises.check_c2p(lambda *a: c2p(*a).T)
    assert not exercises.check_c2p(not_yet).attempted


def test_p2c_catches_the_papers_index_and_the_scale():
    assert exercises.check_p2c(p2c)
    with pytest.raises(AssertionError, match=r"δ\(j, i\), as eq. \(4\)"):
        exercises.check_p2c(lambda *a: p2c(*a, swap=True))
    with pytest.raises(AssertionError, match=r"divides by √\(3d\), not √d"):
        exercises.check_p2c(lambda *a: p2c(*a, scale=1))
    with pytest.raises(AssertionError, match="not scaled"):
        exercises.check_p2c(lambda *a: p2c(*a) * math.sqrt(3 * a[0].shape[1]))
    with pytest.raises(AssertionError, match="expected shape"):
        exercises.check_p2c(lambda *a: p2c(*a)[:-1])


def test_scores():
    assert exercises.check_scores(scores)
    names = {"c2c": "content-to-content", "c2p": "content-to-position", "p2c": "position-to-content"}
    for term, name in names.items():
        with pytest.raises(AssertionError, match=f"{name} term .* is missing"):
            exercises.check_scores(lambda *a, t=term: scores(*a, drop=(t,)))
    with pytest.raises(AssertionError, match="drops it"):
        exercises.check_scores(
            lambda q_c, k_c, q_r, k_r, k: (
                scores(q_c, k_c, q_r, k_r, k)
                + (
                    q_r[relative_distance_matrix(len(q_c), k=k)]
                    * k_r[relative_distance_matrix(len(q_c), k=k).T]
                ).sum(-1)
                / math.sqrt(3 * q_c.shape[1])
            )
        )


# --- lesson 3 -------------------------------------------------------------------------------------
def test_emd():
    assert exercises.check_emd(lambda model, out, mask: EnhancedMaskDecoder()(model, out, mask))
    assert not exercises.check_emd(not_yet).attempted
    for mistake, (kw, hint) in exercises.EMD_MISTAKES.items():
        with pytest.raises(AssertionError) as e:
            exercises.check_emd(
                lambda model, out, mask, kw=kw: exercises._emd_variant(model, out, mask, **kw)
            )
        assert mistake in str(e.value) and hint in str(e.value)


def test_shift_answers():
    truth = {"no_emd": True, "bert": False, "deberta_encoder": True, "deberta_decoder": False}
    measured = exercises.shift_invariance()
    assert {k: v < 1e-4 for k, v in measured.items()} == truth
    assert exercises.check_shift_answers(truth)
    assert not exercises.check_shift_answers(dict.fromkeys(truth)).attempted
    with pytest.raises(AssertionError, match="2 of 4 cases fail"):
        exercises.check_shift_answers(dict.fromkeys(truth, True))
    with pytest.raises(AssertionError, match="exactly the keys"):
        exercises.check_shift_answers({"bert": False})
