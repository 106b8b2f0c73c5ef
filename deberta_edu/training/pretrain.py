"""Masked-language-model pretraining (paper sec. 4.1 and appendix A.2), from a notebook or the shell.

Every step takes a global batch of packed rows ``[CLS] ... [SEP]``, hides 15% of the tokens
(``mask_tokens``: 80% [MASK], 10% random, 10% unchanged) and trains the model to predict them:

    loss = mean over the masked tokens of  -log p(original token | masked sequence)

with AdamW (eps 1e-6, weight decay 0.01), a linear warmup then linear decay of the learning rate,
and gradient clipping at 1.0, as in the paper's Table 8 (at a much smaller scale).

Everything random is a function of the seed and the step, so a killed run resumes bit-exactly:

    data order   epoch e is a permutation drawn from (seed, "order", e)
    masks        the global batch of step s is masked with a generator seeded by (seed, "mask", e, s),
                 so every epoch sees new masks; under DDP each rank slices its rows from that batch
    dropout      torch's global RNG, saved in every checkpoint (one state per rank)

From Python (a notebook)::

    cfg = get_config("lesson4")
    train_data, val_data, tokenizer = prepare_data(cfg)
    result = train(cfg, train_data, val_data, tokenizer=tokenizer, out_dir=lesson_checkpoint("lesson4"))

From the shell (``torchrun --nproc_per_node=N -m deberta_edu.pretrain ...`` for several GPUs)::

    python -m deberta_edu.pretrain --list
    python -m deberta_edu.pretrain --config lesson4 [--steps N] [--out DIR] [--resume] [--set model.hidden_size=64]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from deberta_edu import facts
from deberta_edu.facts import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_IDS
from deberta_edu.model.checkpoint import lesson_checkpoint, save_pretrained
from deberta_edu.model.config import SIZES, VARIANTS, DebertaConfig, make_config
from deberta_edu.model.emd import DebertaForMaskedLM

from .engine import (
    CONFIG_FILE,
    LOG_FILE,
    PRECISIONS,
    STATE_FILE,
    Distributed,
    JsonlLogger,
    Precision,
    all_reduce_sum,
    build_optimizer,
    compile_layers,
    derive_seed,
    generator,
    load_training_state,
    optimizer_step,
    progress_bar,
    save_training_state,
    set_lr,
    setup_distributed,
    warmup_linear,
)
from .masking import mask_tokens

# The course tokenizer fixes these ids (deberta_edu.data.tokenizer); used when no tokenizer is given.


# ----------------------------------------------------------------------------- configs


@dataclass
class TrainConfig:
    """A model (size + variant + overrides), its data, and how to train it."""

    name: str = "custom"
    size: str = "tiny"  # a key of config.SIZES
    variant: str = "deberta"  # a key of config.VARIANTS: deberta, bert, no_emd, no_c2p, no_p2c
    model_overrides: dict = field(default_factory=dict)  # any DebertaConfig field, e.g. {"hidden_size": 64}
    source: str = "bbc"  # corpus for build_dataset, or "synthetic"
    vocab_size: int = 8000
    seq_length: int = 128
    batch_size: int = 32  # sequences per optimizer step, all ranks and micro-batches together
    grad_accum: int = 1  # micro-batches per rank per step
    steps: int = 1000
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    adam_eps: float = 1e-6
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    mlm_probability: float = 0.15
    whole_word_masking: bool = False  # needs a tokenizer (its word_start_mask); slower, per-row Python
    dropout: float | None = None  # None keeps the model config's (0.1)
    precision: str = "auto"  # auto: bf16 (or fp16) autocast on GPU, fp32 on CPU
    compile: bool = False  # torch.compile each encoder layer (the same numbers, faster on a GPU)
    log_every: int = 1  # steps per train record (its loss is the mean over those steps)
    eval_every: int = 100  # steps between held-out evaluations (0: only at the end)
    eval_rows: int = 256  # held-out sequences per evaluation (the first ones of the validation set)
    eval_batch_size: int = 64
    eval_seed: int = 1234  # eval masks depend on this alone, so runs with other seeds stay comparable
    save_every: int = 100  # steps between checkpoints (0: only at the end)
    seed: int = 0

    def __post_init__(self):
        self.adam_betas = tuple(self.adam_betas)
        self.model_overrides = dict(self.model_overrides)
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; choose from {sorted(SIZES)}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose from {sorted(VARIANTS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("batch_size", "grad_accum", "steps", "log_every", "eval_rows", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.save_every % self.log_every:
            raise ValueError(
                f"save_every ({self.save_every}) must be a multiple of log_every ({self.log_every}): a "
                "checkpoint between two log records would lose the running loss, and resume would not be exact"
            )

    def model_config(self, vocab_size: int | None = None) -> DebertaConfig:
        """The DebertaConfig to build (vocab_size: the tokenizer's, if it differs from the config's)."""
        extra = {}
        if self.dropout is not None:
            extra = {"hidden_dropout_prob": self.dropout, "attention_probs_dropout_prob": self.dropout}
        vocab = vocab_size or self.vocab_size
        return make_config(self.size, self.variant, vocab_size=vocab, **{**extra, **self.model_overrides})

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_length

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(copy.deepcopy(self), **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# Fields that do not change what a run computes; a resumed run may change them.
NON_TRAJECTORY_FIELDS = ("name", "log_every", "eval_every", "eval_rows", "eval_batch_size", "save_every", "compile")

# Per size: data and schedule. Sized for one GPU in minutes (tiny, mini) to hours (base); the paper
# trains base for 1M steps of 256 x 512 tokens (Table 8).
SIZE_TRAINING: dict[str, dict] = {
    "tiny": dict(source="bbc", vocab_size=8000, seq_length=128, batch_size=32, lr=1e-3, warmup_steps=200,
                 steps=3000, eval_every=250, save_every=250, log_every=10),
    "mini": dict(source="bbc", vocab_size=8000, seq_length=128, batch_size=64, lr=7e-4, warmup_steps=300,
                 steps=5000, eval_every=500, save_every=500, log_every=10),
    "small": dict(source="large", vocab_size=32000, seq_length=512, batch_size=64, lr=5e-4, warmup_steps=1000,
                  steps=20000, eval_every=1000, save_every=1000, log_every=50),
    "base": dict(source="large", vocab_size=32000, seq_length=512, batch_size=256, lr=2e-4, warmup_steps=2000,
                 steps=50000, eval_every=2000, save_every=2000, log_every=50),
}


def _named_configs() -> dict[str, TrainConfig]:
    configs = {}
    for size, training in SIZE_TRAINING.items():
        for variant in VARIANTS:
            name = f"{size}-{variant}"
            configs[name] = TrainConfig(name=name, size=size, variant=variant, **training)
        configs[size] = configs[f"{size}-deberta"].replace(name=size)
    # Lesson 4: a tiny DeBERTa on BBC News, about 1-2 minutes on 2 CPU cores (820K tokens); smoke: ~10 s.
    # Dropout off: so short a run underfits, and dropout only slows it down.
    configs["lesson4"] = TrainConfig(
        name="lesson4", size="tiny", source="bbc", vocab_size=8000, seq_length=128, batch_size=16,
        lr=1e-3, warmup_steps=30, steps=400, dropout=0.0, eval_every=100, eval_rows=128, save_every=100,
    )
    configs["lesson4-smoke"] = configs["lesson4"].replace(
        name="lesson4-smoke", batch_size=8, steps=25, warmup_steps=5, eval_every=25, eval_rows=32, save_every=25
    )
    # A model of a few thousand weights on synthetic data: checks the plumbing in seconds (tests, CI).
    configs["debug"] = TrainConfig(
        name="debug", size="tiny", source="synthetic", vocab_size=64, seq_length=32, batch_size=16,
        model_overrides=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             max_position_embeddings=64, position_buckets=16),
        lr=1e-2, warmup_steps=4, steps=20, eval_every=10, eval_rows=32, eval_batch_size=32, save_every=10,
    )
    return configs


CONFIGS: dict[str, TrainConfig] = _named_configs()


def get_config(name: str, smoke: bool | None = None, **changes) -> TrainConfig:
    """A copy of a named config. With ``smoke`` (default: env DEBERTA_EDU_SMOKE=1), ``<name>-smoke`` if it exists."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; choose from {sorted(CONFIGS)}")
    if smoke is None:
        smoke = facts.smoke()
    if smoke and f"{name}-smoke" in CONFIGS:
        name = f"{name}-smoke"
    return CONFIGS[name].replace(**changes)


