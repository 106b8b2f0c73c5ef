"""training.probe: lesson 3's position probe builds the windows it says and trains reproducibly."""

import torch

from deberta_edu.facts import PAD_ID
from deberta_edu.training.probe import (
    PositionProbe,
    ProbeTask,
    held_out,
    majority_rate,
    probe_batch,
    probe_config,
    train_probe,
)

TASK = ProbeTask(the=5, new=6, nouns=(7, 8, 9))
VOCAB = 10


def test_windows_hold_the_phrase_once_in_the_slot_of_their_label():
    ids, mask, pos, label = probe_batch(TASK, 200, torch.Generator().manual_seed(0))
    rows = torch.arange(200)
    assert ids.shape == mask.shape == (200, TASK.window)
    assert (ids[rows, pos - 2] == TASK.the).all() and (ids[rows, pos - 1] == TASK.new).all()
    assert torch.isin(ids[rows, pos], torch.tensor(TASK.nouns)).all()
    assert (mask.sum(-1) == 3).all() and ((ids == PAD_ID) == (mask == 0)).all()  # only the phrase is seen
    assert torch.equal(label, (pos >= TASK.window // 2).long())  # object slot = second half of the window
    assert (pos >= 2).all() and 0 < label.float().mean() < 1
    assert 0.5 <= majority_rate(label) < 0.65 and majority_rate(torch.tensor([1, 1, 1, 0])) == 0.75


def test_the_probe_reads_the_noun_and_only_the_emd_variant_has_a_decoder():
    assert PositionProbe(probe_config("deberta", VOCAB)).emd is not None
    probe = PositionProbe(probe_config("no_emd", VOCAB))
    assert probe.emd is None and probe.config.max_position_embeddings == TASK.window
    batch = held_out(TASK, 8)
    assert probe(batch.ids, batch.mask, batch.pos).shape == (8, 2)


def test_train_probe_is_reproducible_and_scores_its_own_windows():
    test = held_out(TASK, 64)
    a = train_probe("bert", TASK, vocab_size=VOCAB, steps=3, test=test)
    b = train_probe("bert", TASK, vocab_size=VOCAB, steps=3, test=test)
    assert a.accuracy == b.accuracy and a.final_loss == b.final_loss and 0.0 <= a.accuracy <= 1.0
    seen = []

    def make_batch(task, n, generator):  # another labelling: every window is the subject
        batch = probe_batch(task, n, generator)
        seen.append(n)
        return batch._replace(label=torch.zeros_like(batch.label))

    result = train_probe("no_emd", TASK, vocab_size=VOCAB, steps=20, batch_size=4, make_batch=make_batch)
    assert seen == [2000] + [4] * 20  # the held-out windows come from the same make_batch
    assert result.accuracy == 1.0  # a constant label is learned, and scored on its own (constant) labels
