"""How a pretraining run is scored: the MLM loss it minimizes, and held-out loss, accuracy and perplexity;
and where it ranks hidden words of chosen sentences (lesson 4's fill-mask, kept for its full-size runs).

The evaluator masks its held-out rows once (a generator seeded by ``eval_seed`` alone), so every
evaluation of every run with that seed reads the same masked tokens: curves of different runs compare.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from deberta_edu.data.batch import Batch
from deberta_edu.facts import encode_pair
from deberta_edu.model.emd import DebertaForMaskedLM

from .configs import TrainConfig
from .engine import Distributed, Precision, all_reduce_sum, generator
from .mlm_data import MaskSpec, take_rows

IGNORE = -100  # a label the loss ignores: nothing to predict at this position


def encode_row(tokenizer, text: str) -> torch.Tensor:
    """``[CLS] pieces [SEP]`` of ``text``: a row as the packed training data has them, (L,)."""
    return torch.tensor(encode_pair(tokenizer.encode(text)))


def hide(tokenizer, text: str, words) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, labels) of a sentence with each word (one piece "▁word") replaced by [MASK]."""
    ids = encode_row(tokenizer, text)
    pieces = [tokenizer.id_to_piece(i) for i in ids.tolist()]
    labels = torch.full_like(ids, IGNORE)
    for word in words:
        try:
            t = pieces.index("▁" + word)
        except ValueError:
            raise ValueError(
                f"{word!r} is not a single piece of {text!r} (its pieces: {pieces}); hide a word that is"
            ) from None
        labels[t] = ids[t]
    return torch.where(labels != IGNORE, tokenizer.mask_id, ids), labels


def answer_rank(probs: torch.Tensor, answer: int) -> int:
    """Where the model puts the answer among its guesses, (V,) probabilities: 1 when it is the first guess."""
    return int((probs > probs[answer]).sum()) + 1


@torch.no_grad()
def answer_ranks(model, tokenizer, blanks: dict) -> dict[str, int]:
    """{word: rank} of every word hidden in ``blanks`` ({sentence: words}, each sentence's words hidden at once,
    as lesson 4's fill-mask hides them): 1 when the model's first guess at that [MASK] is the word."""
    was_training = model.training
    model.eval()
    ranks = {}
    for text, words in blanks.items():
        ids, labels = hide(tokenizer, text, words)
        probs = model(ids[None].to(next(model.parameters()).device)).logits[0].float().softmax(-1).cpu()  # (L, V)
        for t in (labels != IGNORE).nonzero().flatten().tolist():
            answer = int(labels[t])
            ranks[tokenizer.id_to_piece(answer).lstrip("▁")] = answer_rank(probs[t], answer)
    model.train(was_training)
    return ranks


def mlm_loss(model, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy over the batch's masked tokens (the head runs on those tokens only)."""
    return model(batch.input_ids, batch.attention_mask, labels=batch.labels, only_masked_logits=True).loss


class Evaluator:
    """MLM loss, accuracy and perplexity on masked held-out tokens; the same masks at every evaluation."""

    def __init__(self, data, cfg: TrainConfig, spec: MaskSpec, world: Distributed, precision: Precision):
        n = min(cfg.eval_rows, len(data))
        rows = take_rows(data, torch.arange(n))  # (n, L) the first n rows: fixed across runs
        self.batch = spec.mask(rows, cfg.mlm_probability, generator(cfg.eval_seed))  # masked once, on the CPU
        self.mine = torch.arange(world.rank, n, world.world_size)  # rank r evaluates rows r, r + W, ...
        self.cfg, self.world, self.precision = cfg, world, precision

    @torch.no_grad()
    def __call__(self, model: DebertaForMaskedLM) -> dict:
        was_training = model.training
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
        for chunk in self.mine.split(self.cfg.eval_batch_size):
            if not len(chunk):  # a rank with no rows (fewer than ranks): split gives one empty chunk, not none
                continue
            ids, labels, mask = self.batch.rows(chunk).to(self.world.device)
            with self.precision.autocast():
                out = model(ids, mask, labels=labels, only_masked_logits=True)
            targets = labels[labels != -100]  # (N,)
            logits = out.logits.float()  # (N, V)
            sums += torch.tensor([F.cross_entropy(logits, targets, reduction="sum").item(),
                                  (logits.argmax(-1) == targets).sum().item(), len(targets)], dtype=torch.float64)
        model.train(was_training)
        loss_sum, correct, count = all_reduce_sum(sums.to(self.world.device), self.world).tolist()
        loss = loss_sum / max(count, 1)
        return {"val_loss": loss, "val_accuracy": correct / max(count, 1), "val_perplexity": math.exp(min(loss, 80)),
                "val_tokens": int(count)}


def unigram_baseline(cfg: TrainConfig, data=None) -> dict:
    """Held-out loss and accuracy of predicting every masked token from word frequencies alone.

    The counts come from the training rows (add-one smoothing); the targets are exactly the masked
    tokens that ``Evaluator`` scores. A model at this loss has not yet learned to use the context:
    early MLM training sits on this plateau before it falls. ``data``: (train, val, tokenizer) if prepared.
    """
    import numpy as np

    from .mlm_data import prepare_data

    train_data, val_data, tokenizer = data if data is not None else prepare_data(cfg)
    spec = MaskSpec.of(cfg, tokenizer)
    rows = train_data.rows() if hasattr(train_data, "rows") else train_data.numpy()
    counts = np.bincount(np.asarray(rows).ravel(), minlength=spec.vocab_size).astype(np.float64)
    counts[list(spec.special_ids)] = 0  # [CLS], [SEP], padding are never masked targets
    log_p = torch.from_numpy(np.log((counts + 1) / (counts + 1).sum()))  # (V,)
    labels = Evaluator(val_data, cfg, spec, Distributed(), Precision("fp32", "cpu")).batch.labels
    targets = labels[labels != -100]  # (N,) the held-out masked tokens
    loss = float(-log_p[targets].mean())
    return {"val_loss": loss, "val_accuracy": float((targets == log_p.argmax()).float().mean()),
            "val_perplexity": math.exp(loss), "val_tokens": len(targets)}