# ----------------------------------------------------------------------------- data


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


def prepare_data(cfg: TrainConfig):
    """(train_data, val_data, tokenizer) for cfg.source: packed BBC/large/any folder, or synthetic rows."""
    if cfg.source == "synthetic":
        return (synthetic_data(512, cfg.seq_length, cfg.vocab_size, seed=0),
                synthetic_data(64, cfg.seq_length, cfg.vocab_size, seed=1), None)
    from deberta_edu.data.packing import PackedDataset, build_dataset

    train_path, val_path, tokenizer = build_dataset(cfg.source, cfg.vocab_size, cfg.seq_length)
    return PackedDataset(train_path), PackedDataset(val_path), tokenizer


def _rows(data, index: torch.Tensor) -> torch.Tensor:
    """data[index] for a (N, L) tensor or any Dataset of (L,) rows (e.g. PackedDataset)."""
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
            if cfg.whole_word_masking:
                raise ValueError("whole_word_masking needs a tokenizer (its word_start_mask); pass tokenizer=")
            return cls(cfg.vocab_size)
        word_starts = tokenizer.word_start_mask() if cfg.whole_word_masking else None
        return cls(tokenizer.vocab_size, tokenizer.mask_id, tokenizer.pad_id, tuple(tokenizer.special_ids),
                   word_starts)

    def mask(self, rows: torch.Tensor, probability: float, g: torch.Generator):
        """(masked input ids, labels, attention mask) for a (B, L) batch of token ids."""
        masked, labels = mask_tokens(rows, vocab_size=self.vocab_size, mask_token_id=self.mask_id,
                                     special_token_ids=self.special_ids, mlm_probability=probability,
                                     generator=g, word_starts=self.word_starts)
        return masked, labels, (rows != self.pad_id).long()


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

    def global_batch(self, step: int):
        """(masked ids, labels, attention mask), each (batch_size, L): the whole step, every rank's rows."""
        epoch, i = divmod(step, self.steps_per_epoch)
        B = self.cfg.batch_size
        rows = _rows(self.data, self.order(epoch)[i * B : (i + 1) * B])  # (B, L)
        return self.spec.mask(rows, self.cfg.mlm_probability, generator(self.cfg.seed, "mask", epoch, step))

    def micro_batches(self, step: int) -> tuple[list[dict], list[int]]:
        """This rank's micro-batches (dicts of (b, L) tensors on its device) and their masked-token counts."""
        masked, labels, attention = self.global_batch(step)
        b, r = self.micro_size, self.world.rank
        batches, weights = [], []
        for m in range(self.cfg.grad_accum):
            part = slice((r * self.cfg.grad_accum + m) * b, (r * self.cfg.grad_accum + m + 1) * b)
            batch = {"input_ids": masked[part], "attention_mask": attention[part], "labels": labels[part]}
            batches.append({k: v.to(self.world.device) for k, v in batch.items()})
            weights.append(int((labels[part] != -100).sum()))
        return batches, weights


