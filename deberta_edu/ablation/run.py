"""Lesson 6, the runs: pretrain each variant, evaluate it, fine-tune it; then the whole reproduction.

    for variant in bert, deberta, no_emd, no_c2p, no_p2c:     one TrainConfig, only the variant differs
        model = pretrain(variant)                             same rows, same masks, same steps, same seed
        held-out MLM loss, accuracy, perplexity               fixed masks on held-out text (pretrain.Evaluator)
        fine-tune on sentiment with several seeds             plain fine-tuning (λ = 0), test accuracy mean ± std

    Job, run_job, run_jobs one run and its fine-tuning; every run, the costliest first, in fresh processes on the CPU
    unigram_baseline       the held-out loss of word frequencies alone: the plateau before context is used
    run_ablation           plan → runs → results.json (with provenance: machine, versions, commit) → report
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from deberta_edu.facts import PROJECT_ROOT
from deberta_edu.training import mlm_data, pretrain
from deberta_edu.training.configs import TrainConfig
from deberta_edu.training.evaluate import unigram_baseline
from deberta_edu.training.finetune import FinetuneConfig, finetune

from . import plan
from .plan import LABELS, NOISE_RUN, VARIANTS, Scale
from .report import PAPER, SCHEMA, compare_with_paper, write_report

JOB_FILE = "job.json"  # one per run in the work folder, so a report can be rebuilt without retraining


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


def _finetune_seeds(job: Job, model, tokenizer) -> dict:
    """Fine-tune the pretrained model once per seed; dev and test accuracy of each, and their summary."""
    splits = load_sentiment(job.sentiment_file, job.eval_examples)
    dev, test = [], []
    for seed in job.finetune_seeds:
        cfg = FinetuneConfig(**job.finetune, seed=seed, device=job.device, progress=job.progress)
        r = finetune(model, splits, tokenizer, cfg)
        dev.append(r.dev_accuracy)
        test.append(r.test_accuracy)
    mean, std = _mean_std(test)
    return {"seeds": list(job.finetune_seeds), "dev": dev, "test": test, "test_mean": mean, "test_std": std,
            "train_examples": min(len(splits["train"]), job.finetune.get("max_train_examples") or 10**9),
            "dev_examples": len(splits["dev"]), "test_examples": len(splits["test"])}


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
    tuned = _finetune_seeds(job, result.model, tokenizer)
    wall = time.perf_counter() - start
    print(f"[{job.run}] fine-tuned: test accuracy {tuned['test_mean']:.3f} ± {tuned['test_std']:.3f}; "
          f"{wall:.0f} s in all", flush=True)
    out = {
        "run": job.run, "variant": job.cfg.variant, "seed": job.cfg.seed, "key": job.key(),
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "model_config": result.model.config.to_dict(), "history": result.history, "metrics": result.metrics,
        "tokens": job.cfg.steps * job.cfg.tokens_per_step, "tokens_per_s": result.tokens_per_s,
        "pretrain_s": pretrain_s, "finetune_s": wall - pretrain_s, "wall_s": wall, "finetune": tuned,
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
    todo = sorted((j for j in jobs if not done.get(j.run)), key=lambda j: -plan.run_cost(j.cfg))
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


# ----------------------------------------------------------------------------- provenance


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
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "deberta_edu"], cwd=PROJECT_ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        info["git_commit"] = (commit + ("+uncommitted changes in deberta_edu" if dirty else "")) or None
    return info


# ----------------------------------------------------------------------------- the whole reproduction


def _on_this_machine(scale: str | Scale, **changes) -> Scale:
    """The scale with the caller's changes (None: keep the scale's); a GPU scale checks it has one."""
    if isinstance(scale, str):
        scale = plan.get_scale(scale)
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
    return scale


def _results(scale: Scale, configs: dict[str, TrainConfig], runs: dict[str, dict], **extra) -> dict:
    """What results.json holds, the comparison with the paper aside."""
    shared = configs["deberta"].to_dict()
    shared.pop("name")
    shared.pop("variant")
    results = {
        "schema": SCHEMA, "scale": scale.name, "cpu_scale": scale.cpu_scale, "description": scale.description,
        "command": extra["command"], "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hardware": _hardware(scale.device, scale.workers, scale.threads), "software": _software(),
        "wall_time_s": extra["wall_time_s"], "max_minutes": scale.max_minutes, "train_config": shared,
        "tokens_per_run": configs["deberta"].steps * configs["deberta"].tokens_per_step,
        "finetune_config": {**scale.finetune, "seeds": list(scale.finetune_seeds), "eval_examples": scale.eval_examples,
                            "adversarial_lambda": 0.0},
        "calibration": extra["calibration"],
        "variants": {v: summarize_run(runs[v]) for v in VARIANTS},
        "noise": summarize_run(runs[NOISE_RUN]) if NOISE_RUN in runs else None,
        "unigram_baseline": extra["unigram_baseline"],
        "paper": PAPER,
    }
    if any(r.get("reused") for r in runs.values()):
        results["reused_runs"] = sorted(run for run, r in runs.items() if r.get("reused"))
    return results


def run_ablation(scale: str | Scale, out_dir: str | Path, *, steps: int | None = None, device: str | None = None,
                 workers: int | None = None, threads: int | None = None, compile: bool | None = None,
                 work_dir: str | Path | None = None, sentiment_file: str | Path | None = None, reuse: bool = False,
                 progress: bool | None = None, command: str | None = None) -> dict:
    """Pretrain the five variants (and the noise run), fine-tune each, and write the report into ``out_dir``.

    Returns what results.json holds. ``steps`` fixes the number of steps (skipping the GPU time fit);
    ``reuse`` takes runs already finished in the work folder with the same settings (to rebuild a report).
    """
    start = time.perf_counter()
    scale = _on_this_machine(scale, device=device, workers=workers, threads=threads, compile=compile,
                             work_dir=work_dir)
    progress = (scale.workers <= 1 and sys.stderr.isatty()) if progress is None else progress
    calibration = None
    if steps is None and scale.pretrain_budget_s:
        calibration = plan.fit_steps(scale, plan.variant_configs(scale), scale.device)
        steps = calibration["steps"]
    configs = plan.variant_configs(scale, steps)
    plan.check_only_variant_differs(configs)
    jobs = [Job(run, cfg, scale.finetune, scale.finetune_seeds, scale.eval_examples, scale.device,
                scale.threads, scale.compile, str(scale.work_dir) if scale.work_dir else None,
                str(sentiment_file) if sentiment_file else None, progress)
            for run, cfg in configs.items()]
    runs = run_jobs(jobs, scale.workers, reuse)
    baseline = unigram_baseline(configs["deberta"])
    results = _results(scale, configs, runs, calibration=calibration, unigram_baseline=baseline,
                       command=command or f"run_ablation({scale.name!r}, {str(out_dir)!r})",
                       wall_time_s=time.perf_counter() - start)
    results["comparison"] = compare_with_paper(results)
    write_report(results, out_dir)
    return results


# ----------------------------------------------------------------------------- what a run says


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
    train = [r for r in job["history"] if r["kind"] == "train"]
    evals = [r for r in job["history"] if r["kind"] == "eval"]
    losses = [r["loss"] for r in train]
    tenth = max(1, len(losses) // 10)
    return {
        "label": label, "variant": job["variant"], "seed": job["seed"], "parameters": job["parameters"],
        "model_config": job["model_config"],
        **{k: job["metrics"][k] for k in ("val_loss", "val_accuracy", "val_perplexity", "val_tokens")},
        "val_loss_start": evals[0]["val_loss"] if evals else None,
        "train_loss_first": statistics.mean(losses[:tenth]),
        "train_loss_last": statistics.mean(losses[-tenth:]),
        "all_losses_finite": all(math.isfinite(x) for x in losses + [r["val_loss"] for r in evals]),
        **{k: job[k] for k in ("tokens", "tokens_per_s", "pretrain_s", "finetune_s", "wall_s", "finetune")},
        "curves": {
            "train": _subsample(train, ("step", "tokens", "loss")),
            "eval": _subsample(evals, ("step", "tokens", "val_loss", "val_accuracy", "val_perplexity")),
        },
    }

