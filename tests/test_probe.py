"""training.probe: lesson 3's position probe builds the windows it says, and each half of its story holds."""

import pytest
import torch

from deberta_edu.facts import CLS_ID, PAD_ID, SEP_ID
from deberta_edu.model.positions import relative_distance
from deberta_edu.training.probe import (
    VARIANTS,
    K,
    PositionProbe,
    ProbeTable,
    ProbeTask,
    anchor_tasks,
    format_table,
    held_out,
    majority_rate,
    placement_difference,
    probe_batch,
    probe_config,
    probe_table,
    relative_views,
    train_probe,
)

TASKS = anchor_tasks(the=5, new=6, nouns=(7, 8, 9))
WITHIN, BEYOND = TASKS["anchor within the window"], TASKS["anchor beyond the window"]
VOCAB = 10


@pytest.mark.parametrize("task", [WITHIN, BEYOND], ids=["within", "beyond"])
def test_windows_hold_the_anchor_and_the_phrase_once_in_the_slot_of_their_label(task):
    ids, mask, pos, label = probe_batch(task, 300, torch.Generator().manual_seed(0))
    rows = torch.arange(300)
    assert ids.shape == mask.shape == (300, task.window) == (300, 2 * K)
    assert (ids[:, 0] == CLS_ID).all()
    assert (ids[rows, pos - 2] == task.the).all() and (ids[rows, pos - 1] == task.new).all()
    assert torch.isin(ids[rows, pos], torch.tensor(task.nouns)).all()
    assert (mask.sum(-1) == 4).all() and (
        (ids == PAD_ID) == (mask == 0)
    ).all()  # only anchor + phrase are seen
    subject, object_ = task.slots()
    assert torch.equal(label, (pos >= object_.start).long()) and subject.stop == object_.start
    assert set(pos.tolist()) == {*subject, *object_}  # every position of both slots is drawn
    assert 0.5 <= majority_rate(label) < 0.6 and majority_rate(torch.tensor([1, 1, 1, 0])) == 0.75


def test_the_two_settings_are_inside_and_beyond_the_clamp_of_eq3():
    """Within: every noun position has its own row for [CLS]; beyond: every phrase token is clamped."""
    within_rows = {relative_distance(p, 0, K) for p in (*WITHIN.slots()[0], *WITHIN.slots()[1])}
    assert len(within_rows) == len(WITHIN.slots()[0]) + len(WITHIN.slots()[1])
    for p in (*BEYOND.slots()[0], *BEYOND.slots()[1]):
        for token in (p - 2, p - 1, p):  # "the", "new", the noun
            assert relative_distance(token, 0, K) == 2 * K - 1 and relative_distance(0, token, K) == 0
    assert BEYOND.stop < BEYOND.window  # the last position stays free (exercise 3's anchor)


def test_a_task_that_leaves_no_room_says_why():
    with pytest.raises(ValueError, match="first must be >= 3"):
        ProbeTask(5, 6, (7,), window=16, first=2)  # "the" would overwrite [CLS]
    with pytest.raises(ValueError, match="at least 2 positions"):
        ProbeTask(5, 6, (7,), window=16, first=15)
    assert ProbeTask(5, 6, (7,), window=16, first=2, anchor=None).slots() == (range(2, 9), range(9, 16))


def test_relative_views_match_what_a_relative_only_model_computes():
    """Equal views give equal states (exactly); the clamp makes the two slots equal beyond the window."""
    batch = probe_batch(BEYOND, 64, torch.Generator().manual_seed(1))
    views = relative_views(batch.ids, batch.mask, k=K, layers=2)
    noun_views = {
        (views[r][p], y)
        for r, (p, y) in enumerate(zip(batch.pos.tolist(), batch.label.tolist(), strict=True))
    }
    assert {v for v, y in noun_views if y == 0} == {
        v for v, y in noun_views if y == 1
    }  # no view tells the slot
    torch.manual_seed(0)
    probe = PositionProbe(probe_config("no_emd", VOCAB)).eval()
    with torch.no_grad():
        states = probe.states(batch.ids, batch.mask)[torch.arange(64), batch.pos]
    same = [(a, b) for a in range(64) for b in range(64) if views[a][batch.pos[a]] == views[b][batch.pos[b]]]
    assert max(float((states[a] - states[b]).abs().max()) for a, b in same) < 1e-5
    within = probe_batch(WITHIN, 64, torch.Generator().manual_seed(1))
    wviews = relative_views(within.ids, within.mask, k=K, layers=2)
    by_view = {}
    for r, (p, y) in enumerate(zip(within.pos.tolist(), within.label.tolist(), strict=True)):
        by_view.setdefault(wviews[r][p], set()).add(y)
    assert all(len(labels) == 1 for labels in by_view.values())  # within: each view has one slot


