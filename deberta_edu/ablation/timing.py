"""Lesson 6 on a machine it has not met: a smoke check of every variant, then a FLOP budget that fits the time.

    smoke_check   every variant a few steps with the scale's precision (bf16 on a GPU), attention path and compile
                  setting, then its probes and a short fine-tuning: any failure stops the command before the
                  real runs start. It measures, per variant, the first steps and the first evaluation
                  (compilation and warm-up, paid again by every run) and the steady seconds per step and per
                  evaluation.
    fit_budget    the FLOPs per run that let all the runs (grid and seeds) end inside a number of seconds:

        time(F) = sum over runs [ F / (cost_v x tokens_per_step) x step_s_v + first_s_v + first_eval_s_v
                                  + (evals - 1) x eval_s_v + measure_s ]

                  is linear in F, so F = (seconds − fixed costs) / (sum over runs of step_s_v / (cost_v x T)).
                  Each variant's own step time is used (relative attention costs more time than its FLOPs say).
    predict_job   the seconds one run is expected to take: a command stops launching runs that would not end.
"""

from __future__ import annotations

import time

import torch

from .jobs import Job, run_job
from .plan import VARIANTS, Scale, run_config, run_cost

SMOKE_STEPS = 6
SMOKE_FINETUNE = 64  # fine-tuning examples per variant in the smoke check (DeBERTa: the scale's full number)


def attention_path(device: str) -> dict:
    """Which scaled-dot-product backends torch may use here (the fast path of attention.py calls SDPA)."""
    if not device.startswith("cuda"):
        return {"device": device}
    return {name: getattr(torch.backends.cuda, f"{name}_sdp_enabled")()
            for name in ("flash", "mem_efficient", "cudnn", "math")
            if hasattr(torch.backends.cuda, f"{name}_sdp_enabled")}


