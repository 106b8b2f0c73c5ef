"""MLM masking: 15% chosen, of those 80% [MASK], 10% random, 10% unchanged; specials never chosen.

Whole-word span masking, ours and the official NGramMaskGenerator (checked against a transcription of
microsoft/DeBERTa's DeBERTa/apps/tasks/mlm_task.py, written for this test from reading it).
"""

import math
import time
from bisect import bisect

import numpy as np
import pytest
import torch

from deberta_edu import mask_tokens
from deberta_edu.training.masking import _official_spans, ngram_sizes, word_numbers

V, MASK, SPECIALS = 1000, 4, [0, 1, 2, 3, 4]


def _batch(n_rows=1000, length=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (n_rows, length), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2  # [CLS] ... [SEP]
    ids[::7, -50:] = 0  # some padding
    return ids


def test_rates_over_a_million_tokens():
    ids = _batch()
    masked, labels = mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIALS,
                                 generator=torch.Generator().manual_seed(1))
    candidates = ~torch.isin(ids, torch.tensor(SPECIALS))
    chosen = labels != -100
    n = int(chosen.sum())
    rate = n / int(candidates.sum())
    as_mask = int((masked[chosen] == MASK).sum()) / n
    unchanged = int((masked[chosen] == ids[chosen]).sum()) / n
    replaced = 1 - as_mask - unchanged
    print(f"chosen {rate:.4f}, [MASK] {as_mask:.4f}, random {replaced:.4f}, unchanged {unchanged:.4f}")
    assert abs(rate - 0.15) < 0.01
    assert abs(as_mask - 0.80) < 0.01
    # a random replacement can draw the original token (1 in ~995), which then counts as unchanged
    assert abs(replaced - 0.10) < 0.01
    assert abs(unchanged - 0.10) < 0.01
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen]), "tokens not chosen are never changed"


def test_specials_never_chosen_or_produced():
    ids = _batch(200, 500)
    masked, labels = mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIALS,
                                 mlm_probability=0.5, generator=torch.Generator().manual_seed(2))
    special = torch.isin(ids, torch.tensor(SPECIALS))
    assert bool((labels[special] == -100).all())
    assert torch.equal(masked[special], ids[special])
    randomised = (labels != -100) & (masked != MASK) & (masked != ids)
    assert not bool(torch.isin(masked[randomised], torch.tensor(SPECIALS)).any())


def test_reproducible_with_seeded_generator():
    ids = _batch(20, 100)
    kw = dict(vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIALS)
    a = mask_tokens(ids, **kw, generator=torch.Generator().manual_seed(3))
    b = mask_tokens(ids, **kw, generator=torch.Generator().manual_seed(3))
    c = mask_tokens(ids, **kw, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


# word starts: even ids; a word is a start token followed by odd (continuation) tokens
WORD_STARTS = torch.arange(V) % 2 == 0
WORD_STARTS[:5] = False


def _word_rows(n_rows, length, seed):
    ids = torch.randint(5, V, (n_rows, length), generator=torch.Generator().manual_seed(seed))
    ids[:, 0], ids[:, -1] = 1, 2
    return ids


@pytest.mark.parametrize("spans", ["random", "official"])
def test_whole_word_ngram_masking(spans):
    ids = _word_rows(200, 256, 5)
    g = torch.Generator().manual_seed(5)
    masked, labels = mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIALS,
                                 generator=g, word_starts=WORD_STARTS, spans=spans)
    chosen = labels != -100
    rate = int(chosen.sum()) / int((~torch.isin(ids, torch.tensor(SPECIALS))).sum())
    assert abs(rate - 0.15) < 0.02, rate
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    # whole words: a word is chosen all or nothing
    words = word_numbers(ids, ~torch.isin(ids, torch.tensor(SPECIALS)), WORD_STARTS)
    for row_words, row_chosen in zip(words, chosen, strict=True):
        for w in row_words.unique().tolist():
            if w >= 0:
                assert row_chosen[row_words == w].unique().numel() == 1, f"word {w} was split"