def test_placement_difference_is_zero_exactly_where_the_clamp_hides_the_anchor():
    beyond = {m: placement_difference(BEYOND, v, vocab_size=VOCAB) for m, v in VARIANTS.items()}
    within = placement_difference(WITHIN, "no_emd", vocab_size=VOCAB)
    assert beyond["relative only"] < 1e-5 < 1e-4 < within
    assert beyond["BERT-style"] > 1e-2 and beyond["DeBERTa + EMD"] > 1e-3
    no_anchor = ProbeTask(
        5, 6, (7, 8, 9), window=16, first=2, anchor=None
    )  # the old probe: nothing to measure from
    assert placement_difference(no_anchor, "no_emd", vocab_size=VOCAB) < 1e-5


def test_the_probe_reads_the_noun_and_only_the_emd_variant_has_a_decoder():
    assert PositionProbe(probe_config("deberta", VOCAB)).emd is not None
    probe = PositionProbe(probe_config("no_emd", VOCAB))
    assert probe.emd is None and probe.config.max_position_embeddings == 2 * K
    assert probe.config.max_relative_positions == K and probe.config.position_buckets == -1
    batch = held_out(WITHIN, 8)
    assert probe(batch.ids, batch.mask, batch.pos).shape == (8, 2)


def test_the_probe_model_has_no_dropout():
    """Trained in train mode, the probe still computes one function of its windows: no dropout (probe_config)."""
    torch.manual_seed(0)
    probe = PositionProbe(probe_config("deberta", VOCAB)).train()
    batch = held_out(WITHIN, 8)
    assert torch.equal(probe(batch.ids, batch.mask, batch.pos), probe(batch.ids, batch.mask, batch.pos))


def test_train_probe_is_reproducible_and_scores_its_own_windows(one_thread):
    test = held_out(WITHIN, 64)
    a = train_probe("bert", WITHIN, vocab_size=VOCAB, steps=3, test=test)
    b = train_probe("bert", WITHIN, vocab_size=VOCAB, steps=3, test=test)
    assert a.accuracy == b.accuracy and a.final_loss == b.final_loss and 0.0 <= a.accuracy <= 1.0
    seen = []

    def make_batch(task, n, generator):  # another labelling: every window is the subject
        batch = probe_batch(task, n, generator)
        seen.append(n)
        return batch._replace(label=torch.zeros_like(batch.label))

    result = train_probe("no_emd", WITHIN, vocab_size=VOCAB, steps=20, batch_size=4, make_batch=make_batch)
    assert seen == [2000] + [4] * 20  # the held-out windows come from the same make_batch
    assert result.accuracy == 1.0  # a constant label is learned, and scored on its own (constant) labels


def test_probe_table_both_halves_of_the_story(one_thread):
    """Relative-only: solved with [CLS] in reach, at chance beyond it; BERT-style and the EMD: solved in both."""
    table = probe_table(TASKS, VARIANTS, vocab_size=VOCAB, steps=100, seeds=(0,), n_test=500)
    assert table.worst("anchor within the window", "relative only") > 0.9
    assert abs(table.best("anchor beyond the window", "relative only") - 0.5) < 0.08
    for setting in TASKS:
        assert table.worst(setting, "BERT-style") > 0.9 and table.worst(setting, "DeBERTa + EMD") > 0.9
    text = format_table(table)
    assert "anchor beyond the window" in text and "DeBERTa + EMD" in text and "100 steps" in text


def test_format_table_shows_mean_and_range_over_seeds():
    table = ProbeTable({"s": {"m": [0.5, 1.0]}}, {"s": 0.52}, steps=7, seeds=(0, 1))
    text = format_table(table)
    assert "75.0% (50%–100%)" in text and "52.0%" in text and "seeds (0, 1)" in text
    assert table.worst("s", "m") == 0.5 and table.best("s", "m") == 1.0


def test_a_second_anchor_within_reach_makes_the_slots_visible_again():
    """Exercise 3's idea, as a fact: [SEP] at the window's end gives each noun position its own view."""
    batch = probe_batch(BEYOND, 64, torch.Generator().manual_seed(2))
    batch.ids[:, -1] = SEP_ID
    mask = (batch.ids != PAD_ID).long()
    views = relative_views(batch.ids, mask, k=K, layers=1)
    by_view = {}
    for r, (p, y) in enumerate(zip(batch.pos.tolist(), batch.label.tolist(), strict=True)):
        by_view.setdefault(views[r][p], set()).add(y)
    assert all(len(labels) == 1 for labels in by_view.values())
