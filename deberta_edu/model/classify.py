"""Sequence classification in the DeBERTa style: pooled [CLS] -> dense -> activation -> dropout -> linear."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import DebertaConfig
from .emd import DebertaForMaskedLM, check_labels
from .encoder import DebertaModel, activation


@dataclass
class ClassifierOutput:
    logits: torch.Tensor  # (B, num_labels)
    loss: torch.Tensor | None


class ContextPooler(nn.Module):
    """The hidden state of the first token ([CLS]) through a dense layer and an activation."""

    def __init__(self, config: DebertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)

    def forward(self, hidden):
        return self.act(self.dense(hidden[:, 0]))  # (B, D)


class DebertaForSequenceClassification(nn.Module):
    def __init__(self, config: DebertaConfig, num_labels: int = 2):
        super().__init__()
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a whole number >= 1 (2 for a binary task), got {num_labels!r}")
        self.config = config
        self.num_labels = num_labels
        self.deberta = DebertaModel(config)
        self.pooler = ContextPooler(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        for linear in (self.pooler.dense, self.classifier):
            nn.init.normal_(linear.weight, std=config.initializer_range)
            nn.init.zeros_(linear.bias)

    @classmethod
    def from_mlm(cls, mlm: DebertaForMaskedLM, num_labels: int = 2) -> DebertaForSequenceClassification:
        """A classifier whose encoder starts from a pretrained MLM model's encoder (the head is new)."""
        model = cls(mlm.config, num_labels)
        model.deberta.load_state_dict(mlm.deberta.state_dict())
        return model

    def forward(self, input_ids, attention_mask=None, labels=None) -> ClassifierOutput:
        if labels is not None:
            self.deberta.check_inputs(input_ids, attention_mask)  # input_ids first: a clear error
            check_labels(labels, input_ids.shape[:1], self.num_labels, ignore=None)  # one label per sequence
        hidden = self.deberta(input_ids, attention_mask).last_hidden_state  # (B, L, D)
        logits = self.classifier(self.dropout(self.pooler(hidden)))  # (B, num_labels)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return ClassifierOutput(logits, loss)