def mlm_loss(model, batch: dict) -> torch.Tensor:
    """Mean cross-entropy over the batch's masked tokens (the head runs on those tokens only)."""
    return model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"], only_masked_logits=True).loss


# ----------------------------------------------------------------------------- evaluation


class Evaluator:
    """MLM loss, accuracy and perplexity on masked held-out tokens; the same masks at every evaluation."""

    def __init__(self, data, cfg: TrainConfig, spec: MaskSpec, world: Distributed, precision: Precision):
        n = min(cfg.eval_rows, len(data))
        rows = _rows(data, torch.arange(n))  # (n, L) the first n rows: fixed across runs
        self.masked, self.labels, self.attention = spec.mask(rows, cfg.mlm_probability, generator(cfg.eval_seed))
        self.mine = torch.arange(world.rank, n, world.world_size)  # rank r evaluates rows r, r + W, ...
        self.cfg, self.world, self.precision = cfg, world, precision

    @torch.no_grad()
    def __call__(self, model: DebertaForMaskedLM) -> dict:
        was_training = model.training
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
        for chunk in self.mine.split(self.cfg.eval_batch_size):
            inputs, attention, labels = (t[chunk].to(self.world.device)
                                         for t in (self.masked, self.attention, self.labels))
            with self.precision.autocast():
                out = model(inputs, attention, labels=labels, only_masked_logits=True)
            targets = labels[labels != -100]  # (N,)
            logits = out.logits.float()  # (N, V)
            sums += torch.tensor([F.cross_entropy(logits, targets, reduction="sum").item(),
                                  (logits.argmax(-1) == targets).sum().item(), len(targets)], dtype=torch.float64)
        model.train(was_training)
        loss_sum, correct, count = all_reduce_sum(sums.to(self.world.device), self.world).tolist()
        loss = loss_sum / max(count, 1)
        return {"val_loss": loss, "val_accuracy": correct / max(count, 1), "val_perplexity": math.exp(min(loss, 80)),
                "val_tokens": int(count)}


