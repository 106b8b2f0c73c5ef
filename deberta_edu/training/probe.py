"""The position probe of lesson 3: does a model know *where* a token sits (subject slot or object slot)?

A toy version of the paper's "a new **store** opened beside the new **mall**" (sec. 3.2): in a window of
``window`` positions the phrase "the new ⟨noun⟩" appears once, the rest is padding that attention masks
out. The noun is the subject when it sits in the first half of the window and the object in the second
half, so its label depends on its **absolute** position only: the words and their relative context are
the same in both slots. A tiny encoder (+ EMD when the variant has one) and a linear classifier on the
noun's final state are trained on it; a model with relative positions only stays at chance.

    task = ProbeTask(the=..., new=..., nouns=(...))          # ids of the words of the toy language
    result = train_probe("deberta", task, vocab_size=V, steps=400)
    result.accuracy, result.final_loss                         # on 2,000 held-out windows

The ablation reuses it as a metric of absolute-position knowledge, so it lives in training (it imports
only the model), not in the lessons.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from deberta_edu.facts import PAD_ID
from deberta_edu.model.config import DebertaConfig, make_config
from deberta_edu.model.emd import EnhancedMaskDecoder
from deberta_edu.model.encoder import DebertaModel


@dataclass(frozen=True)
class ProbeTask:
    """The toy language: the ids of "the" and "new", the nouns that may follow them, and the window."""

    the: int
    new: int
    nouns: tuple[int, ...]
    window: int = 16  # the subject slot is positions 2 … window/2 − 1, the object slot window/2 … window − 1


class ProbeBatch(NamedTuple):
    """(ids, attention_mask, noun position, label), each (B, …); label 1 = object slot (second half)."""

    ids: torch.Tensor  # (B, window) [PAD] everywhere but the phrase
    mask: torch.Tensor  # (B, window) 1 on the phrase's three tokens
    pos: torch.Tensor  # (B,) where the noun sits
    label: torch.Tensor  # (B,) 0 = subject slot, 1 = object slot


def probe_batch(task: ProbeTask, n: int, generator: torch.Generator) -> ProbeBatch:
    """``n`` windows, each with "the new ⟨noun⟩" once, in the subject or the object slot, from ``generator``."""
    window = task.window
    label = torch.randint(0, 2, (n,), generator=generator)
    subject_pos = torch.randint(2, window // 2, (n,), generator=generator)  # noun after "the new"
    object_pos = torch.randint(window // 2, window, (n,), generator=generator)
    pos = torch.where(label == 1, object_pos, subject_pos)
    nouns = torch.tensor(task.nouns)
    noun = nouns[torch.randint(0, len(nouns), (n,), generator=generator)]
    ids = torch.full((n, window), PAD_ID, dtype=torch.long)  # [PAD] everywhere …
    rows = torch.arange(n)
    ids[rows, pos - 2], ids[rows, pos - 1], ids[rows, pos] = task.the, task.new, noun  # … but the phrase
    return ProbeBatch(ids, (ids != PAD_ID).long(), pos, label)


def probe_config(variant: str, vocab_size: int, window: int = 16, **overrides) -> DebertaConfig:
    """A tiny model for the probe: no dropout, absolute table as long as the window, v1 clamp at k = 8."""
    settings = dict(
        vocab_size=vocab_size,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        hidden_size=64,
        intermediate_size=128,
        max_position_embeddings=window,
        position_buckets=-1,
        max_relative_positions=8,
    )
    return make_config("tiny", variant, **{**settings, **overrides})


class PositionProbe(nn.Module):
    """A tiny encoder (+ EMD when the variant has it) and a linear classifier on the noun's state."""

    def __init__(self, config: DebertaConfig):
        super().__init__()
        self.config = config
        self.encoder = DebertaModel(config)
        self.emd = EnhancedMaskDecoder() if config.emd else None
        self.classifier = nn.Linear(config.hidden_size, 2)

    def forward(self, ids, mask, pos):
        out = self.encoder(ids, mask)
        if self.emd is not None:
            states = self.emd(self.encoder.encoder.layers[-1], out.encoder_state)
        else:
            states = out.last_hidden_state
        return self.classifier(states[torch.arange(len(ids)), pos])  # (B, 2) from the noun's state


@dataclass
class ProbeResult:
    """What one probe run measured: held-out accuracy, the last training loss, and the trained probe."""

    accuracy: float
    final_loss: float
    probe: PositionProbe


BatchMaker = Callable[[ProbeTask, int, torch.Generator], ProbeBatch]  # (task, n, generator) -> n windows


def held_out(
    task: ProbeTask, n: int = 2000, seed: int = 1234, make_batch: BatchMaker = probe_batch
) -> ProbeBatch:
    """The held-out windows every probe is scored on (a generator of its own: never the training draws)."""
    return make_batch(task, n, torch.Generator().manual_seed(seed))


def train_probe(
    variant: str,
    task: ProbeTask,
    *,
    vocab_size: int,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    test: ProbeBatch | None = None,
    make_batch: BatchMaker = probe_batch,
    **config_overrides,
) -> ProbeResult:
    """Train a fresh ``PositionProbe`` of ``variant`` for ``steps`` AdamW steps; score it on ``test``.

    The model's weights come from ``torch.manual_seed(seed)`` and the training windows from a generator
    seeded with ``seed``, so every variant sees the same data. ``make_batch`` may be replaced to probe
    another labelling of the windows; ``test`` defaults to ``held_out`` windows made by it.
    """
    test = held_out(task, make_batch=make_batch) if test is None else test
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    probe = PositionProbe(probe_config(variant, vocab_size, task.window, **config_overrides))
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        x, mask, pos, label = make_batch(task, batch_size, generator)
        loss = nn.functional.cross_entropy(probe(x, mask, pos), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    probe.eval()
    with torch.no_grad():
        predicted = probe(test.ids, test.mask, test.pos).argmax(-1)
    accuracy = (predicted == test.label).float().mean().item()
    return ProbeResult(accuracy, loss.item(), probe)


def majority_rate(labels: torch.Tensor) -> float:
    """Chance for a two-class probe: the share of the more frequent label."""
    share = labels.float().mean().item()
    return max(share, 1 - share)
