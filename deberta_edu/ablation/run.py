"""Lesson 6, the whole reproduction: smoke check, plan, baselines, the grid, the other seeds, the report.

    run_ablation(scale, out_dir)
        smoke check (on a GPU unless --no-smoke-first, or   every variant a few steps: stop here on any failure
        while the budget is still to be fitted)
        plan.json        the FLOP budget (fixed by the scale, or fitted to the measured step times) and provenance;
                         a second command in the same folder reads it back, so resumed runs match finished ones;
                         each command that ends adds its wall time (``wall_s``)
        baselines.json   unigram plateau, majority, bag of words, random weights
        runs/            the grid (every variant x every rate, seed 0), then the other seeds at each best rate:
                         one JSON per run as it ends; runs already there are skipped
        results.json, comparison.md, curves.png, summary.png    rebuilt from whatever has finished

A command that is cut short (killed, or out of time: ``deadline_s`` stops launching runs that would not end)
keeps every finished run; the same command again does the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from deberta_edu import files
from deberta_edu.facts import PROJECT_ROOT, cpu_name, shown_path
from deberta_edu.training import mlm_data

from . import jobs, metrics, plan, publish, report, timing
from .plan import LAYOUT_NOTES, Scale

PLAN_SCHEMA = "deberta_edu/ablation-plan/2"
PLAN_KEYS = ("scale", "layout", "seeds", "lr_grid", "evals", "train_config")  # a resumed command must match these


def _hardware(scale: Scale) -> dict:
    info = {"device": scale.device, "cpu": cpu_name(), "cpu_count": os.cpu_count(), "workers": scale.workers,
            "threads_per_worker": scale.threads or torch.get_num_threads(), "gpu": None}
    if scale.device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _software() -> dict:
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": version("transformers"),
            "numpy": version("numpy"), "scipy": version("scipy"), "cuda": torch.version.cuda}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "deberta_edu"], cwd=PROJECT_ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        info["git_commit"] = (commit + ("+uncommitted changes in deberta_edu" if dirty else "")) or None
    return info


def on_this_machine(scale: str | Scale, **changes) -> Scale:
    """The scale with the caller's changes (None: keep the scale's); a GPU scale checks that it has one."""
    scale = plan.get_scale(scale) if isinstance(scale, str) else scale
    scale = dataclasses.replace(scale, **{k: v for k, v in changes.items() if v is not None})
    for name in ("budget_tokens", "fit_seconds", "workers"):  # before any plan.json is written (threads 0: torch's)
        if getattr(scale, name) is not None and not getattr(scale, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(scale, name)}")
    if scale.threads is not None and scale.threads < 0:
        raise ValueError(f"threads must be >= 0 (0: torch's choice), got {scale.threads}")
    if scale.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"the {scale.name} scale runs on {scale.device}, but torch sees no GPU "
                               f"(torch {torch.__version__}); pass device='cpu' to try it on the CPU")
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 products left outside autocast use TF32
        torch.backends.cudnn.allow_tf32 = True
        scale = dataclasses.replace(scale, workers=1)
    if scale.threads and scale.workers <= 1:
        torch.set_num_threads(scale.threads)
    return scale


def _new_plan(scale: Scale, smoke: dict | None, command: str, fit_now: bool) -> dict:
    """What plan.json holds: the settings every run shares, the FLOP budget (fitted now, if asked), provenance."""
    fit = None
    if scale.fit_seconds and fit_now:
        baselines_s = scale.random_init_finetunes * smoke["variants"]["deberta"]["metrics_s"]
        fit = timing.fit_budget(scale, smoke, scale.fit_seconds, baselines_s)
        scale = dataclasses.replace(scale, budget_tokens=fit["budget_tokens"])
        print(f"[plan] {fit['budget_tokens']:,} DeBERTa tokens per run fit {fit['runs']} runs in "
              f"{scale.fit_seconds:.0f} s", flush=True)
    shared = plan.shared_config(scale).to_dict()
    for k in ("name", "variant", "seed", "lr", "steps", "warmup_steps", "eval_every"):
        shared.pop(k)
    plan_ = {
        "schema": PLAN_SCHEMA, "scale": scale.name, "layout": scale.layout, "layout_note": LAYOUT_NOTES[scale.layout],
        "description": scale.description, "cpu_scale": scale.cpu_scale, "seeds": list(scale.seeds),
        "lr_grid": list(scale.lr_grid), "evals": scale.evals, "budget_tokens": scale.budget_tokens,
        "flops_per_run": plan.flop_budget(scale), "train_config": shared, "finetune_config": scale.finetune,
        "topics": scale.topics, "probe": scale.probe, "max_minutes": scale.max_minutes, "smoke": smoke, "fit": fit,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "commands": [command],
        "hardware": _hardware(scale), "software": _software(),
    }
    return files.as_saved(plan_)


def _load_plan(path: Path, fresh: dict, command: str) -> dict:
    """The plan of the first command in this folder, checked against this one's, with this command added."""
    saved = json.loads(path.read_text(encoding="utf-8"))
    keys = PLAN_KEYS + (() if fresh["fit"] is None and saved.get("fit") else ("budget_tokens",))
    differ = {k: (saved.get(k), fresh[k]) for k in keys if saved.get(k) != fresh[k]}
    if saved.get("schema") != PLAN_SCHEMA or differ:
        raise ValueError(f"{path} was written by another experiment ({differ or saved.get('schema')}); resume it with "
                         "its own settings, or write into another folder")
    saved["commands"].append(command)
    saved.setdefault("later_hardware", []).append(fresh["hardware"])  # a resumed run may be on another machine
    return saved


