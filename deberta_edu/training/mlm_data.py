"""What pretraining reads: packed rows (or synthetic ones), masked 80/10/10, cut into micro-batches.

Everything random is a function of the seed and the step, so a killed run resumes with the same data and masks:

    data order   epoch e is a permutation drawn from (seed, "order", e)
    masks        the global batch of step s is masked with a generator seeded by (seed, "mask", e, s),
                 so every epoch sees new masks; under DDP each rank slices its rows from that batch

``MaskSpec`` says what ``mask_tokens`` needs to know of the vocabulary; ``Batches`` gives this rank
its micro-batches of step s, each a ``deberta_edu.data.batch.Batch``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deberta_edu.data.batch import Batch
from deberta_edu.facts import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_IDS

from .configs import TrainConfig
from .engine import Distributed, generator
from .masking import mask_tokens


def synthetic_data(rows: int, seq_length: int, vocab_size: int, seed: int = 0, noise: float = 0.1) -> torch.Tensor:
    """(rows, seq_length) of [CLS] x_1 .. x_n [SEP] where x_{t+1} = successor(x_t) 90% of the time.

    A masked token is predictable from its neighbours, so a model's loss drops fast: a check that
    training works at all, with no corpus and no tokenizer. ``successor`` is one fixed permutation
    of the vocabulary; ``seed`` draws the rows (so train and validation sets share the grammar).
    """
    content = torch.arange(len(SPECIAL_IDS), vocab_size)
    successor = content[torch.randperm(len(content), generator=generator("synthetic grammar", vocab_size))]
    g = generator("synthetic rows", seed)
    x = torch.empty(rows, seq_length, dtype=torch.long)
    x[:, 0], x[:, -1] = CLS_ID, SEP_ID
    x[:, 1] = content[torch.randint(len(content), (rows,), generator=g)]
    for t in range(2, seq_length - 1):
        follow = successor[x[:, t - 1] - len(SPECIAL_IDS)]  # successor of the previous token
        random = content[torch.randint(len(content), (rows,), generator=g)]
        x[:, t] = torch.where(torch.rand(rows, generator=g) < noise, random, follow)
    return x


def prepare_data(cfg: TrainConfig, progress: bool = True):
    """(train_data, val_data, tokenizer) for cfg.source: packed BBC/large/any folder, or synthetic rows.
    ``progress=False`` hides the tokenizing bars of a first build."""
    if cfg.source == "synthetic":
        return (synthetic_data(512, cfg.seq_length, cfg.vocab_size, seed=0),
                synthetic_data(64, cfg.seq_length, cfg.vocab_size, seed=1), None)
    from deberta_edu.data.packing import PackedDataset, build_dataset

    train_path, val_path, tokenizer = build_dataset(cfg.source, cfg.vocab_size, cfg.seq_length, progress=progress)
    if cfg.eval_source is not None and cfg.eval_source != cfg.source:
        from deberta_edu.data.packing import pack_validation

        val_path = pack_validation(cfg.eval_source, tokenizer, cfg.seq_length, train_path.parent, progress=progress)
    return PackedDataset(train_path), PackedDataset(val_path), tokenizer


def take_rows(data, index: torch.Tensor) -> torch.Tensor:
    """data[index] as a LongTensor, for a (N, L) tensor or any Dataset of (L,) rows (e.g. PackedDataset)."""
    if isinstance(data, torch.Tensor):
        return data[index].long()
    return torch.stack([torch.as_tensor(data[i]) for i in index.tolist()]).long()


@dataclass
class MaskSpec:
    """What mask_tokens needs to know about the vocabulary."""

    vocab_size: int
    mask_id: int = MASK_ID
    pad_id: int = PAD_ID
    special_ids: tuple[int, ...] = SPECIAL_IDS
    word_starts: torch.Tensor | None = None  # (vocab_size,) bool: whole-word masking when given

    @classmethod
    def of(cls, cfg: TrainConfig, tokenizer=None) -> MaskSpec:
        if tokenizer is None:
            if cfg.whole_word_masking and cfg.source != "synthetic":  # synthetic rows have no words: per token
                raise ValueError("whole_word_masking needs a tokenizer (its word_start_mask); pass tokenizer=, "
                                 "or set whole_word_masking=False")
            return cls(cfg.vocab_size)
        word_starts = tokenizer.word_start_mask() if cfg.whole_word_masking else None
        return cls(tokenizer.vocab_size, tokenizer.mask_id, tokenizer.pad_id, tuple(tokenizer.special_ids),
                   word_starts)

    def mask(self, rows: torch.Tensor, probability: float, g: torch.Generator) -> Batch:
        """The MLM batch of a (B, L) tensor of token ids: masked ids, labels, attention mask."""
        masked, labels = mask_tokens(rows, vocab_size=self.vocab_size, mask_token_id=self.mask_id,
                                     special_token_ids=self.special_ids, mlm_probability=probability,
                                     generator=g, word_starts=self.word_starts)
        return Batch(input_ids=masked, labels=labels, attention_mask=(rows != self.pad_id).long())


class Batches:
    """The micro-batches of step s for this rank: a pure function of (seed, s), hence exact resume."""

    def __init__(self, data, cfg: TrainConfig, spec: MaskSpec, world: Distributed):
        self.data, self.cfg, self.spec, self.world = data, cfg, spec, world
        per_rank, rest = divmod(cfg.batch_size, world.world_size * cfg.grad_accum)
        if rest or per_rank == 0:
            raise ValueError(
                f"batch_size={cfg.batch_size} must split evenly into {world.world_size} process(es) x "
                f"grad_accum={cfg.grad_accum} micro-batches; choose a multiple of {world.world_size * cfg.grad_accum}"
            )
        self.micro_size = per_rank
        self.steps_per_epoch = len(data) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training set has {len(data)} rows, fewer than one batch of {cfg.batch_size}")
        self._order: tuple[int, torch.Tensor] | None = None

    def order(self, epoch: int) -> torch.Tensor:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, torch.randperm(len(self.data), generator=generator(self.cfg.seed, "order", epoch)))
        return self._order[1]

    def global_batch(self, step: int) -> Batch:
        """The whole step, every rank's rows: a Batch of (batch_size, L) tensors, on the CPU."""
        epoch, i = divmod(step, self.steps_per_epoch)
        B = self.cfg.batch_size
        rows = take_rows(self.data, self.order(epoch)[i * B : (i + 1) * B])  # (B, L)
        return self.spec.mask(rows, self.cfg.mlm_probability, generator(self.cfg.seed, "mask", epoch, step))

    def micro_batches(self, step: int) -> tuple[list[Batch], list[int]]:
        """This rank's micro-batches (of (b, L) tensors, on its device) and their masked-token counts."""
        whole = self.global_batch(step)
        b, r = self.micro_size, self.world.rank
        batches, weights = [], []
        for m in range(self.cfg.grad_accum):
            part = whole.rows(slice((r * self.cfg.grad_accum + m) * b, (r * self.cfg.grad_accum + m + 1) * b))
            batches.append(part.to(self.world.device))
            weights.append(part.num_targets)
        return batches, weights
