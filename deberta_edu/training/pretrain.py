"""Masked-language-model pretraining (paper §2.2, eq. 1; appendix A.2, A.3), from a notebook or the shell.

Every step takes a global batch of packed rows ``[CLS] ... [SEP]``, hides 15% of the tokens
(``mask_tokens``: 80% [MASK], 10% random, 10% unchanged) and trains the model to predict them:

    loss = mean over the masked tokens of  -log p(original token | masked sequence)

with AdamW (eps 1e-6, weight decay 0.01), a linear warmup then linear decay of the learning rate,
and gradient clipping at 1.0, as in the paper's Table 8 (at a much smaller scale).

Data order and masks are functions of the seed and the step (``mlm_data``), and the random state that
drives dropout is saved in every checkpoint (``state``, one per rank), so a killed run with a step budget
resumes bit-exactly. With a time budget (``budget_seconds``: lesson 4, the course model) the learning rate
follows the seconds trained and the clock ends the run: a resumed run keeps its schedule from the seconds the
state records, but not the exact rate of each step (two uncut runs differ the same way). Named runs: ``configs``.

From Python (a notebook; ``get_config`` comes from ``configs``, ``prepare_data`` from ``mlm_data``)::

    cfg = get_config("lesson4")
    train_data, val_data, tokenizer = prepare_data(cfg)
    result = train(cfg, train_data, val_data, tokenizer=tokenizer, out_dir=lesson_checkpoint("lesson4"))

From the shell (``torchrun --nproc_per_node=N -m deberta_edu.pretrain ...`` for several GPUs)::

    python -m deberta_edu.pretrain --list
    python -m deberta_edu.pretrain --config lesson4 [--steps N] [--out DIR] [--resume] [--set model.hidden_size=64]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from deberta_edu import files
from deberta_edu.facts import CONFIG_FILE, LOG_FILE, STATE_FILE
from deberta_edu.model.checkpoint import lesson_checkpoint, save_pretrained
from deberta_edu.model.emd import DebertaForMaskedLM

from .configs import TrainConfig, apply_overrides, check_same_run, config_table, get_config
from .engine import (
    PRECISIONS,
    Distributed,
    Precision,
    StepOutput,
    as_on_main,
    build_optimizer,
    compile_layers,
    derive_seed,
    one_cycle,
    optimizer_step,
    progress_bar,
    set_lr,
    setup_distributed,
    warmup_linear,
)
from .evaluate import Evaluator, mlm_loss
from .mlm_data import Batches, MaskSpec, prepare_data
from .state import LOCK_NAME, JsonlLogger, check_output_folder, load_training_state, save_training_state

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


class _Window:
    """The steps since the last train record: their summed loss and gradient norm, and when they began."""

    def __init__(self):
        self.loss, self.grad_norm, self.steps, self.start = 0.0, 0.0, 0, time.perf_counter()

    def add(self, out: StepOutput) -> None:
        self.loss, self.grad_norm = self.loss + out.loss, self.grad_norm + out.grad_norm  # () tensors
        self.steps += 1


class _Run:
    """One pretraining run's moving parts: model, optimizer, evaluator, log, progress bar and clocks.

    Its methods are what the loop in ``train`` does besides stepping: record, evaluate, save, finish.
    """

    def __init__(self, cfg: TrainConfig, spec: MaskSpec, world: Distributed, val_data, out_dir: Path | None,
                 *, callback: Callable[[dict], None] | None, resume: bool, progress: bool):
        self.cfg, self.world, self.out_dir, self.callback = cfg, world, out_dir, callback
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.model = DebertaForMaskedLM(cfg.model_config(spec.vocab_size)).to(world.device)
        self.model.train()
        if cfg.compile:
            compile_layers(self.model)
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay, cfg.adam_eps, cfg.adam_betas)
        self.precision = Precision(cfg.precision, world.device)
        self.evaluator = None if val_data is None else Evaluator(val_data, cfg, spec, world, self.precision)

        self.state_file = out_dir / STATE_FILE if out_dir is not None else None
        if resume and self.state_file is not None and self.state_file.exists():
            self.start, elapsed, self.train_time = self._restore()
        else:
            if resume and out_dir is not None and world.is_main:  # cut before its first checkpoint
                print(f"--resume: no checkpoint in {out_dir} yet; starting at step 0", file=sys.stderr)
            self.start, elapsed, self.train_time = 0, 0.0, 0.0
            torch.manual_seed(derive_seed(cfg.seed, "dropout", world.rank))  # a dropout stream per rank
        writes = out_dir is not None and world.is_main
        self.logger = JsonlLogger(out_dir / LOG_FILE if writes else None, resume_step=self.start or None)
        if writes:
            (out_dir / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

        cuda = world.device.type == "cuda"
        self.ddp = DistributedDataParallel(self.model, device_ids=[world.device] if cuda else None) \
            if world.enabled else self.model
        self.bar = progress_bar(cfg.steps, self.start, cfg.name, enabled=progress and world.is_main)
        self.shown = {}  # what the bar shows after the counts: loss, tokens/s, last held-out loss
        self.clock = time.perf_counter() - elapsed  # wall time continues across resumes

    def _restore(self) -> tuple[int, float, float]:
        """Load the checkpoint in out_dir; its (step, wall time, training time)."""
        def same_run(meta):  # before any weight is loaded
            try:
                saved = json.loads(meta["train_config"])
            except (KeyError, json.JSONDecodeError):
                raise ValueError(f"{self.state_file} has no readable train_config in its metadata") from None
            check_same_run(saved, self.cfg, self.state_file)

        meta = load_training_state(self.state_file, self.model, self.optimizer, precision=self.precision,
                                   world=self.world, check=same_run)
        return int(meta["step"]), float(meta["elapsed"]), float(meta["train_time"])

    def spent(self, window: _Window) -> float:
        """Training time so far, the open window included (what a time budget counts). Under torchrun every rank
        reads rank 0's, so all stop at the same step with the same rate (each on its own clock, they did not)."""
        return as_on_main(self.train_time + (time.perf_counter() - window.start if window.steps else 0.0), self.world)

    def lr_factor(self, step: int, spent: float | None) -> float:
        """The schedule: warmup then linear decay to zero, over the steps or over the time budget (``spent``)."""
        if spent is None:  # a budget of steps
            return warmup_linear(step, self.cfg.warmup_steps, self.cfg.steps)
        return one_cycle(spent / self.cfg.budget_seconds, self.cfg.warmup_fraction)

    def record(self, r: dict) -> None:
        if self.world.is_main:
            self.logger.log(r)
            if self.callback is not None:
                self.callback(r)

    def log_train(self, done: int, lr: float, window: _Window) -> None:
        """The train record of the window that ends with update ``done``."""
        loss = (window.loss / window.steps).item()  # waits for the GPU: the window's time is now known
        seconds = time.perf_counter() - window.start
        self.train_time += seconds
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {loss} at step {done} (lr {lr:.2e}); lower cfg.lr, raise "
                "warmup_steps, or train in precision='fp32' / 'bf16'"
            )
        tokens_per_s = window.steps * self.cfg.tokens_per_step / seconds
        self.record({"kind": "train", "step": done, "loss": loss, "lr": lr,
                     "grad_norm": (window.grad_norm / window.steps).item(),
                     "tokens": done * self.cfg.tokens_per_step, "tokens_per_s": tokens_per_s,
                     "time": time.perf_counter() - self.clock, "train_time": self.train_time})
        self.shown.update(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
        self.bar.set_postfix(self.shown, refresh=False)

    def evaluate(self, step: int) -> None:
        """Every rank evaluates its share; rank 0 records."""
        if self.evaluator is not None:
            start = time.perf_counter()
            metrics = self.evaluator(self.model)
            self.record({"kind": "eval", "step": step, "tokens": step * self.cfg.tokens_per_step, **metrics,
                         "eval_s": time.perf_counter() - start})  # what a FLOP budget must leave time for
            self.shown["val_loss"] = f"{metrics['val_loss']:.3f}"
            self.bar.set_postfix(self.shown)

    def save(self, step: int) -> None:
        """Every rank takes part (RNG states); rank 0 writes."""
        if self.state_file is not None:
            meta = {"train_config": self.cfg.to_dict(), "elapsed": repr(time.perf_counter() - self.clock),
                    "train_time": repr(self.train_time)}
            save_training_state(self.state_file, self.model, self.optimizer, step, precision=self.precision,
                                world=self.world, metadata=meta)

    def finish(self, tokenizer) -> TrainResult:
        """Close the bar, save the model (with the tokenizer) and return what the run made."""
        self.bar.close()
        if self.out_dir is not None and self.world.is_main:
            save_pretrained(self.model, self.out_dir, getattr(tokenizer, "path", None))
        evals = [r for r in self.logger.records if r["kind"] == "eval"]
        metrics = {k: v for k, v in evals[-1].items() if k.startswith("val_")} if evals else {}
        return TrainResult(self.model.eval(), self.logger.records, metrics, self.out_dir, self.cfg)


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
    hold = contextlib.nullcontext()
    if out_dir is not None and world.is_main:  # one trainer per output folder: a second one is refused
        hold = files.exclusive(out_dir / LOCK_NAME, f"the output folder {out_dir}")
    with hold:
        run = _Run(cfg, spec, world, val_data, out_dir, callback=callback, resume=resume, progress=progress)
        _loop(run, cfg, batches, world)
        return run.finish(tokenizer)


def _loop(run: _Run, cfg: TrainConfig, batches: Batches, world: Distributed) -> None:
    """The steps from ``run.start`` to the end (or the time budget), with logging, evaluation and saving."""
    if run.start == 0 and cfg.eval_every:
        run.evaluate(0)
    window = _Window()
    last, lr = run.start, 0.0
    for step in range(run.start, cfg.steps):  # `step` updates are done; this one makes update step + 1
        spent = run.spent(window) if cfg.budget_seconds is not None else None  # one reading (a broadcast) per step
        if spent is not None and spent >= cfg.budget_seconds:
            break  # the time budget is spent (checked between steps; the schedule has reached zero)
        lr = cfg.lr * run.lr_factor(step, spent)
        set_lr(run.optimizer, lr)
        micro, weights = batches.micro_batches(step)
        window.add(optimizer_step(run.ddp, run.optimizer, micro, mlm_loss, weights, precision=run.precision,
                                  max_grad_norm=cfg.max_grad_norm, world=world))
        done = last = step + 1
        run.bar.update(1)
        logged = done % cfg.log_every == 0 or done == cfg.steps
        if logged:
            run.log_train(done, lr, window)
        if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
            run.evaluate(done)
        if cfg.save_every and done % cfg.save_every == 0 and done != cfg.steps:
            run.save(done)
        if logged:
            window = _Window()  # it starts after this step's eval and checkpoint (an unlogged step's fall inside it)
    if last > run.start:  # (a finished run that is resumed only loads its state)
        if window.steps:  # a time budget ended between two records
            run.log_train(last, lr, window)
        run.evaluate(last)
        run.save(last)


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> TrainResult | None:
    parser = argparse.ArgumentParser(prog="python -m deberta_edu.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="lesson4",
                        help="a named config (see --list); with DEBERTA_EDU_SMOKE=1 its smoke size, <name>-smoke")
    parser.add_argument("--list", action="store_true", help="print the named configs and exit")
    parser.add_argument("--steps", type=int, help="train this many steps, the schedule tied to them (in place of "
                                                   "the config's token or time budget)")
    for flag, kind, what in (("batch-size", int, "sequences per step, all processes"), ("lr", float, "peak rate"),
                             ("grad-accum", int, "micro-batches per step"), ("dropout", float, "every dropout"),
                             ("seed", int, "data order, masks and initial weights")):
        parser.add_argument(f"--{flag}", type=kind, help=f"{what} (default: the config's)")
    parser.add_argument("--precision", choices=PRECISIONS, help="auto: bf16 or fp16 on a GPU, fp32 on a CPU (default: the config's)")
    parser.add_argument("--data", help="corpus (bbc, large, a folder) or 'synthetic'; default: the config's")
    parser.add_argument("--out", help="output folder (default: <data root>/checkpoints/<config>)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true", help="start afresh in an --out that holds a run")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: this rank's GPU, else cpu)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any TrainConfig field, or model.<DebertaConfig field>; repeatable")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (a log file), data building too")
    args = parser.parse_args(argv)
    if args.list:
        print(config_table())
        return None

    try:
        cfg = get_config(args.config)
        flags = {"steps": args.steps, "batch_size": args.batch_size, "grad_accum": args.grad_accum, "lr": args.lr,
                 "seed": args.seed, "dropout": args.dropout, "precision": args.precision, "source": args.data}
        if args.steps is not None:  # steps asked for replace a budget (which would set the steps, or cut them)
            cfg = cfg.replace(budget_tokens=None, budget_seconds=None)
        cfg = apply_overrides(cfg, args.set, **flags)
        world = setup_distributed(args.device)
        out = Path(args.out) if args.out else lesson_checkpoint(cfg.name)
        if world.is_main:  # the folder checked before any work; rank 0 builds (and caches) the data, the others
            check_output_folder(out, args.resume, args.overwrite)  # then read the cache
            data = prepare_data(cfg, progress=not args.no_progress)
        if world.enabled:
            dist.barrier()
        if not world.is_main:
            data = prepare_data(cfg, progress=not args.no_progress)
        result = train(cfg, data[0], data[1], tokenizer=data[2], out_dir=out, resume=args.resume,
                       device=world.device, progress=not args.no_progress)
    except (ValueError, TypeError, OSError, RuntimeError, FloatingPointError) as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:  # Ctrl-C: the last checkpoint holds the run
        sys.exit("interrupted: run the same command again with --resume to go on from the last checkpoint (step 0 "
                 "if none was saved yet)")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if world.is_main:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
        done = max((r["step"] for r in result.history if r.get("kind") == "train"), default=0)
        print(f"{cfg.name}: {done} steps, {result.tokens_per_s:,.0f} tokens/s; {metrics}\nsaved to {out}")
    return result


if __name__ == "__main__":
    main()
