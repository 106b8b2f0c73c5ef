"""A document through the encoder: chunks of ``max_length`` tokens, their mean-pooled states (frozen
features for a linear probe), and the whole network fine-tuned on a few labelled documents.

Both serve :mod:`deberta_edu.training.downstream`, which puts them beside the baselines.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from deberta_edu.facts import encode_pair

from .finetune import collate
from .significance import hits_or_accuracy


def chunk_rows(tokenizer, texts: Sequence[str], max_length: int = 128,
               max_chunks: int = 4) -> tuple[list[list[int]], list[int]]:
    """Each text as up to ``max_chunks`` rows of [CLS] ... [SEP] (at most ``max_length`` ids), and the index
    of the text each row came from."""
    rows, owner = [], []
    step = max_length - 2
    for n, ids in enumerate(tokenizer.encode_batch(list(texts))):
        for start in range(0, max(len(ids), 1), step)[:max_chunks]:
            rows.append(encode_pair(ids[start:start + step]))
            owner.append(n)
    return rows, owner


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, H) states, (B, L) mask -> (B, H): the average over the real tokens."""
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


@torch.no_grad()
def document_features(model, tokenizer, texts: Sequence[str], max_length: int = 128, max_chunks: int = 4,
                      batch_size: int = 32) -> torch.Tensor:
    """(N, hidden) mean-pooled encoder states of each text (its first ``max_chunks`` chunks)."""
    encoder = getattr(model, "deberta", model)  # a DebertaForMaskedLM's encoder, or the encoder itself
    encoder.eval()
    rows, owner = chunk_rows(tokenizer, texts, max_length, max_chunks)
    sums = torch.zeros(len(texts), encoder.config.hidden_size)
    counts = torch.zeros(len(texts), 1)
    owner_t = torch.tensor(owner)
    for b in range(0, len(rows), batch_size):
        ids, mask = collate(rows[b:b + batch_size])
        hidden = encoder(ids, attention_mask=mask).last_hidden_state  # (B, L, H)
        who = owner_t[b:b + batch_size]
        sums.index_add_(0, who, (hidden * mask[..., None]).sum(1))
        counts.index_add_(0, who, mask.sum(1, keepdim=True).float())
    return sums / counts.clamp(min=1)


class MeanPoolClassifier(nn.Module):
    """An encoder, its last states averaged over the real tokens, one linear layer. The layer starts at zero:
    the first predictions are uniform, and the encoder's features, not a random head, set the first gradients."""

    def __init__(self, encoder: nn.Module, classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(mean_pool(self.encoder(ids, attention_mask=mask).last_hidden_state, mask))


@dataclass(frozen=True)
class FinetuneRecipe:
    """How both networks are fine-tuned (the same for pretrained and random weights). Chosen before the test
    set was read, on 200 training-pool documents outside each draw: of ``selection.RECIPES``, the one the
    pretrained network did best with (all three within a point for either network, inside the draws' spread:
    results/pretraining-value/selection.json; a test checks it). Training examples are chunks carrying their
    document's label."""

    lr: float = 3e-4  # the encoder's peak; one cycle: 10% warmup, then cosine decay to ~0 (torch's OneCycleLR, which
    # also cycles AdamW's β1 from 0.95 to 0.85 and back: its default cycle_momentum)
    head_lr_scale: float = 10.0  # the zero-initialized head learns faster
    epochs: int = 6
    batch_size: int = 16
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = 128
    max_chunks: int = 16  # every test document whole (the longest: 1,952 tokens); 12 of 2,002 pool documents are cut


def finetuned_accuracy(model, tokenizer, train_texts: Sequence[str], train_y: Sequence[int],
                       test_texts: Sequence[str], test_y: Sequence[int], seed: int, classes: int | None = None,
                       recipe: FinetuneRecipe = FinetuneRecipe(), per_document: bool = False) -> float | list[bool]:
    """Test accuracy of a copy of ``model``'s encoder fine-tuned with a mean-pool head; ``model`` is untouched.
    A test document's answer is the class with the highest summed log-probability over its chunks (with
    ``per_document``, whether each test document was right)."""
    encoder = copy.deepcopy(getattr(model, "deberta", model))
    classes = classes or max(max(train_y), max(test_y)) + 1
    torch.manual_seed(seed)
    clf = MeanPoolClassifier(encoder, classes)
    rows, owner = chunk_rows(tokenizer, train_texts, recipe.max_length, recipe.max_chunks)
    y = torch.as_tensor(list(train_y))[torch.tensor(owner)]
    per_epoch = math.ceil(len(rows) / recipe.batch_size)
    opt = torch.optim.AdamW([{"params": clf.encoder.parameters(), "lr": recipe.lr},
                             {"params": clf.head.parameters(), "lr": recipe.lr * recipe.head_lr_scale}],
                            weight_decay=recipe.weight_decay)
    total = recipe.epochs * per_epoch
    # torch divides by zero where the warm-up would end at step 0 (0.1 x 10 steps); a hair more is the same cycle
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[recipe.lr, recipe.lr * recipe.head_lr_scale], total_steps=total,
        pct_start=0.1 if 0.1 * total != 1 else 0.1 + 1e-6)
    order = torch.Generator().manual_seed(seed)
    clf.train()
    for _ in range(recipe.epochs):
        for batch in torch.randperm(len(rows), generator=order).split(recipe.batch_size):
            loss = nn.functional.cross_entropy(clf(*collate([rows[k] for k in batch])), y[batch])
            if not torch.isfinite(loss):  # a diverged run is said, not scored (its NaN weights answer one class)
                raise FloatingPointError(f"the fine-tuning loss became {loss.item()} (seed {seed}, lr {recipe.lr:g}); "
                                         "lower the recipe's lr")
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(clf.parameters(), recipe.max_grad_norm)
            opt.step()
            schedule.step()
    clf.eval()
    rows, owner = chunk_rows(tokenizer, test_texts, recipe.max_length, recipe.max_chunks)
    scores = torch.zeros(len(test_texts), classes)
    with torch.no_grad():
        for b in range(0, len(rows), 64):
            logp = torch.log_softmax(clf(*collate(rows[b:b + 64])), -1)
            scores.index_add_(0, torch.tensor(owner[b:b + 64]), logp)
    return hits_or_accuracy(scores.argmax(1).tolist(), test_y, per_document)
