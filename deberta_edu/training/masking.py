"""Masked-language-model inputs: choose 15% of the tokens, then 80% [MASK], 10% random, 10% unchanged.

The model must predict every chosen token (labels hold the original id there, -100 elsewhere), but
it cannot tell which unchanged or randomly replaced tokens were chosen, so it has to keep a good
representation of every token, not just of [MASK].

Whole-word span masking (``word_starts`` given) chooses whole words, in runs of n <= ``max_ngram``
words with p(n) ∝ 1/n. The paper's appendix A.3 adds "span masking (Joshi et al., 2020) as an additional
masking strategy with the span size up to three" (SpanBERT) and gives neither a distribution nor a unit;
p(n) ∝ 1/n, counted in whole words, is the rule of the released ``NGramMaskGenerator``. Words are found from
SentencePiece's word-start marker "▁". Two ways to place the spans:

- ``spans="random"`` (ours, the default): span starts drawn in a random order over the whole row, until
  round(p x the row's ordinary tokens) are chosen. No place in the row is favoured.
- ``spans="official"``: microsoft/DeBERTa's ``NGramMaskGenerator`` (DeBERTa/apps/tasks/mlm_task.py), a
  transcription: the row is walked left to right in windows of 6n words (6 = int(1 / 0.15)), one n-gram
  at a uniform place in each, n drawn anew per window; then the marked words are taken from the left
  until round(p x the row's length, [CLS] and [SEP] included) tokens are chosen, at most
  ``max_predictions`` (80: ceil(512 x 0.15 / 10) x 10). What is marked past the budget is dropped, so
  the end of a row is masked less often: lesson 4 measures it. With ``max_ngram=1`` the official code
  does not group pieces into words, and neither does this option.

Two differences we keep in both. A continuation piece with no word before it (a row cut mid-word, or the
piece after a special token) starts a word; the official code glues it to the word before the special. And a
lone punctuation piece ("," after ``▁expected``) belongs to the word before it here; the official
``part_of_whole_word`` (DeBERTa/deberta/spm_tokenizer.py) makes a one-character punctuation, whitespace or
control piece a word of its own (lesson 4 says so too).
The choice loops are plain Python over small lists (a millisecond or two for a batch of 16 x 128); every
random number is drawn up front from ``generator``, so the masks are reproducible.
"""

from __future__ import annotations

import math

import torch

SPANS = ("random", "official")


