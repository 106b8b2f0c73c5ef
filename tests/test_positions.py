"""δ(i, j) of eq. (3) and the v2/v3 log buckets."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from deberta_edu import log_bucket, relative_distance, relative_distance_matrix
from deberta_edu.model.positions import relative_rows_and_index

ij = st.integers(min_value=0, max_value=600)
ks = st.integers(min_value=1, max_value=300)


@given(ij, ij, ks)
def test_delta_range(i, j, k):
    assert 0 <= relative_distance(i, j, k) < 2 * k


@given(ij, ij, ks)
def test_delta_clamps_beyond_k(i, j, k):
    if i - j <= -k:
        assert relative_distance(i, j, k) == 0
    if i - j >= k:
        assert relative_distance(i, j, k) == 2 * k - 1


@given(ij, ij, ks)
def test_delta_mirror_holds_exactly_inside_the_window(i, j, k):
    total = relative_distance(i, j, k) + relative_distance(j, i, k)
    assert total == (2 * k if abs(i - j) < k else 2 * k - 1)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8, 17])
def test_delta_end_rows_are_asymmetric(k):
    # row 0 is read by i − j <= −k, row 2k − 1 by i − j >= k − 1; the rest have one distance each
    readers = {}
    for d in range(-4 * k - 3, 4 * k + 4):
        readers.setdefault(relative_distance(d, 0, k), []).append(d)
    assert max(readers[0]) == -k and min(readers[2 * k - 1]) == k - 1
    assert all(len(readers[r]) == 1 for r in range(1, 2 * k - 1))


def test_delta_hand_table():
    # k = 2: rows 0..3; i − j = -2 -> 0, -1 -> 1, 0 -> 2, 1 -> 3, 2 -> 3
    expected = [
        [2, 1, 0, 0],
        [3, 2, 1, 0],
        [3, 3, 2, 1],
        [3, 3, 3, 2],
    ]
    got = [[relative_distance(i, j, 2) for j in range(4)] for i in range(4)]
    assert got == expected
    assert relative_distance_matrix(4, k=2).tolist() == expected


@given(st.integers(1, 40), st.integers(1, 40), ks)
def test_matrix_matches_scalar(lq, lk, k):
    m = relative_distance_matrix(lq, lk, k=k)
    assert m.shape == (lq, lk)
    assert all(m[i, j] == relative_distance(i, j, k) for i in range(lq) for j in range(lk))


def test_delta_rejects_bad_k():
    with pytest.raises(ValueError, match="k=0"):
        relative_distance(1, 2, 0)


@pytest.mark.parametrize("buckets,max_rel", [(256, 512), (64, 512), (32, 128)])
def test_log_bucket_properties(buckets, max_rel):
    d = torch.arange(-3 * max_rel, 3 * max_rel + 1)
    b = log_bucket(d, buckets, max_rel)
    near = d.abs() <= buckets // 2
    assert torch.equal(b[near], d[near]), "identity for |i - j| <= position_buckets / 2"
    assert bool((b[1:] >= b[:-1]).all()), "monotone"
    assert torch.equal(log_bucket(-d, buckets, max_rel), -b), "odd"
    assert int(b[d == max_rel - 1]) == buckets - 1, "reaches buckets - 1 at max_relative_positions - 1"


@pytest.mark.parametrize("buckets,max_rel", [(256, 512), (64, 512), (32, 128), (16, 64)])
def test_log_bucket_is_exact_near_logarithmic_far(buckets, max_rel):
    """The derivation of lesson 1 (float64) equals the released arithmetic (float32), and the row ends."""
    m = buckets // 2
    d = np.arange(-4 * max_rel, 4 * max_rel + 1)
    far = np.ceil(np.log(np.maximum(np.abs(d), 1) / m) / np.log((max_rel - 1) / m) * (m - 1))
    derived = np.where(np.abs(d) <= m, d, np.sign(d) * (m + far))
    assert np.array_equal(log_bucket(torch.tensor(d), buckets, max_rel).numpy(), derived)
    rows = np.clip(derived + buckets, 0, 2 * buckets - 1)
    assert d[rows == 0].max() == -max_rel
    assert d[rows == 2 * buckets - 1].min() == math.floor(m * ((max_rel - 1) / m) ** ((m - 2) / (m - 1))) + 1



@pytest.mark.parametrize("buckets,max_rel", [(256, 512), (32, 128)])
def test_log_bucket_against_microsofts_clamp(buckets, max_rel):
    """log_bucket's docstring: microsoft/DeBERTa (da_utils.make_log_bucket_position) first clamps i − j to
    ±(max_rel − 1); the buckets agree for every shorter distance, beyond it theirs stay at ±(buckets − 1)."""
    m = buckets // 2

    def microsoft(rel):  # a transcription of make_log_bucket_dict, after their clamp
        rel = torch.clamp(rel, -max_rel + 1, max_rel - 1)
        abs_pos = torch.where((rel < m) & (rel > -m), torch.tensor(m - 1), rel.abs())
        log_pos = torch.ceil(torch.log(abs_pos / m) / math.log((max_rel - 1) / m) * (m - 1)) + m
        return torch.where(abs_pos <= m, rel, (log_pos * torch.sign(rel)).long())

    d = torch.arange(-3 * max_rel, 3 * max_rel + 1)
    ours, theirs = log_bucket(d, buckets, max_rel), microsoft(d)
    inside = d.abs() <= max_rel - 1
    assert torch.equal(ours[inside], theirs[inside])
    assert bool((theirs[~inside].abs() == buckets - 1).all())
    assert bool((ours[~inside].abs() >= buckets).all()), "ours go on past buckets - 1 (the clamp to rows ends it)"

def test_log_bucket_rejects_tiny_max():
    with pytest.raises(ValueError, match="max_relative_positions"):
        log_bucket(torch.arange(5), 256, 100)


@pytest.mark.parametrize("length", [1, 7, 100, 300, 600])
@pytest.mark.parametrize("k,buckets", [(16, -1), (512, 256), (512, -1)])
def test_rows_and_index_select_the_same_rows(length, k, buckets):
    rows, index = relative_rows_and_index(length, k=k, position_buckets=buckets)
    full = relative_distance_matrix(length, k=k, position_buckets=buckets)
    assert torch.equal(rows[index], full)
