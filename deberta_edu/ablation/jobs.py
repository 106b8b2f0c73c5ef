"""Lesson 6, one run and many: pretrain, evaluate, probe, fine-tune; one JSON file per run, written as it ends.

    Job            one pretraining run (variant, seed, rate) and everything measured on it
    run_job        the run itself; returns (and writes, atomically) runs/<variant>-seed<s>-lr<rate>.json
    finished       the runs already in a folder whose settings match (a resumed command skips them)
    run_jobs       jobs in fresh processes (several workers) or one by one in this one (one worker: a GPU, or
                   --workers 1); stops launching new ones at a deadline
    unigram_baseline   the held-out loss of word frequencies alone: the plateau before context is used

A run cut short leaves no file, so a second command redoes exactly the runs that are missing.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch

from deberta_edu import files
from deberta_edu.training import mlm_data, pretrain
from deberta_edu.training.configs import TrainConfig
from deberta_edu.training.evaluate import unigram_baseline  # noqa: F401 (jobs.unigram_baseline, used by run)

from . import metrics
from .plan import Scale, run_cost, run_id

RUNS_DIR = "runs"
SCHEMA_RUN = "deberta_edu/ablation-run/2"


@dataclass
class Job:
    """One pretraining run and its measurements: what a worker process needs (all of it picklable)."""

    variant: str
    seed: int
    lr: float
    cfg: TrainConfig
    scale: Scale
    out_dir: str | None  # the report folder; the run's JSON goes to out_dir/runs/ (None: not written)
    sentiment_file: str | None = None
    progress: bool = False
    finetune_examples: int | None = None  # cut the fine-tuning (the smoke check); None: the scale's

    @property
    def id(self) -> str:
        return run_id(self.variant, self.seed, self.lr)

    def key(self) -> dict:
        """What decides a run's result: a saved run is reused only when this matches."""
        s = self.scale
        return files.as_saved({"cfg": self.cfg.to_dict(), "finetune": s.finetune, "topics": s.topics,
                               "probe": s.probe, "eval_examples": s.eval_examples})

    @property
    def path(self) -> Path | None:
        return Path(self.out_dir, RUNS_DIR, f"{self.id}.json") if self.out_dir else None


