"""The fast disentangled attention equals the naive one written from the equations, term by term."""

import math

import pytest
import torch

from deberta_edu import DebertaConfig, naive_attention, relative_distance
from deberta_edu.model.attention import DisentangledSelfAttention as DSA
from deberta_edu.model.attention import banded_block, build_attention
from deberta_edu.model.encoder import Encoder
from deberta_edu.model.naive import naive_delta
from deberta_edu.model.positions import relative_rows_and_index

LAYOUTS = [
    dict(layout="v2", share_att_key=True),
    dict(layout="v2", share_att_key=False),
    dict(layout="v1", share_att_key=False),
]
TERM_SETS = [("c2c", "c2p", "p2c"), ("c2c", "c2p", "p2c", "p2p"), ("c2c", "p2c"), ("c2c", "c2p"), ("c2p", "p2p")]


def _setup(layout, terms, k=6, buckets=-1, L=13, seed=0):
    torch.manual_seed(seed)
    config = DebertaConfig(hidden_size=24, num_attention_heads=3, num_hidden_layers=1, intermediate_size=48,
                           max_relative_positions=k, position_buckets=buckets, terms=terms,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **layout)
    attn = build_attention(config).eval()
    for p in attn.parameters():  # biases too, so that every bias is exercised
        torch.nn.init.normal_(p, std=0.3)
    encoder = Encoder(config)
    torch.nn.init.normal_(encoder.rel_embeddings.weight, std=1.0)
    rel = encoder.relative_table(L, "cpu")
    table = encoder.rel_norm(encoder.rel_embeddings.weight) if encoder.rel_norm else encoder.rel_embeddings.weight
    hidden = torch.randn(2, L, 24)
    return config, attn, rel, table, hidden


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: f"{d['layout']}-share{d['share_att_key']}")
@pytest.mark.parametrize("terms", TERM_SETS, ids="+".join)
def test_naive_equals_fast_every_term(layout, terms):
    config, attn, rel, table, hidden = _setup(layout, terms)
    keep = torch.ones(2, hidden.size(1), dtype=torch.bool)  # (B, L) True at real tokens, in both versions
    keep[1, 9:] = False
    with torch.no_grad():
        fast_ctx, details = attn(hidden, keep, rel, return_details=True)
        sdpa_ctx = attn(hidden, keep, rel)  # the fused path (or the explicit one without c2c)
        for b in range(2):
            n_terms, n_probs, n_ctx = naive_attention(attn, hidden[b], table, naive_delta(config), keep=keep[b])
            for t in terms:
                torch.testing.assert_close(details.terms[t][b], n_terms[t], atol=1e-5, rtol=1e-5, msg=t)
            real = keep[b]  # padded queries may differ; real ones must not
            torch.testing.assert_close(details.probs[b][:, real], n_probs[:, real], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(fast_ctx[b][real], n_ctx[real], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(sdpa_ctx[b][real], n_ctx[real], atol=1e-5, rtol=1e-5)


def test_naive_equals_fast_with_log_buckets():
    config, attn, rel, table, hidden = _setup(LAYOUTS[0], ("c2c", "c2p", "p2c", "p2p"), k=40, buckets=8, L=50)
    keep = torch.ones(2, 50, dtype=torch.bool)  # nothing padded
    with torch.no_grad():
        _, details = attn(hidden, keep, rel, return_details=True)
        n_terms, _, _ = naive_attention(attn, hidden[0], table, naive_delta(config))
    for t in details.terms:
        torch.testing.assert_close(details.terms[t][0], n_terms[t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("L,k,buckets", [(16, 64, -1), (32, 128, 64), (48, 512, 256)])
def test_banded_path_equals_naive(L, k, buckets):
    """Short sequences (δ a shift): c2p and p2c through `banded`, in training (the bias needs a gradient)."""
    config, attn, rel, table, hidden = _setup(LAYOUTS[0], ("c2c", "c2p", "p2c"), k=k, buckets=buckets, L=L)
    assert rel.shifted and banded_block(L), "this test must exercise the banded path"
    attn.train()  # dropout 0: the fast path with a bias that needs a gradient
    keep = torch.ones(2, L, dtype=torch.bool)
    ctx = attn(hidden, keep, rel)
    with torch.no_grad():
        _, details = attn(hidden, keep, rel, return_details=True)
    for b in range(2):
        n_terms, _, n_ctx = naive_attention(attn, hidden[b], table, naive_delta(config))
        for t in ("c2p", "p2c"):
            torch.testing.assert_close(details.terms[t][b], n_terms[t], atol=1e-5, rtol=1e-5, msg=t)
        torch.testing.assert_close(ctx[b].detach(), n_ctx, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("L", [16, 24, 64])
@pytest.mark.parametrize("term", ["c2p", "p2c"])
def test_banded_values_and_gradients_equal_the_gather(L, term):
    torch.manual_seed(L)
    x = torch.randn(2, 3, L, 8, requires_grad=True)
    _, index = relative_rows_and_index(L, k=L)  # 2L − 1 rows: a shift
    table = torch.randn(3, 2 * L - 1, 8, requires_grad=True)
    fn = getattr(DSA, term)
    weight = torch.randn(2, 3, L, L)
    out = {}
    for shifted in (True, False):
        y = fn(x, table, index, shifted=shifted)
        out[shifted] = (y, *torch.autograd.grad((y * weight).sum(), (x, table)))
    for a, b in zip(out[True], out[False], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_only_short_sequences_are_marked_shifted():
    config = DebertaConfig(hidden_size=8, num_attention_heads=2, num_hidden_layers=1, intermediate_size=8,
                           max_relative_positions=32, position_buckets=16)
    encoder = Encoder(config)
    assert encoder.relative_table(16, "cpu").shifted  # 31 distances, fewer than the table's 32 rows
    assert not encoder.relative_table(17, "cpu").shifted  # 33 distances: the whole table, and δ itself
    rel = encoder.relative_table(8, "cpu")
    i, j = torch.arange(8)[:, None], torch.arange(8)[None, :]
    assert torch.equal(rel.index, 7 - i + j)  # what `banded` relies on


@pytest.mark.parametrize("terms,n_pos", [(("c2c",), 0), (("c2c", "c2p"), 1), (("c2c", "c2p", "p2c"), 2),
                                         (("c2c", "c2p", "p2c", "p2p"), 3)])
def test_scale_is_one_over_sqrt_d_times_one_plus_position_terms(terms, n_pos):
    config = DebertaConfig(hidden_size=64, num_attention_heads=4, terms=terms)
    assert build_attention(config).scale == pytest.approx(1 / math.sqrt(16 * (1 + n_pos)))


def test_p2c_uses_delta_i_j_not_the_papers_delta_j_i():
    """The released convention: p2c reads the same table row as c2p, δ(i, j)."""
    config, attn, rel, table, hidden = _setup(LAYOUTS[1], ("c2c", "p2c"))
    with torch.no_grad():
        _, details = attn(hidden, torch.ones(2, 13, dtype=torch.bool), rel, return_details=True)
        W = attn.projection_weights()
        Kc = (hidden[0] @ W["k"][0].T + W["k"][1]).view(13, 3, 8).transpose(0, 1)
        Qr = (table @ W["q_r"][0].T + W["q_r"][1]).view(-1, 3, 8).transpose(0, 1)
    i, j, k = 2, 7, config.max_relative_positions
    released = Kc[0, j] @ Qr[0, relative_distance(i, j, k)] * attn.scale
    paper = Kc[0, j] @ Qr[0, relative_distance(j, i, k)] * attn.scale
    assert torch.isclose(details.terms["p2c"][0, 0, i, j], released)
    assert not torch.isclose(details.terms["p2c"][0, 0, i, j], paper)


def test_p2p_depends_on_distance_only():
    config, attn, rel, table, hidden = _setup(LAYOUTS[0], ("c2c", "p2p"), k=20)
    with torch.no_grad():
        _, d1 = attn(hidden, torch.ones(2, 13, dtype=torch.bool), rel, return_details=True)
    p2p = d1.terms["p2p"]
    assert torch.equal(p2p[0], p2p[1]), "the same for every sequence (no content in it)"
    distance = torch.arange(13)[:, None] - torch.arange(13)[None, :]  # i - j
    for d in distance.unique().tolist():  # the same for every pair at equal distance, and different across
        block = p2p[0][:, distance == d]  # (H, pairs at distance d)
        assert torch.allclose(block, block[:, :1].expand_as(block)), d
    assert not torch.allclose(p2p[0, :, 3, 1], p2p[0, :, 3, 2])


@pytest.mark.parametrize("terms,n_pos", [(("c2p",), 1), (("c2p", "p2p"), 2), (("p2c", "c2p", "p2p"), 3)])
def test_scale_counts_the_position_terms_also_without_c2c(terms, n_pos):
    """1/sqrt(d (1 + n_pos)): the 1 is there whether or not c2c is among the terms (not 1/sqrt(d · #terms))."""
    config = DebertaConfig(hidden_size=64, num_attention_heads=4, terms=terms)
    assert build_attention(config).scale == pytest.approx(1 / math.sqrt(16 * (1 + n_pos)))


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: f"{d['layout']}-share{d['share_att_key']}")
def test_naive_equals_fast_with_queries_apart_from_keys(layout):
    """The EMD's call: Q^c from the query states; K^c, V^c (and p2c's keys) from the hidden states."""
    config, attn, rel, table, hidden = _setup(layout, ("c2c", "c2p", "p2c"))
    query = torch.randn_like(hidden)
    keep = torch.ones(2, hidden.size(1), dtype=torch.bool)
    keep[1, 9:] = False
    with torch.no_grad():
        fast_ctx, details = attn(hidden, keep, rel, query_states=query, return_details=True)
        sdpa_ctx = attn(hidden, keep, rel, query_states=query)
        for b in range(2):
            n_terms, _, n_ctx = naive_attention(attn, hidden[b], table, naive_delta(config), keep=keep[b],
                                                query=query[b])
            for t in config.terms:
                torch.testing.assert_close(details.terms[t][b], n_terms[t], atol=1e-5, rtol=1e-5, msg=t)
            torch.testing.assert_close(fast_ctx[b], n_ctx, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(sdpa_ctx[b], n_ctx, atol=1e-5, rtol=1e-5)


def test_a_row_with_no_key_left_stays_finite_with_details():
    """The slow path (return_details) fills masked scores with the lowest finite value, not −inf: a sequence
    of nothing but padding gets uniform probabilities, not NaN."""
    config, attn, rel, table, hidden = _setup(LAYOUTS[0], ("c2c", "c2p", "p2c"))
    keep = torch.ones(2, hidden.size(1), dtype=torch.bool)
    keep[1] = False
    with torch.no_grad():
        ctx, details = attn(hidden, keep, rel, return_details=True)
    assert torch.isfinite(ctx).all()
    torch.testing.assert_close(details.probs[1], torch.full_like(details.probs[1], 1 / hidden.size(1)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_naive_attention_runs_in_the_modules_precision(dtype):
    """Its terms were float32 CPU zeros: probs (float32) @ V (half) refused a half-precision module."""
    config = DebertaConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64, max_relative_positions=4,
                           position_buckets=-1, share_att_key=False, norm_rel_ebd=False, layout="v1")
    attn = build_attention(config).eval().to(dtype)
    g = torch.Generator().manual_seed(0)
    hidden, table = torch.randn(5, 32, generator=g), torch.randn(8, 32, generator=g)
    terms, probs, out = naive_attention(attn, hidden.to(dtype), table.to(dtype), naive_delta(config))
    assert out.dtype == probs.dtype == dtype and torch.isfinite(out).all()