def test_word_numbers():
    #          [CLS]  ▁a   b   ▁c  [SEP]  d   ▁e       (d: a continuation after a special starts a word)
    ids = torch.tensor([[1, 10, 11, 12, 2, 13, 14]])
    words = word_numbers(ids, ~torch.isin(ids, torch.tensor(SPECIALS)), WORD_STARTS)
    assert words.tolist() == [[-1, 0, 0, 1, -1, 2, 3]]


def test_a_row_that_opens_mid_word_starts_a_word_at_its_first_piece():
    #                    b   ▁a   c   (no [CLS]: a row cut mid-word; b is a word of its own)
    ids = torch.tensor([[11, 10, 13]])
    words = word_numbers(ids, ~torch.isin(ids, torch.tensor(SPECIALS)), WORD_STARTS)
    assert words.tolist() == [[0, 1, 1]]


def test_our_spans_never_exceed_a_rows_budget_of_its_ordinary_tokens():
    """spans="random" chooses whole words until round(0.15 x the row's ordinary tokens): padding, [CLS] and
    [SEP] do not count, and no word is added past the budget (words here are one to several pieces), unless
    the first word chosen is itself longer than the budget."""
    g = torch.Generator().manual_seed(7)
    ids = _word_rows(300, 64, 7)
    ends = torch.randint(10, 63, (300,), generator=g)  # where [SEP] goes; [PAD] after it
    for row, end in zip(ids, ends.tolist(), strict=True):
        row[end], row[end + 1:] = 2, 0
    _, labels = mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIALS,
                            word_starts=WORD_STARTS, generator=g)
    chosen = labels != -100
    words = word_numbers(ids, ~torch.isin(ids, torch.tensor(SPECIALS)), WORD_STARTS)
    budgets = [max(1, round(0.15 * (end - 1))) for end in ends.tolist()]  # end - 1 ordinary tokens
    met = 0
    for row_words, row_chosen, budget in zip(words, chosen, budgets, strict=True):
        count = int(row_chosen.sum())
        # past the budget only by a first word longer than the budget itself
        assert count <= budget or row_words[row_chosen].unique().numel() == 1, (count, budget)
        met += count == budget
    assert met > 0.7 * len(budgets)  # most rows meet it exactly


def test_official_budget_counts_the_row_with_cls_sep_unk_but_not_padding():
    """The official num_to_predict is round(0.15 x len(tokens)), tokens being the row before padding. Here every
    row is [CLS], 7 one-piece words, [UNK], [SEP] and 10 [PAD]: round(0.15 x 10) = 2 (not round(0.15 x 7) = 1,
    nor round(0.15 x 20) = 3). The n-gram windows mark 1 to 3 words; from the left, at most 2 are taken."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, V // 2, (300, 20), generator=g) * 2  # even ids >= 6: every piece starts a word
    ids[:, 0], ids[:, 8], ids[:, 9], ids[:, 10:] = 1, 3, 2, 0
    _, labels = mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIALS, spans="official",
                            word_starts=WORD_STARTS, generator=g)
    count = (labels != -100).sum(-1)
    assert int(count.max()) == 2 and (count == 2).float().mean() > 0.8, torch.bincount(count)


def test_official_unigrams_mask_pieces_not_whole_words():
    """With max_ngram=1 the official generator does not group pieces into words: a word may be split."""
    ids = _word_rows(100, 128, 13)
    _, labels = mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIALS, spans="official",
                            max_ngram=1, word_starts=WORD_STARTS, generator=torch.Generator().manual_seed(13))
    chosen = labels != -100
    words = word_numbers(ids, ~torch.isin(ids, torch.tensor(SPECIALS)), WORD_STARTS)
    split = sum(row_chosen[row_words == w].unique().numel() == 2
                for row_words, row_chosen in zip(words, chosen, strict=True)
                for w in row_words.unique().tolist() if w >= 0)
    assert split > 0, "no word was split: pieces were grouped into words"
    assert bool((chosen.sum(-1) == round(128 * 0.15)).all())  # one piece per marked word: the budget exactly


def test_ngram_sizes_follow_one_over_n():
    n = ngram_sizes(torch.rand(200_000, generator=torch.Generator().manual_seed(0)), 3)
    freq = torch.bincount(n, minlength=4)[1:].double() / len(n)
    expected = torch.tensor([6 / 11, 3 / 11, 2 / 11], dtype=torch.double)  # 1, 1/2, 1/3 normalised
    torch.testing.assert_close(freq, expected, atol=0.005, rtol=0)


class _ScriptedRng:
    """Stands in for the official code's random.Random: random() and randint(a, b) read scripted uniforms."""

    def __init__(self, u_n, u_place):
        self.u_n, self.u_place = iter(u_n), iter(u_place)

    def random(self):
        return next(self.u_n)

    def randint(self, a, b):  # inclusive, as Python's
        return a + math.floor(next(self.u_place) * (b - a + 1))