def _write(path: Path, record: dict) -> None:
    """Write a JSON file whole or not at all (a kill mid-write leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _timings(history: list[dict], cfg: TrainConfig) -> dict:
    """The seconds of the first train record's window (compile and warm-up, a fixed cost), the median seconds
    per step of the others (of an even count, the larger middle one: a fit that errs towards ending early), the
    first held-out evaluation (compilation of the eval-mode graphs, warm-up: a fixed cost too) and the longest of
    the others (in the smoke check, one at the end; in no step time: a run's evaluation at a step that is not
    logged falls inside the next window, so a fit counts part of it twice, erring early)."""
    train = [r for r in history if r["kind"] == "train"]
    if not train:
        return {}
    steps = [train[0]["step"]] + [b["step"] - a["step"] for a, b in zip(train, train[1:], strict=False)]
    per_step = [cfg.tokens_per_step / r["tokens_per_s"] for r in train]
    later = sorted(per_step[1:]) or per_step
    evals = [r["eval_s"] for r in history if r["kind"] == "eval" and "eval_s" in r] or [0.0]
    return {"first_window_s": per_step[0] * steps[0], "step_s": later[len(later) // 2],
            "first_eval_s": evals[0], "eval_s": max(evals[1:], default=evals[0])}


def _measure(job: Job, model, tokenizer) -> dict:
    """The probes and the sentiment fine-tuning of a pretrained model."""
    s = job.scale
    splits = metrics.load_sentiment(job.sentiment_file, s.eval_examples)
    settings = dict(s.finetune)
    if job.finetune_examples:
        settings["max_train_examples"] = job.finetune_examples
    return {"position_probe": metrics.position_probe(model, tokenizer, s.probe),
            "topic_probe": metrics.topic_probe(model, tokenizer, metrics.topic_data(s.topics), s.topics,
                                               job.cfg.seq_length),
            "sentiment": metrics.sentiment(model, tokenizer, splits, settings, job.seed, s.device)}


def run_job(job: Job) -> dict:
    """Pretrain one model, evaluate it on held-out text, probe it, fine-tune it; the record, also on disk."""
    if job.scale.threads:
        torch.set_num_threads(job.scale.threads)
    start = time.perf_counter()
    cfg = job.cfg
    record = {"schema": SCHEMA_RUN, "run": job.id, "variant": job.variant, "seed": job.seed, "lr": job.lr,
              "key": job.key(), "steps": cfg.steps, "tokens": cfg.steps * cfg.tokens_per_step,
              "flops_per_token": run_cost(cfg), "flops": run_cost(cfg) * cfg.steps * cfg.tokens_per_step}
    print(f"[{job.id}] {cfg.steps} steps x {cfg.tokens_per_step:,} tokens", flush=True)
    train_data, val_data, tokenizer = mlm_data.prepare_data(cfg)
    try:
        result = pretrain.train(cfg.replace(compile=job.scale.compile), train_data, val_data, tokenizer=tokenizer,
                                device=job.scale.device, progress=job.progress)
        pretrain_s = time.perf_counter() - start
        measured = _measure(job, result.model, tokenizer)  # its fine-tuning may diverge too
    except FloatingPointError as err:  # a diverged run is a result too: written, and the others go on
        print(f"[{job.id}] failed: {err}", flush=True)
        record.update(failed=str(err), wall_s=time.perf_counter() - start)
    else:
        record.update(
            parameters=sum(p.numel() for p in result.model.parameters()), metrics=result.metrics,
            evals=[r for r in result.history if r["kind"] == "eval"],
            train=[{k: r[k] for k in ("step", "tokens", "loss", "lr")} for r in result.history
                   if r["kind"] == "train"],
            **measured, **_timings(result.history, cfg), pretrain_s=pretrain_s,
            metrics_s=time.perf_counter() - start - pretrain_s, wall_s=time.perf_counter() - start)
        print(f"[{job.id}] held-out loss {result.metrics['val_loss']:.4f}, sentiment "
              f"{measured['sentiment']['test']:.3f}; {record['wall_s']:.0f} s", flush=True)
    if job.path is not None:
        _write(job.path, record)
    return record


def finished(jobs: list[Job]) -> dict[str, dict]:
    """{run id: record} of the jobs whose JSON exists; a file from other settings is refused, not overwritten."""
    done = {}
    for job in jobs:
        if job.path is None or not job.path.exists():
            continue
        record = json.loads(job.path.read_text(encoding="utf-8"))
        if record.get("key") != job.key():
            raise ValueError(f"{job.path} holds a run made with other settings than this command's; move it away "
                             "(or write into another folder) rather than mixing two experiments")
        done[job.id] = record
    return done


def _exit_with_parent(parent: int) -> None:
    """A worker's initializer: end the worker when its parent is gone, so a killed run leaves no orphans."""

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_jobs(jobs: list[Job], workers: int = 1, deadline: float | None = None, predict=None,
             on_done=None) -> dict[str, dict]:
    """Run the jobs not yet finished, ``workers`` at a time; {run id: record} of all that are finished.

    ``deadline`` (a time.monotonic() value) and ``predict(job) -> seconds``: a job is launched only when it is
    predicted to end before the deadline. ``on_done(record)`` is called in this process as each one ends.
    """
    done = finished(jobs)
    todo = [j for j in jobs if j.id not in done]

    def fits(job):
        return deadline is None or predict is None or time.monotonic() + predict(job) <= deadline

    def finish(record):
        done[record["run"]] = record
        if on_done is not None:
            on_done(record)

    if workers <= 1:
        for job in todo:
            if not fits(job):
                print(f"[{job.id}] not started: predicted to end after the deadline", flush=True)
                break
            finish(run_job(job))
        return done
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        running = set()
        while todo or running:
            while todo and len(running) < workers and fits(todo[0]):
                running.add(pool.submit(run_job, todo.pop(0)))
            if not running:
                print(f"[{todo[0].id}] and {len(todo) - 1} more not started: predicted to end after the deadline",
                      flush=True)
                break
            ended, running = wait(running, return_when=FIRST_COMPLETED)
            for future in ended:
                finish(future.result())
    return done