# ----------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    model: DebertaForMaskedLM  # the trained model (unwrapped, eval mode)
    history: list[dict]  # every record of the run: {"kind": "train", ...} and {"kind": "eval", ...}
    metrics: dict  # the last evaluation ({} without validation data)
    out_dir: Path | None  # where model.safetensors, trainer_state.safetensors and metrics.jsonl are
    config: TrainConfig

    @property
    def path(self) -> Path | None:
        """The folder ``load_pretrained`` reads (model.safetensors + tokenizer.model)."""
        return self.out_dir

    @property
    def losses(self) -> list[float]:
        return [r["loss"] for r in self.history if r["kind"] == "train"]

    @property
    def tokens_per_s(self) -> float:
        """Training throughput over the run (all processes together)."""
        train = [r for r in self.history if r["kind"] == "train"]
        return train[-1]["tokens"] / train[-1]["train_time"] if train and train[-1]["train_time"] else 0.0


def _check_same_run(saved: dict, cfg: TrainConfig, state: Path) -> None:
    now = cfg.to_dict()
    diff = {k: (saved.get(k), now[k]) for k in now
            if k not in NON_TRAJECTORY_FIELDS and json.loads(json.dumps(now[k])) != saved.get(k)}
    if diff:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"cannot resume from {state}: it was trained with another config ({listed}). "
            "Resume with the same config, or start afresh in another --out folder."
        )