def _official_transcription(tokens, rng, max_gram=3, mask_lm_prob=0.15, max_seq_len=512):
    """Which positions NGramMaskGenerator.mask_tokens predicts (its choice only; the 80/10/10 is ours)."""
    max_preds = math.ceil(max_seq_len * mask_lm_prob / 10) * 10
    window = int(1 / mask_lm_prob)
    specials = ["[MASK]", "[CLS]", "[SEP]", "[PAD]", "[UNK]"]
    indices = [i for i in range(len(tokens)) if tokens[i] not in specials]
    ngrams = np.arange(1, max_gram + 1)
    pvals = 1.0 / np.arange(1, max_gram + 1)
    pvals /= pvals.sum()
    unigrams = []
    for i in indices:
        if max_gram > 1 and unigrams and not tokens[i].startswith("▁"):
            unigrams[-1].append(i)
        else:
            unigrams.append([i])
    num_to_predict = min(max_preds, max(1, int(round(len(tokens) * mask_lm_prob))))
    offset, marked = 0, [False] * len(unigrams)
    while offset < len(unigrams):
        cul = np.cumsum(pvals)
        n = ngrams[bisect(cul, rng.random() * cul[-1])]
        ctx = min(n * window, len(unigrams) - offset)
        m = rng.randint(0, ctx - 1)
        s, e = offset + m, min(offset + m + n, len(unigrams))
        offset = max(offset + ctx, e)
        marked[s:e] = [True] * (e - s)
    chosen, count = [], 0
    for is_marked, word in zip(marked, unigrams, strict=True):
        if is_marked:
            chosen += word
            count += len(word)
            if count >= num_to_predict:
                break
    return chosen


@pytest.mark.parametrize("length", [40, 128, 700])
def test_official_spans_match_the_transcription(length):
    g = torch.Generator().manual_seed(length)
    for row in _word_rows(30, length, length):
        tokens = ["[CLS]"] + [("▁" if WORD_STARTS[i] else "") + str(int(i)) for i in row[1:-1]] + ["[SEP]"]
        u_n, u_place = torch.rand(length, generator=g).tolist(), torch.rand(length, generator=g).tolist()
        expected = _official_transcription(tokens, _ScriptedRng(u_n, u_place))
        words = word_numbers(row[None], ~torch.isin(row[None], torch.tensor(SPECIALS)), WORD_STARTS)[0]
        sizes = torch.bincount(words[words >= 0]).tolist()
        budget = min(80, max(1, round(length * 0.15)))
        ns = ngram_sizes(torch.tensor(u_n), 3).tolist()
        chosen_words = _official_spans(ns, u_place, sizes, len(sizes), budget, 6)
        got = torch.isin(words, torch.tensor(chosen_words, dtype=torch.long)).nonzero().flatten().tolist()
        assert got == expected


