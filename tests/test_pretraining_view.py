"""lessons.pretraining_view: lesson 4's text helpers, on a word-level stand-in for the course tokenizer."""

import pytest
import torch

from deberta_edu import DebertaForMaskedLM, make_config, viz
from deberta_edu.facts import CLS_ID, MASK_ID, SEP_ID, SPECIAL_IDS, SPECIAL_PIECES
from deberta_edu.lessons.pretraining_view import (
    context,
    encode_row,
    guess_table,
    guesses,
    hide,
    partly_hidden,
    shown,
    what_happened,
)


class Words:
    """A tokenizer with the course tokenizer's interface: one piece "▁word" per word, plus "ed"."""

    pad_id, cls_id, sep_id, unk_id, mask_id = range(5)
    special_ids = SPECIAL_IDS

    def __init__(self):
        self.pieces = [*SPECIAL_PIECES, "▁the", "▁new", "▁store", "▁open", "ed", "▁mall"]

    def encode(self, text):
        out = []
        for word in text.split():
            if word.endswith("ed") and "▁" + word not in self.pieces:
                out += [self.pieces.index("▁" + word[:-2]), self.pieces.index("ed")]
            else:
                out.append(self.pieces.index("▁" + word))
        return out

    def id_to_piece(self, i):
        return self.pieces[i]


TOK = Words()


def test_rows_and_what_the_model_sees():
    row = encode_row(TOK, "the new store opened")
    assert row.tolist() == [CLS_ID, 5, 6, 7, 8, 9, SEP_ID]
    assert shown(TOK, row) == "the new store opened"
    ids, labels = hide(TOK, "the new store opened", ["store"])
    assert shown(TOK, ids) == "the new [MASK] opened"
    assert labels.tolist() == [-100, -100, -100, 7, -100, -100, -100]
    assert context(TOK, ids, 3, width=2) == "…the new ___ opened…"
    with pytest.raises(ValueError, match="not a single piece"):
        hide(TOK, "the new store opened", ["opened"])  # two pieces: ▁open + ed


def test_the_80_10_10_cases():
    assert what_happened(7, 7, -100) == ""
    assert what_happened(7, MASK_ID, 7) == "chosen → [MASK]"
    assert what_happened(7, 7, 7) == "chosen → unchanged"
    assert what_happened(7, 9, 7) == "chosen → random"


def test_partly_hidden_counts_chosen_pieces_whose_word_shows_another():
    word_starts = torch.tensor([p.startswith("▁") for p in TOK.pieces])
    row = encode_row(TOK, "the store opened")[None]  # [CLS] ▁the ▁store ▁open ed [SEP]
    only_ed = torch.full_like(row, -100)
    only_ed[0, 4] = row[0, 4]
    both = only_ed.clone()
    both[0, 3] = row[0, 3]
    assert partly_hidden(row, only_ed, word_starts) == 1.0  # "ed" hidden, "▁open" visible
    assert partly_hidden(row, both, word_starts) == 0.0  # the whole word hidden
    # a batch: word numbers must not run into the next row's (row 1 shows "▁open ed", row 0 hides all of it)
    assert partly_hidden(torch.cat([row, row]), torch.cat([both, torch.full_like(row, -100)]), word_starts) == 0.0
    # a row cut mid-word starts with a lone "ed": after [CLS] it is a word of its own, wholly hidden
    cut = torch.tensor([[row[0, 0], row[0, 4], row[0, 1], row[0, 2], row[0, -1]]])  # [CLS] ed ▁the ▁store [SEP]
    lone = torch.full_like(cut, -100)
    lone[0, 1] = cut[0, 1]
    assert partly_hidden(cut, lone, word_starts) == 0.0


def test_guesses_and_their_table():
    torch.manual_seed(0)
    model = DebertaForMaskedLM(make_config("tiny", vocab_size=len(TOK.pieces))).eval()
    examples = [hide(TOK, "the new store", ["new", "store"]), hide(TOK, "the mall", ["mall"])]
    found = guesses(model, examples, TOK.id_to_piece, k=3)
    assert [g.answer for g in found] == ["▁new", "▁store", "▁mall"] and all(len(g.pieces) == 3 for g in found)
    assert found[2] == viz.fill_mask(model, *examples[1], TOK.id_to_piece, k=3)[0]
    table = guess_table({"before": found, "after": found}).splitlines()
    assert len(table) == 3 * 3 and table[0] == "[MASK] 1: the answer is ▁new"
    assert table[1].startswith("  before: ") and table[2].startswith("   after: ")
    assert "(answer: rank" in table[1]


def test_mask_rates_figure():
    rates = {"chosen": 0.15, "[MASK]": 0.79, "random": 0.11, "unchanged": 0.1}
    fig = viz.plot_mask_rates(rates, {"chosen": 0.15, "[MASK]": 0.8, "random": 0.1, "unchanged": 0.1}, "t")
    ax = fig.axes[0]
    assert [round(b.get_height(), 2) for b in ax.patches] == list(rates.values()) and ax.get_title() == "t"


def test_answer_ranks_are_the_ranks_the_pages_fill_mask_shows():
    """training.evaluate.answer_ranks (what recipe --clock keeps of each full-size run) ranks each hidden word as
    lesson 4's guesses do, with every word of a sentence hidden at once, and leaves the model as it found it."""
    from deberta_edu.training.evaluate import answer_ranks

    torch.manual_seed(0)
    model = DebertaForMaskedLM(make_config("tiny", vocab_size=len(TOK.pieces), initializer_range=0.5)).train()
    blanks = {"the new store opened": ("the", "store"), "the new mall": ("mall",)}
    ranks = answer_ranks(model, TOK, blanks)
    assert model.training  # put back in training mode
    model.eval()
    shown_ranks = {g.answer.lstrip("▁"): g.answer_rank
                   for g in guesses(model, [hide(TOK, s, w) for s, w in blanks.items()], TOK.id_to_piece)}
    assert ranks == shown_ranks and set(ranks) == {"the", "store", "mall"}
    assert len(set(ranks.values())) > 1  # ranks that differ: a swapped word or position would show
