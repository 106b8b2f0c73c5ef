"""What every training loop of the course shares: pretraining (``pretrain``) and fine-tuning (SiFT) alike.

    optimizer = build_optimizer(model, lr)                      AdamW, no decay on biases and LayerNorm
    precision = Precision("auto", device)                       bf16/fp16 autocast on GPU, fp32 on CPU
    for step in range(start, steps):
        set_lr(optimizer, lr * warmup_linear(step, warmup, steps))
        out = optimizer_step(model, optimizer, micro_batches, loss_fn, weights, precision=precision)

``optimizer_step`` does gradient accumulation, clipping, mixed precision and DistributedDataParallel
in one place, and gives the same update however the global batch is cut into micro-batches and ranks.
Seeds come from ``derive_seed`` (a hash of the purpose and the step), so data order and masks are pure
functions of (seed, step), and so is the learning rate under a step budget (a time budget sets it from the
seconds trained: ``pretrain``); what else a resumed run needs is in ``state``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from deberta_edu.data.batch import Batch

# ----------------------------------------------------------------------------- seeds


def derive_seed(*parts) -> int:
    """A 63-bit seed from any tuple of values: ``derive_seed(seed, "mask", epoch, step)``.

    Hashing (not ``seed + step``) keeps the streams of different purposes and steps unrelated.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(*parts) -> torch.Generator:
    """A CPU torch.Generator seeded by ``derive_seed(*parts)``."""
    g = torch.Generator()
    g.manual_seed(derive_seed(*parts))
    return g


# ----------------------------------------------------------------------------- processes


@dataclass
class Distributed:
    """Where this process stands: rank r of world_size processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device this machine has, or a ValueError that says what it has instead."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device name: use cpu, cuda or cuda:<n>") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "a CUDA build that sees no GPU"
            raise ValueError(f"device {str(device)!r}: this torch ({torch.__version__}, {build}) has no GPU to use; "
                             "use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif device.type not in ("cpu", "meta") and not (device.type == "mps" and torch.backends.mps.is_available()):
        raise ValueError(f"device {str(device)!r} is not available here: use cpu or cuda")
    return device


def setup_distributed(device: str | torch.device | None = None) -> Distributed:
    """Join the process group that ``torchrun`` describes (RANK, WORLD_SIZE, ...), or run alone.

    Backend: NCCL between GPUs, gloo between CPU processes (what CI tests with).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = check_device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)  # one GPU per process on this machine
    if world_size > 1 and device.type == "cuda" and device.index != local_rank:  # NCCL refuses two ranks on one GPU
        raise ValueError(f"device {str(device)!r} in process {rank} of {world_size} (LOCAL_RANK {local_rank}): under "
                         "torchrun each process uses its own GPU, cuda:<LOCAL_RANK>; pass --device cuda, or no device")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank, device)


def all_reduce_sum(x: torch.Tensor, world: Distributed) -> torch.Tensor:
    """Sum a tensor over all processes (returns it unchanged when running alone)."""
    if world.enabled:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def as_on_main(value: float, world: Distributed) -> float:
    """Rank 0's ``value`` in every process (``value`` itself when running alone): a decision every rank must take
    alike, such as when a time budget ends, read from one clock."""
    if world.enabled:
        agreed = torch.tensor([value], dtype=torch.float64, device=world.device)
        dist.broadcast(agreed, src=0)
        value = agreed.item()
    return value


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (names and checkpoints use this one)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


# ----------------------------------------------------------------------------- optimizer and schedule


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.01,
    eps: float = 1e-6,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    """AdamW as in the paper's Table 8 (eps 1e-6, weight decay 0.01).

    Weight decay pulls weights towards zero; it is meant for the matrices (and embedding tables).
    Biases and LayerNorm gains are vectors whose scale carries meaning, so they get none: the rule
    is simply ``p.ndim >= 2``.
    """
    params = [p for p in unwrap(model).parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, eps=eps, betas=betas)


