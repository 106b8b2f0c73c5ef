"""One batch as the model reads it, in pretraining (MLM) and fine-tuning (classification) alike.

    input_ids        (B, L)  token ids; for MLM the masked sequence
    labels           MLM: (B, L), the original id where a token is to be predicted and -100 elsewhere;
                     classification: (B,), the class of each sequence
    attention_mask   (B, L)  1 for a token, 0 for padding

Every training loop of the course hands the same ``Batch`` to its loss function, whatever the task.
It is a NamedTuple in the order pretraining batches have always come in (``masked, labels, mask =
batch``), so code that unpacks or compares them field by field reads them as before.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """input_ids, labels and attention_mask of B sequences (the module docstring gives the shapes)."""

    input_ids: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L) for MLM, (B,) for classification
    attention_mask: torch.Tensor  # (B, L)

    def rows(self, index) -> Batch:
        """The sequences ``index`` (a slice or a tensor of row numbers) of every tensor."""
        return Batch(self.input_ids[index], self.labels[index], self.attention_mask[index])

    def to(self, device: str | torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.labels.to(device), self.attention_mask.to(device))

    @property
    def num_targets(self) -> int:
        """What the loss averages over: the masked tokens (MLM) or the sequences (classification)."""
        return int((self.labels != -100).sum())
