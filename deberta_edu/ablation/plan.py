"""Lesson 6, the plan: the runs of the ablation, what they share, and how many steps fit a time budget.

    Scale                  one shared TrainConfig, the fine-tuning, the machine (smoke | cpu | gpu)
    variant_configs        one TrainConfig per variant (only the variant differs) and the noise run
    check_only_variant_differs   refuses runs that differ in anything else
    fit_steps              times DeBERTa, then cuts the steps (alike for every run) to fit the budget

Scales: ``smoke`` checks the plumbing in CI (seconds); ``cpu`` is a reduced reproduction for 2 CPU cores
(about half an hour); ``gpu`` is sized for one H100 in about 9 minutes (``scripts/reproduce_gpu.sh``).
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from pathlib import Path

from deberta_edu.facts import checkpoint_dir
from deberta_edu.training import mlm_data, pretrain
from deberta_edu.training.configs import TrainConfig
from deberta_edu.training.flops import train_flops_per_token

VARIANTS = ("bert", "deberta", "no_emd", "no_c2p", "no_p2c")  # the order of every table and plot
LABELS = {
    "bert": "BERT-style",
    "deberta": "DeBERTa",
    "no_emd": "−EMD",
    "no_c2p": "−C2P",
    "no_p2c": "−P2C",
}
NOISE_RUN = "deberta-seed1"  # DeBERTa again with pretraining seed 1: the seed-to-seed yardstick


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
        work_dir=checkpoint_dir("ablation-cpu"),
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


# ----------------------------------------------------------------------------- the runs


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


def run_cost(cfg: TrainConfig) -> float:
    """FLOPs per token of one training step of a run (the MLM head on its masked tokens)."""
    return train_flops_per_token(cfg.model_config(), cfg.seq_length, cfg.mlm_probability)


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
    costs = {run: run_cost(c) for run, c in configs.items()}
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