def train(
    cfg: TrainConfig,
    train_data,
    val_data=None,
    tokenizer=None,
    out_dir: str | Path | None = None,
    callback: Callable[[dict], None] | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> TrainResult:
    """Pretrain a DebertaForMaskedLM with MLM; one process, or one of several under ``torchrun``.

    train_data / val_data: a (N, L) LongTensor or a Dataset of (L,) rows (``PackedDataset``).
    out_dir: checkpoints (every ``cfg.save_every`` steps), metrics.jsonl and, at the end, the model
    (``save_pretrained``, with the tokenizer). resume: continue from out_dir's checkpoint, if any.
    callback(record): called with every train and eval record on rank 0 (e.g. ``plots.LivePlot``).
    """
    world = setup_distributed(device)
    out_dir = Path(out_dir) if out_dir is not None else None
    spec = MaskSpec.of(cfg, tokenizer)
    batches = Batches(train_data, cfg, spec, world)

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = DebertaForMaskedLM(cfg.model_config(spec.vocab_size)).to(world.device)
    model.train()
    if cfg.compile:
        compile_layers(model)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.adam_eps, cfg.adam_betas)
    precision = Precision(cfg.precision, world.device)
    evaluate = Evaluator(val_data, cfg, spec, world, precision) if val_data is not None else None

    start, elapsed, train_time = 0, 0.0, 0.0
    state_file = out_dir / STATE_FILE if out_dir is not None else None
    if resume and state_file is not None and state_file.exists():
        meta = load_training_state(state_file, model, optimizer, precision=precision, world=world)
        _check_same_run(json.loads(meta["train_config"]), cfg, state_file)
        start, elapsed, train_time = int(meta["step"]), float(meta["elapsed"]), float(meta["train_time"])
    else:
        torch.manual_seed(derive_seed(cfg.seed, "dropout", world.rank))  # each rank its own dropout stream
    logger = JsonlLogger(out_dir / LOG_FILE if out_dir is not None and world.is_main else None,
                         resume_step=start if start else None)
    if out_dir is not None and world.is_main:
        (out_dir / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    ddp = DistributedDataParallel(model, device_ids=[world.device] if world.device.type == "cuda" else None) \
        if world.enabled else model
    bar = progress_bar(cfg.steps, start, cfg.name, enabled=progress and world.is_main)
    shown = {}  # what the bar shows after the counts: loss, tokens/s, last held-out loss
    clock = time.perf_counter() - elapsed  # wall time continues across resumes

    def record(r: dict) -> None:
        if world.is_main:
            logger.log(r)
            if callback is not None:
                callback(r)

    def run_eval(step: int) -> None:  # every rank evaluates its share; rank 0 records
        if evaluate is not None:
            metrics = evaluate(model)
            record({"kind": "eval", "step": step, "tokens": step * cfg.tokens_per_step, **metrics})
            shown["val_loss"] = f"{metrics['val_loss']:.3f}"
            bar.set_postfix(shown)

    def save(step: int) -> None:  # every rank takes part (RNG states); rank 0 writes
        if state_file is not None:
            meta = {"train_config": cfg.to_dict(), "elapsed": repr(time.perf_counter() - clock),
                    "train_time": repr(train_time)}
            save_training_state(state_file, model, optimizer, step, precision=precision, world=world, metadata=meta)

    if start == 0 and cfg.eval_every:
        run_eval(0)
    window_loss, window_norm, window_steps, window_start = 0.0, 0.0, 0, time.perf_counter()
    for step in range(start, cfg.steps):  # `step` updates are done; this one makes update step + 1
        lr = cfg.lr * warmup_linear(step, cfg.warmup_steps, cfg.steps)
        set_lr(optimizer, lr)
        micro, weights = batches.micro_batches(step)
        out = optimizer_step(ddp, optimizer, micro, mlm_loss, weights, precision=precision,
                             max_grad_norm=cfg.max_grad_norm, world=world)
        window_loss, window_norm, window_steps = window_loss + out.loss, window_norm + out.grad_norm, window_steps + 1
        done = step + 1
        bar.update(1)
        if done % cfg.log_every == 0 or done == cfg.steps:
            loss = (window_loss / window_steps).item()  # waits for the GPU: the window's time is now known
            seconds = time.perf_counter() - window_start
            train_time += seconds
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"the training loss became {loss} at step {done} (lr {lr:.2e}); lower cfg.lr, raise "
                    "warmup_steps, or train in precision='fp32' / 'bf16'"
                )
            tokens_per_s = window_steps * cfg.tokens_per_step / seconds
            record({"kind": "train", "step": done, "loss": loss, "lr": lr,
                    "grad_norm": (window_norm / window_steps).item(), "tokens": done * cfg.tokens_per_step,
                    "tokens_per_s": tokens_per_s, "time": time.perf_counter() - clock, "train_time": train_time})
            shown.update(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
            bar.set_postfix(shown, refresh=False)
            window_loss, window_norm, window_steps = 0.0, 0.0, 0
        if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
            run_eval(done)
        if cfg.save_every and done % cfg.save_every == 0 and done != cfg.steps:
            save(done)
        if window_steps == 0:
            window_start = time.perf_counter()  # eval and checkpoint time are not training time
    if start < cfg.steps:  # (a finished run that is resumed only loads its state)
        run_eval(cfg.steps)
        save(cfg.steps)
    bar.close()
    if out_dir is not None and world.is_main:
        save_pretrained(model, out_dir, getattr(tokenizer, "path", None))
    evals = [r for r in logger.records if r["kind"] == "eval"]
    metrics = {k: v for k, v in evals[-1].items() if k.startswith("val_")} if evals else {}
    return TrainResult(model.eval(), logger.records, metrics, out_dir, cfg)


# ----------------------------------------------------------------------------- command line


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(cfg: TrainConfig, assignments: list[str]) -> TrainConfig:
    """``["lr=3e-4", "model.hidden_size=64"]``: TrainConfig fields, or DebertaConfig fields after ``model.``."""
    changes, model = {}, dict(cfg.model_overrides)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_fields = {f.name for f in dataclasses.fields(DebertaConfig)}
    for a in assignments:
        key, sep, value = a.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {a!r}")
        if key.startswith("model."):
            if key[6:] not in model_fields:
                raise ValueError(f"{key[6:]!r} is not a DebertaConfig field; choose from {sorted(model_fields)}")
            model[key[6:]] = _parse_value(value)
        elif key in fields:
            changes[key] = _parse_value(value)
        else:
            raise ValueError(f"{key!r} is not a TrainConfig field; choose from {sorted(fields)} or model.<field>")
    return cfg.replace(**changes, model_overrides=model)


def main(argv: list[str] | None = None) -> TrainResult | None:
    parser = argparse.ArgumentParser(prog="python -m deberta_edu.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="lesson4", help="a named config (see --list)")
    parser.add_argument("--list", action="store_true", help="print the named configs and exit")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--grad-accum", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--dropout", type=float)
    parser.add_argument("--precision", choices=PRECISIONS)
    parser.add_argument("--data", help="corpus (bbc, large, a folder) or 'synthetic'; default: the config's")
    parser.add_argument("--out", help="output folder (default: <data root>/checkpoints/<config>)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: this rank's GPU, else cpu)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any TrainConfig field, or model.<DebertaConfig field>; repeatable")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        print(f"{'name':22} {'model':20} {'data':>16} {'batch':>6} {'steps':>7} {'lr':>8}")
        for name, c in CONFIGS.items():
            print(f"{name:22} {c.size + '/' + c.variant:20} {c.source + '/L' + str(c.seq_length):>16} "
                  f"{c.batch_size:>6} {c.steps:>7} {c.lr:>8.0e}")
        return None

    try:
        cfg = get_config(args.config)
        flags = {"steps": args.steps, "batch_size": args.batch_size, "grad_accum": args.grad_accum, "lr": args.lr,
                 "seed": args.seed, "dropout": args.dropout, "precision": args.precision, "source": args.data}
        cfg = apply_overrides(cfg.replace(**{k: v for k, v in flags.items() if v is not None}), args.set)
        world = setup_distributed(args.device)
        if world.is_main:  # rank 0 builds (and caches) the data; the others then read the cache
            data = prepare_data(cfg)
        if world.enabled:
            dist.barrier()
        if not world.is_main:
            data = prepare_data(cfg)
        out = Path(args.out) if args.out else lesson_checkpoint(cfg.name)
        result = train(cfg, data[0], data[1], tokenizer=data[2], out_dir=out, resume=args.resume,
                       device=world.device, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if world.is_main:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
        print(f"{cfg.name}: {cfg.steps} steps, {result.tokens_per_s:,.0f} tokens/s; {metrics}\nsaved to {out}")
    return result


if __name__ == "__main__":
    main()