def _check(input_ids, vocab_size, mask_token_id, mlm_probability, max_ngram, spans):
    if input_ids.dtype.is_floating_point:
        raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must lie in (0, 1), got {mlm_probability}")
    if not 0 <= mask_token_id < vocab_size:
        raise ValueError(f"mask_token_id={mask_token_id} is outside the vocabulary [0, {vocab_size - 1}]")
    if max_ngram < 1:
        raise ValueError(f"max_ngram must be >= 1 (1 = single words), got {max_ngram}")
    if spans not in SPANS:
        raise ValueError(f"spans must be one of {SPANS}, got {spans!r}")


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
    spans: str = "random",
    max_predictions: int = 80,
    pad_token_id: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (masked_ids, labels) for a batch of token ids (any shape).

    special_token_ids are never chosen ([PAD], [CLS], [SEP], ...). ``word_starts`` (a bool tensor of
    vocab_size entries, True where a piece starts a word) switches on whole-word span masking; ``spans``
    and ``max_predictions`` (the official generator's cap per row) are described in the module docstring.
    """
    _check(input_ids, vocab_size, mask_token_id, mlm_probability, max_ngram, spans)
    if max_predictions < 1:
        raise ValueError(f"max_predictions (the cap of masked tokens per row) must be >= 1, got {max_predictions}")
    if word_starts is not None and len(word_starts) < vocab_size:  # an id past its end has no answer
        raise ValueError(f"word_starts has {len(word_starts)} entries, one per id of the vocabulary ({vocab_size}) "
                         "is needed: take it from the tokenizer that made these ids (tokenizer.word_start_mask())")
    specials = torch.as_tensor(sorted(set(special_token_ids)), dtype=torch.long)
    candidates = ~torch.isin(input_ids, specials.to(input_ids.device))
    if word_starts is None:
        u = torch.rand(input_ids.shape, generator=generator)
        chosen = (u < mlm_probability).to(input_ids.device) & candidates
    else:
        rows = input_ids.reshape(-1, input_ids.size(-1)).cpu()
        chosen = choose_spans(rows, candidates.reshape(rows.shape).cpu(), word_starts, mlm_probability, max_ngram,
                              spans, max_predictions, (rows != pad_token_id).sum(-1), generator)
        chosen = chosen.reshape(input_ids.shape).to(input_ids.device)

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


def word_numbers(rows: torch.Tensor, candidates: torch.Tensor, word_starts: torch.Tensor) -> torch.Tensor:
    """(B, L) the number of the word each token belongs to within its row, -1 for special tokens.

    A word starts at a piece marked "▁", or at an ordinary piece that follows a special token (or opens
    the row); the continuation pieces after it belong to it.
    """
    starts = word_starts.cpu()[rows.clamp(0, len(word_starts) - 1)] & candidates  # (B, L)
    after_special = torch.ones_like(candidates)
    after_special[:, 1:] = ~candidates[:, :-1]
    new_word = candidates & (starts | after_special)
    number = new_word.long().cumsum(-1) - 1  # (B, L)
    return torch.where(candidates, number, torch.full_like(number, -1))


def choose_spans(rows, candidates, word_starts, p, max_ngram, spans="random", max_predictions=80, lengths=None,
                 generator=None) -> torch.Tensor:
    """(B, L) bool: the tokens chosen for prediction, whole words in spans of 1..max_ngram words."""
    if spans == "official" and max_ngram == 1:  # the official generator groups pieces only for n-grams
        word_starts = torch.ones_like(word_starts)
    word_of = word_numbers(rows, candidates, word_starts)  # (B, L)
    B, L = rows.shape
    n_words = (word_of.amax(-1) + 1).tolist()
    sizes = torch.zeros(B, L + 1, dtype=torch.long).scatter_add_(
        1, word_of.clamp(min=-1) + 1, torch.ones_like(word_of))[:, 1:]  # (B, L) tokens per word
    ns = ngram_sizes(torch.rand(B, L, generator=generator, dtype=torch.float64), max_ngram).tolist()  # n per slot
    u_2 = torch.rand(B, L, generator=generator)  # the order of span starts (ours) or the place (official)
    if spans == "random":
        order = torch.where(torch.arange(L) < torch.tensor(n_words)[:, None], u_2, 2.0).argsort(-1).tolist()
        budgets = [max(1, round(p * int(c))) for c in candidates.sum(-1).tolist()]
    else:
        lengths = candidates.sum(-1) + 2 if lengths is None else lengths  # + [CLS] and [SEP]
        budgets = [min(max_predictions, max(1, round(n * p))) for n in lengths.tolist()]
    u_2 = u_2.tolist()
    taken = torch.zeros(B, L + 1, dtype=torch.bool)
    for b in range(B):
        if spans == "random":
            words = _random_spans(order[b], ns[b], sizes[b].tolist(), n_words[b], budgets[b])
        else:
            words = _official_spans(ns[b], u_2[b], sizes[b].tolist(), n_words[b], budgets[b], int(1 / p))
        taken[b, [w + 1 for w in words]] = True
    return taken.gather(1, word_of + 1)  # (B, L); index 0 (specials) is never taken


def ngram_sizes(u: torch.Tensor, max_ngram: int) -> torch.Tensor:
    """n in 1..max_ngram with p(n) ∝ 1/n, from uniforms u in [0, 1) (the official ``_choice``: bisect u x Σ)."""
    cumulative = (1.0 / torch.arange(1, max_ngram + 1, dtype=torch.float64)).cumsum(0)
    return (torch.searchsorted(cumulative, u.double() * cumulative[-1], right=True) + 1).clamp(max=max_ngram)


def _random_spans(order, ns, sizes, n_words, budget) -> list[int]:
    """Ours: span starts in random order; a span of n words, skipping words already taken, until the budget."""
    taken, count, out = [False] * n_words, 0, []
    for w in order[:n_words]:
        if count >= budget:
            break
        for x in range(w, min(w + ns[w], n_words)):
            if taken[x]:
                continue
            if count + sizes[x] > budget and count > 0:
                break
            taken[x] = True
            out.append(x)
            count += sizes[x]
    return out


def _official_spans(ns, places, sizes, n_words, budget, window) -> list[int]:
    """NGramMaskGenerator: one n-gram per window of window x n words, left to right; keep from the left."""
    marked, offset, i = [False] * n_words, 0, 0
    while offset < n_words:
        n = ns[i]
        ctx = min(n * window, n_words - offset)
        m = math.floor(places[i] * ctx)  # rng.randint(0, ctx - 1): uniform over the window
        start, end = offset + m, min(offset + m + n, n_words)
        offset = max(offset + ctx, end)
        marked[start:end] = [True] * (end - start)
        i += 1
    out, count = [], 0
    for x in range(n_words):
        if marked[x]:
            out.append(x)
            count += sizes[x]
            if count >= budget:
                break
    return out