def test_official_budget_is_capped_at_80():
    ids = _word_rows(50, 1000, 9)
    _, labels = mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIALS, spans="official",
                            generator=torch.Generator().manual_seed(1), word_starts=WORD_STARTS)
    per_row = (labels != -100).sum(-1)
    words = word_numbers(ids, ~torch.isin(ids, torch.tensor(SPECIALS)), WORD_STARTS)
    longest = torch.stack([torch.bincount(w[w >= 0]).max() for w in words])
    # whole words until the budget is reached: the last one may overshoot it by its other pieces
    assert bool((per_row >= 80).all()) and bool((per_row < 80 + longest).all()), per_row.tolist()


def _rate_by_tenth(labels, ids):
    candidates = ~torch.isin(ids, torch.tensor(SPECIALS))
    rate = (labels != -100).double().sum(0) / candidates.double().sum(0).clamp(min=1)  # (L,) per position
    inner = rate[1:-1]
    return torch.stack([part.mean() for part in inner.chunk(10)])


def test_position_bias_official_against_ours():
    """The official generator drops what it marks past the budget: the end of a row is masked less."""
    ids = _word_rows(400, 512, 11)
    kw = dict(vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIALS, word_starts=WORD_STARTS)
    ours = _rate_by_tenth(mask_tokens(ids, generator=torch.Generator().manual_seed(2), **kw)[1], ids)
    official = _rate_by_tenth(mask_tokens(ids, spans="official", generator=torch.Generator().manual_seed(2),
                                          **kw)[1], ids)
    print("ours    ", [round(x, 3) for x in ours.tolist()])
    print("official", [round(x, 3) for x in official.tolist()])
    assert (ours - 0.15).abs().max() < 0.015, "ours should mask every part of the row alike"
    assert official[-1] < 0.5 * official[:5].mean(), "the official generator's last tenth should be masked less"


def test_span_masking_is_fast():
    """A lesson 4 batch (16 x 128) must cost a few ms, not a noticeable part of a training step."""
    ids = _word_rows(16, 128, 3)
    kw = dict(vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIALS, word_starts=WORD_STARTS)
    mask_tokens(ids, **kw)
    start = time.perf_counter()
    for _ in range(10):
        mask_tokens(ids, **kw)
    per_batch = (time.perf_counter() - start) / 10
    assert per_batch < 0.05, f"span masking took {per_batch * 1000:.1f} ms per 16 x 128 batch (limit 50 ms)"


@pytest.mark.parametrize("kw,match", [
    (dict(mlm_probability=0.0), "mlm_probability"),
    (dict(mask_token_id=V), "mask_token_id"),
    (dict(word_starts=WORD_STARTS, max_ngram=0), "max_ngram"),
    (dict(word_starts=WORD_STARTS, spans="spanbert"), "spans"),
])
def test_bad_arguments(kw, match):
    args = dict(vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIALS) | kw
    with pytest.raises(ValueError, match=match):
        mask_tokens(_batch(2, 10), **args)


def test_random_replacements_draw_every_ordinary_id():
    """The 10% random replacements draw from every ordinary token, the last id included: an off-by-one in the
    draw would silently never produce some token as noise."""
    small_v = 20  # ids 5-19 are ordinary: 15 of them
    ids = torch.randint(5, small_v, (100, 200), generator=torch.Generator().manual_seed(0))
    masked, labels = mask_tokens(ids, vocab_size=small_v, mask_token_id=MASK, special_token_ids=SPECIALS,
                                 mlm_probability=0.5, generator=torch.Generator().manual_seed(3))
    replaced = (labels != -100) & (masked != MASK) & (masked != ids)  # ~930 replacements, ~60 per id
    assert sorted(set(masked[replaced].tolist())) == list(range(5, small_v))