def warmup_linear(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor for update number ``step`` (0-based): linear warmup, then linear decay to 0.

    Warmup rises as (step + 1) / warmup_steps, so the first update already moves the weights.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def one_cycle(progress: float, warmup_fraction: float) -> float:
    """Learning-rate factor at ``progress`` in [0, 1] of a budget: linear warmup, then linear decay to 0.

    The schedule of a run whose length is a budget of time (Izsak et al. 2021; Geiping & Goldstein 2022):
    it reaches zero exactly when the budget is spent, however many steps that turns out to be.
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup_fraction:
        return max(progress / warmup_fraction, 1e-3)
    return (1.0 - progress) / (1.0 - warmup_fraction)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def compile_layers(model: nn.Module) -> None:
    """torch.compile every encoder layer in place (names and checkpoints unchanged).

    A graph that fails to compile runs eagerly (dynamo's ``suppress_errors``), so a run goes on either way.
    """
    import torch._dynamo

    torch._dynamo.reset()  # each model compiles afresh, never stopped by the graphs of previous ones
    torch._dynamo.config.suppress_errors = True
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for layer in unwrap(model).deberta.encoder.layers:
        layer.compile()


# ----------------------------------------------------------------------------- precision


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class Precision:
    """Mixed precision: autocast to bf16 or fp16 on a GPU, plain float32 on a CPU (``"auto"``).

    fp16 has a narrow exponent range, so small gradients underflow to zero; a GradScaler multiplies
    the loss before backward and divides the gradients after, and skips a step whose gradients
    overflowed. bf16 has float32's range and needs no scaler. A disabled scaler passes everything
    through, so the training loop is the same code in every precision.
    """

    def __init__(self, precision: str, device: torch.device):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        device = torch.device(device)
        if precision == "auto":
            if device.type == "cuda":
                # native bf16 only (compute capability 8+): torch counts a T4's or V100's emulated bf16 as support
                precision = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
            else:
                precision = "fp32"
        self.name = precision
        self.device_type = device.type
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def __repr__(self) -> str:
        return f"Precision({self.name!r}, {self.device_type})"


# ----------------------------------------------------------------------------- one optimizer step


@dataclass
class StepOutput:
    loss: torch.Tensor  # () the global batch's loss, the same number on every rank
    grad_norm: torch.Tensor  # () before clipping


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[Batch],
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    weights: list[float],
    *,
    precision: Precision,
    max_grad_norm: float = 1.0,
    world: Distributed | None = None,
) -> StepOutput:
    r"""One update from a global batch cut into micro-batches (this rank's share of it).

    ``loss_fn(model, batch)`` returns the mean loss over the batch's ``weight`` items (its
    ``num_targets``: masked tokens for MLM, examples for classification). The update follows the mean
    over *every* item of the global batch:

    $$\mathcal{L} = \sum_{m} \frac{w_m}{W}\,\bar\ell_m, \qquad W = \sum_{\text{ranks}}\sum_m w_m$$

    so 1 x 32, 4 x 8 or 2 ranks x 2 x 8 sequences give the same gradients (to float rounding).
    DistributedDataParallel *averages* gradients over ranks, hence the factor world_size below.
    """
    # one process: the model's own device (a CPU loss_sum would refuse a CUDA share's +=)
    world = world or Distributed(device=next(unwrap(model).parameters()).device)
    total = float(sum(weights))
    if world.enabled:  # every rank's items (one process: no tensor, no device sync)
        total = all_reduce_sum(torch.tensor(total, device=world.device), world).item()
    total = max(total, 1.0)
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=world.device)
    for i, (batch, w) in enumerate(zip(micro_batches, weights, strict=True)):
        last = i == len(micro_batches) - 1
        # Under DDP, only the last micro-batch's backward all-reduces the (accumulated) gradients.
        no_sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not last else None
        with no_sync or contextlib.nullcontext():
            with precision.autocast():
                loss = loss_fn(model, batch)
            share = loss.float() * (w / total)
            precision.scaler.scale(share * world.world_size).backward()
        loss_sum += share.detach()
    precision.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    grad_norm = torch.nn.utils.clip_grad_norm_(unwrap(model).parameters(), max_grad_norm)
    precision.scaler.step(optimizer)  # skipped when fp16 gradients overflowed
    precision.scaler.update()
    return StepOutput(loss=all_reduce_sum(loss_sum, world), grad_norm=grad_norm.detach())


# ----------------------------------------------------------------------------- progress


def progress_bar(total: int, initial: int = 0, desc: str = "training", enabled: bool = True) -> tqdm:
    """A tqdm bar over optimizer steps (ETA from tqdm's own rate); silent when ``enabled`` is False."""
    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True)

