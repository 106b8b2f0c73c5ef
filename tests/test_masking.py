"""MLM masking: 15% chosen, of those 80% [MASK], 10% random, 10% unchanged; specials never chosen."""

import pytest
import torch

from deberta_edu import mask_tokens

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


def test_whole_word_ngram_masking():
    # word starts: even ids; a word is a start token followed by odd (continuation) tokens
    word_starts = torch.arange(V) % 2 == 0
    word_starts[:5] = False
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(5, V, (200, 256), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2
    masked, labels = mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIALS,
                                 generator=g, word_starts=word_starts)
    chosen = labels != -100
    rate = int(chosen.sum()) / int((~torch.isin(ids, torch.tensor(SPECIALS))).sum())
    assert abs(rate - 0.15) < 0.02
    # whole words: a chosen continuation token always has its word's start chosen too
    for row_ids, row_chosen in zip(ids, chosen, strict=True):
        for t in range(1, len(row_ids)):
            if row_chosen[t] and not word_starts[row_ids[t]] and row_ids[t - 1] not in SPECIALS:
                assert row_chosen[t - 1], "a word was split"


@pytest.mark.parametrize("kw,match", [
    (dict(mlm_probability=0.0), "mlm_probability"),
    (dict(mask_token_id=V), "mask_token_id"),
])
def test_bad_arguments(kw, match):
    args = dict(vocab_size=V, mask_token_id=MASK, special_token_ids=SPECIALS) | kw
    with pytest.raises(ValueError, match=match):
        mask_tokens(_batch(2, 10), **args)