def smoke_check(scale: Scale, sentiment_file: str | None = None, steps: int = SMOKE_STEPS) -> dict:
    """Run every variant briefly, end to end; {variant: timings}. Raises RuntimeError on the first failure."""
    start = time.perf_counter()
    lr = scale.lr_grid[len(scale.lr_grid) // 2]
    out = {"steps": steps, "variants": {}, "attention": attention_path(scale.device)}
    for v in VARIANTS:
        cfg = run_config(scale, v, scale.grid_seed, lr)
        # two evaluations of every held-out row a run evaluates, at step 0 and at the end, as a run makes them: the
        # first (with torch.compile, the eval-mode graphs' compilation) is charged once per run, the second per
        # further evaluation
        cfg = cfg.replace(steps=steps, warmup_steps=1, log_every=1, eval_every=steps, name=f"smoke-{v}")
        job = Job(v, scale.grid_seed, lr, cfg, scale, None, sentiment_file,
                  finetune_examples=None if v == "deberta" else SMOKE_FINETUNE)
        try:
            record = run_job(job)
        except Exception as err:  # noqa: BLE001 -- any failure of the path stops the command, with its cause
            raise RuntimeError(f"smoke check: the {v} variant failed on {scale.device} ({type(err).__name__}: "
                               f"{err}); nothing else was run. Fix this first.") from err
        if record.get("failed"):
            raise RuntimeError(f"smoke check: the {v} variant's loss was not finite on {scale.device} in its "
                               f"{steps} steps or its fine-tuning ({record['failed']}); nothing else was run.")
        keys = ("first_window_s", "step_s", "first_eval_s", "eval_s", "pretrain_s", "metrics_s")
        out["variants"][v] = {k: record[k] for k in keys}
        out["variants"][v]["precision"] = _precision_name(cfg, scale.device)
        print(f"[smoke] {v}: {record['step_s'] * 1e3:.0f} ms/step (first {record['first_window_s']:.1f} s), "
              f"{record['eval_s']:.1f} s per evaluation (first {record['first_eval_s']:.1f} s), "
              f"measurements {record['metrics_s']:.1f} s", flush=True)
    out["seconds"] = time.perf_counter() - start
    return out


def _precision_name(cfg, device: str) -> str:
    from deberta_edu.training.engine import Precision

    return Precision(cfg.precision, torch.device(device)).name


def _jobs_per_variant(scale: Scale) -> int:
    """How many runs each variant makes: the grid's rates, then one more per remaining seed."""
    return len(scale.lr_grid) + len(scale.seeds) - 1


def evaluations(cfg) -> int:
    """How many held-out evaluations a run of ``cfg`` makes: at step 0, every ``eval_every`` steps, at the end."""
    between = len(range(cfg.eval_every, cfg.steps, cfg.eval_every)) if cfg.eval_every else 0
    return (1 if cfg.eval_every else 0) + between + 1


def _evals_s(smoke: dict, variant: str, count: int) -> float:
    """Seconds of ``count`` (>= 1) evaluations: the first (compilation, warm-up) and count - 1 steady ones."""
    t = smoke["variants"][variant]
    steady = t.get("eval_s", 0.0)  # a plan written before evaluations were timed: 0
    return t.get("first_eval_s", steady) + (count - 1) * steady  # a plan before first_eval_s: a steady one


def fit_budget(scale: Scale, smoke: dict, seconds: float, baselines_s: float = 0.0) -> dict:
    """The budget (in DeBERTa tokens) that lets every run end inside ``seconds``, from the smoke's timings."""
    n = _jobs_per_variant(scale)
    timings = smoke["variants"]
    measure_s = timings["deberta"]["metrics_s"]  # the full fine-tuning ran for DeBERTa: an upper bound for all
    # a run evaluates at step 0, scale.evals - 1 or scale.evals times between, and at the end: at most evals + 2
    # once it has evals x (evals - 1) steps (the minimum below), charged before the steps are known
    fixed = baselines_s + n * sum(t["first_window_s"] + measure_s + _evals_s(smoke, v, scale.evals + 2)
                                  for v, t in timings.items())
    per_flop = 0.0
    for v in VARIANTS:
        cfg = run_config(scale, v, scale.grid_seed, scale.lr_grid[0])
        per_flop += n * timings[v]["step_s"] / (run_cost(cfg) * cfg.tokens_per_step)
    deberta = run_config(scale, "deberta", scale.grid_seed, scale.lr_grid[0])
    if seconds <= fixed:
        raise RuntimeError(
            f"the {5 * n} runs of the {scale.name} scale need {fixed:.0f} s before any training (first steps and "
            f"measurements, from the smoke check) but only {seconds:.0f} s are given; give more time, or fewer "
            "seeds or rates")
    flops = (seconds - fixed) / per_flop
    tokens = int(flops / run_cost(deberta))
    steps = max(20, scale.evals * (scale.evals - 1))  # DeBERTa's runs take the fewest steps of the variants
    minimum = steps * deberta.tokens_per_step
    if tokens < minimum:
        raise RuntimeError(f"only {tokens:,} DeBERTa tokens per run fit {seconds:.0f} s here (at least {minimum:,}, "
                           f"{steps} steps, are needed: fewer show no curve, and a run of fewer than evals x "
                           f"(evals - 1) = {scale.evals * (scale.evals - 1)} steps evaluates more often than this fit "
                           "counts); this machine is slower than the scale was sized for")
    return {"seconds": seconds, "fixed_s": fixed, "budget_tokens": tokens, "flops_per_run": flops,
            "runs": 5 * n}


def predict_job(job: Job, smoke: dict | None) -> float:
    """Expected seconds of a run from the smoke check's timings (0 without one: nothing is predicted)."""
    if not smoke:
        return 0.0
    t = smoke["variants"][job.variant]
    return (t["first_window_s"] + job.cfg.steps * t["step_s"] + _evals_s(smoke, job.variant, evaluations(job.cfg))
            + smoke["variants"]["deberta"]["metrics_s"])
