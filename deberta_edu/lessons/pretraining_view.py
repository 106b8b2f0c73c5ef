"""What lesson 4 shows of masked-language-model pretraining: rows as the model reads them, masks, and guesses.

Small text helpers for the notebook's tables, given the course tokenizer (``deberta_edu.data.tokenizer``):

    encode_row(tokenizer, text)               [CLS] pieces [SEP], as the packed training rows hold them
    what_happened(original, shown, label)     which case of the 80/10/10 rule one position fell in
    shown(tokenizer, ids)                     the pieces the model sees, as text
    partly_hidden(rows, labels, word_starts)  share of chosen pieces whose word still shows another piece
    hide(tokenizer, text, words)              a sentence with chosen words hidden: (input ids, labels)
    guesses(model, examples, id_to_piece)     ``viz.fill_mask`` over several sentences
    guess_table(predictions)                  the top guesses of one or more models, as printable text
    context(tokenizer, ids, t)                the words around a [MASK], to label a row of a figure
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from deberta_edu.facts import MASK_ID, SPECIAL_IDS
from deberta_edu.training.evaluate import IGNORE, encode_row, hide  # the course's records use them too

from .viz import FillMask, fill_mask

__all__ = ["IGNORE", "context", "encode_row", "guess_table", "guesses", "hide", "partly_hidden", "shown",
           "what_happened"]


def what_happened(original: int, shown: int, label: int, mask_id: int = MASK_ID) -> str:
    """The 80/10/10 case of one position: "" (not chosen), or chosen → [MASK] / random / unchanged."""
    if label == IGNORE:
        return ""
    if shown == mask_id:
        return "chosen → [MASK]"
    return "chosen → unchanged" if shown == original else "chosen → random"


def shown(tokenizer, ids: torch.Tensor) -> str:
    """The pieces the model sees, as text ("▁" becomes a space; [CLS] and [SEP] are left out)."""
    return "".join(
        tokenizer.id_to_piece(i).replace("▁", " ") if i != tokenizer.mask_id else " [MASK]"
        for i in ids.tolist()
        if i not in (tokenizer.cls_id, tokenizer.sep_id)
    ).strip()


def partly_hidden(
    rows: torch.Tensor,
    labels: torch.Tensor,
    word_starts: torch.Tensor,
    special_ids: Sequence[int] = SPECIAL_IDS,
) -> float:
    """Fraction of the chosen pieces whose word has other pieces that were not chosen.

    ``rows`` and ``labels`` are (N, L); ``word_starts`` (V,) is True for pieces that begin a word. A special
    token counts as a word of its own.
    """
    specials = torch.isin(rows, torch.tensor(special_ids))
    after_special = torch.zeros_like(specials)
    after_special[:, 1:] = specials[:, :-1]  # a piece after [CLS] starts a word even without "▁" (a row cut mid-word)
    words = (word_starts[rows] | specials | after_special).long().cumsum(-1)  # (N, L) word number within each row
    words = words + torch.arange(len(rows))[:, None] * (rows.size(1) + 1)  # unique across rows
    chosen = labels != IGNORE
    pieces_per_word = torch.bincount(words.flatten())
    chosen_per_word = torch.bincount(words.flatten(), weights=chosen.flatten().double())
    partly = chosen & (chosen_per_word[words] < pieces_per_word[words])
    return (partly.sum() / chosen.sum()).item()


def guesses(
    model,
    examples: Sequence[tuple[torch.Tensor, torch.Tensor]],
    id_to_piece: Callable[[int], str],
    k: int = 5,
) -> list[FillMask]:
    """``viz.fill_mask`` for every hidden token of every (input ids, labels) example, in order."""
    return [g for ids, labels in examples for g in fill_mask(model, ids, labels, id_to_piece, k=k)]


def guess_table(predictions: dict[str, list[FillMask]]) -> str:
    """For each [MASK]: the answer, then each model's top guesses, their probabilities, the answer's rank."""
    lines = []
    for n, per_model in enumerate(zip(*predictions.values(), strict=True)):
        lines.append(f"[MASK] {n + 1}: the answer is {per_model[0].answer}")
        for name, g in zip(predictions, per_model, strict=True):
            top = "  ".join(f"{p} {q:.2%}" for p, q in zip(g.pieces, g.probs, strict=True))
            lines.append(f"  {name:>6}: {top}    (answer: rank {g.answer_rank:,})")
    return "\n".join(lines)


def context(tokenizer, ids: torch.Tensor, t: int, width: int = 3) -> str:
    """The words around position t, with the [MASK] there: "…left ___ right…"."""
    left, right = shown(tokenizer, ids[max(1, t - width) : t]), shown(tokenizer, ids[t + 1 : t + 1 + width])
    return f"…{left} ___ {right}…"