def _finished(out: Path) -> dict | None:
    """The report of a folder that already holds every run and the baselines of its plan; None if work is left."""
    if not (out / report.BASELINES_FILE).exists():
        return None
    results = report.summarize(out)
    return results if results["complete"] else None


def _baselines(scale: Scale, out: Path, sentiment_file: str | None) -> None:
    path = out / report.BASELINES_FILE
    if path.exists():
        return
    configs = plan.variant_configs(scale)
    _, _, tokenizer = mlm_data.prepare_data(configs["deberta"])
    found = {"unigram": jobs.unigram_baseline(configs["deberta"])}
    found.update(metrics.baselines(configs, tokenizer, scale, metrics.load_sentiment(sentiment_file, scale.eval_examples),
                                   metrics.topic_data(scale.topics), scale.device))
    jobs._write(path, found)


def _grid_losses(scale: Scale, done: dict[str, dict]) -> dict[str, dict[float, float]]:
    """{variant: {rate: final loss}} of the variants whose whole grid has finished (a diverged run: inf)."""
    out = {}
    for v in plan.VARIANTS:
        ids = {lr: plan.run_id(v, scale.grid_seed, lr) for lr in scale.lr_grid}
        if all(i in done for i in ids.values()):
            out[v] = {lr: float("inf") if done[i].get("failed") else done[i]["metrics"]["val_loss"]
                      for lr, i in ids.items()}
    return {v: losses for v, losses in out.items() if any(x < float("inf") for x in losses.values())}


# long: the steps of the reproduction in order, each a few lines; the module docstring is its map
def run_ablation(scale: str | Scale, out_dir: str | Path, *, smoke_first: bool | None = None,
                 deadline_s: float | None = None, sentiment_file: str | Path | None = None,
                 progress: bool | None = None, command: str | None = None, **changes) -> dict:
    """Run (or resume) the ablation of ``scale`` in ``out_dir``; what results.json holds.

    ``changes``: Scale fields to override (device, workers, threads, compile, layout, budget_tokens,
    fit_seconds, seeds, lr_grid, ...; None keeps the scale's). ``smoke_first`` (default: on a GPU) runs the
    smoke check before anything else. ``deadline_s``: seconds from now after which no new run is started.
    """
    start = time.monotonic()
    deadline = start + deadline_s if deadline_s else None
    scale = on_this_machine(scale, **changes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sentiment_file = str(sentiment_file) if sentiment_file else None
    command = command or f"run_ablation({scale.name!r}, {str(out_dir)!r})"
    plan_path = out / report.PLAN_FILE
    smoke_first = (not scale.cpu_scale) if smoke_first is None else smoke_first
    the_plan = None
    if plan_path.exists():  # another experiment is refused here, before any smoke check spends time
        the_plan = _load_plan(plan_path, _new_plan(scale, None, command, fit_now=False), command)
        finished = _finished(out)
        if finished is not None:  # every run made: the folder (a committed run, perhaps) is left as it is
            print(f"[ablation] {out} holds every run of this experiment: nothing trained, nothing rewritten "
                  f"(python -m deberta_edu.reproduce --rebuild {out} rebuilds its report)", flush=True)
            return finished
    needs_fit = scale.fit_seconds is not None and the_plan is None
    smoke = timing.smoke_check(scale, sentiment_file) if smoke_first or needs_fit else None
    if the_plan is None:
        if needs_fit and deadline is not None:  # a shorter BUDGET: fit the runs to what is left of it after the smoke
            scale = dataclasses.replace(scale, fit_seconds=min(scale.fit_seconds, deadline - time.monotonic()))
        the_plan = _new_plan(scale, smoke, command, fit_now=needs_fit)
    elif smoke:
        the_plan.setdefault("later_smoke_checks", []).append(smoke)
    jobs._write(plan_path, the_plan)
    scale = dataclasses.replace(scale, budget_tokens=the_plan["budget_tokens"])
    plan.check_only_variant_differs(plan.variant_configs(scale))
    timings = smoke or the_plan.get("smoke")
    progress = (scale.workers <= 1 and sys.stderr.isatty()) if progress is None else progress

    def make(variant, seed, lr):
        return jobs.Job(variant, seed, lr, plan.run_config(scale, variant, seed, lr), scale, str(out), sentiment_file,
                        progress)

    def options():
        return dict(workers=scale.workers, deadline=deadline, predict=lambda j: timing.predict_job(j, timings),
                    on_done=lambda record: publish.write_report(out, figures=False))

    _baselines(scale, out, sentiment_file)
    middle = scale.lr_grid[len(scale.lr_grid) // 2]  # the likeliest best rate first: a cut run keeps the most
    grid = sorted(plan.grid_jobs(scale), key=lambda j: (j[2] != middle, plan.VARIANTS.index(j[0])))
    done = jobs.run_jobs([make(*j) for j in grid], **options())
    best = plan.best_rates(_grid_losses(scale, done))
    jobs.run_jobs([make(*j) for j in plan.seed_jobs(scale, best)], **options())
    wall = time.monotonic() - start  # kept in plan.json (and so in results.json) per command that ended
    the_plan.setdefault("wall_s", []).append({"command": len(the_plan["commands"]) - 1, "seconds": round(wall, 1)})
    jobs._write(plan_path, the_plan)
    results = publish.write_report(out)
    print(f"[ablation] {wall / 60:.1f} minutes; report in {shown_path(out)}"
          + ("" if results["complete"] else f"; MISSING: {'; '.join(results['missing'])}"), flush=True)
    return results
