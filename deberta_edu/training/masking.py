"""Masked-language-model inputs: choose 15% of the tokens, then 80% [MASK], 10% random, 10% unchanged.

The model must predict every chosen token (labels hold the original id there, -100 elsewhere), but
it cannot tell which unchanged or randomly replaced tokens were chosen, so it has to keep a good
representation of every token, not just of [MASK].

Whole-word n-gram masking (optional) chooses whole words, in runs of n <= 3 words with p(n) ∝ 1/n,
as DeBERTa's data preparation does; words are found from SentencePiece's word-start marker "▁".
"""

from __future__ import annotations

import torch


def _check(input_ids, vocab_size, mask_token_id, mlm_probability):
    if input_ids.dtype.is_floating_point:
        raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must lie in (0, 1), got {mlm_probability}")
    if not 0 <= mask_token_id < vocab_size:
        raise ValueError(f"mask_token_id={mask_token_id} is outside the vocabulary [0, {vocab_size - 1}]")


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    vocab_size: int,
    mask_token_id: int,
    special_token_ids,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    word_starts: torch.Tensor | None = None,
    max_ngram: int = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (masked_ids, labels) for a batch of token ids (any shape).

    special_token_ids are never chosen ([PAD], [CLS], [SEP], ...). ``word_starts`` (a bool tensor of
    vocab_size entries, True where a piece starts a word) switches on whole-word n-gram masking.
    """
    _check(input_ids, vocab_size, mask_token_id, mlm_probability)
    specials = torch.as_tensor(sorted(set(special_token_ids)), dtype=torch.long)
    candidates = ~torch.isin(input_ids, specials.to(input_ids.device))
    if word_starts is None:
        u = torch.rand(input_ids.shape, generator=generator)
        chosen = (u < mlm_probability).to(input_ids.device) & candidates
    else:
        rows = input_ids.reshape(-1, input_ids.size(-1)).cpu()
        row_candidates = candidates.reshape(-1, input_ids.size(-1)).cpu()
        chosen = torch.stack(
            [_whole_word_choice(row, c, word_starts, mlm_probability, max_ngram, generator)
             for row, c in zip(rows, row_candidates, strict=True)]
        ).reshape(input_ids.shape).to(input_ids.device)

    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    r = torch.rand(input_ids.shape, generator=generator).to(input_ids.device)
    to_mask = chosen & (r < 0.8)
    to_random = chosen & (r >= 0.8) & (r < 0.9)  # the remaining 10% stay unchanged
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[specials[specials < vocab_size]] = False  # random replacements are ordinary tokens
    pool = allowed.nonzero().squeeze(1)
    random_ids = pool[torch.randint(len(pool), input_ids.shape, generator=generator)].to(input_ids.device)
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(to_random, random_ids.to(input_ids.dtype), masked)
    return masked, labels


def _whole_word_choice(ids, candidates, word_starts, p, max_ngram, generator):
    """Choose runs of 1..max_ngram whole words, p(n) ∝ 1/n, until ~p of the candidate tokens are chosen."""
    if max_ngram < 1:
        raise ValueError(f"max_ngram must be >= 1, got {max_ngram}")
    starts = word_starts.cpu()[ids.clamp(0, len(word_starts) - 1)] & candidates
    # A word = a start token and the continuation tokens after it (a special token ends it).
    word_of = torch.cumsum(starts.long(), 0) - 1  # (L,) word number of each token, -1 before the first
    word_of[~candidates | (word_of < 0)] = -1
    n_words = int(starts.sum())
    chosen = torch.zeros_like(candidates)
    if n_words == 0:
        return chosen
    budget = max(1, round(p * int(candidates.sum())))
    n_probs = torch.tensor([1.0 / n for n in range(1, max_ngram + 1)])
    taken_words = torch.zeros(n_words, dtype=torch.bool)
    count = 0
    for w in torch.randperm(n_words, generator=generator).tolist():
        if count >= budget:
            break
        n = int(torch.multinomial(n_probs, 1, generator=generator)) + 1
        span = [x for x in range(w, min(w + n, n_words)) if not taken_words[x]]
        for x in span:
            tokens = word_of == x
            if count + int(tokens.sum()) > budget and count > 0:
                break
            taken_words[x] = True
            chosen |= tokens
            count += int(tokens.sum())
    return chosen
