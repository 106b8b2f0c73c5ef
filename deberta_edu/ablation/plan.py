"""Lesson 6, the plan: which runs the ablation makes, what they share, and what each one costs.

    Scale                 one shared TrainConfig, the layout (v1 as Table 4, or v3), seeds, the learning-rate
                          grid, the FLOP budget of every run, the probes, the fine-tuning, the machine
    run_config            the TrainConfig of one run (variant, seed, rate): its steps spend the FLOP budget
    grid_jobs, seed_jobs  the grid (every variant x every rate, on one seed), then the other seeds at the
                          rate each variant did best with
    check_only_variant_differs   refuses runs that differ in more than the variant (and what the budget sets)

Every run of a scale gets the same training FLOPs (``training.flops``), so a variant that costs more per
token sees fewer tokens; curves are drawn against both tokens and FLOPs. Scales: ``smoke`` checks the
plumbing (CI, seconds per run); ``cpu`` is sized for 2 CPU cores in at most 90 minutes; ``gpu`` fits its
FLOP budget to the measured step times of one GPU (``timing.fit_budget``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from deberta_edu.training.configs import TrainConfig
from deberta_edu.training.flops import train_flops_per_token

VARIANTS = ("bert", "deberta", "no_emd", "no_c2p", "no_p2c")  # the order of every table and plot
LABELS = {"bert": "BERT-style", "deberta": "DeBERTa", "no_emd": "−EMD", "no_c2p": "−C2P", "no_p2c": "−P2C"}
OTHERS = ("bert", "no_emd", "no_c2p", "no_p2c")  # the rows Table 4 compares DeBERTa with

# The attention layout of every variant. Table 4 ablates DeBERTa v1 base models: separate position
# projections W_{q,r}, W_{k,r} (share_att_key False), the plain clamp of eq. (3) (no log buckets; k is
# max_position_embeddings), no LayerNorm on the relative table, v1's fused in_proj. v3 is what the course
# model uses: positions through the content projections (§5.3 shares them in the 1.5B model), and, from the
# released v2 code rather than the paper, a layer-normed table and 256 log buckets.
LAYOUTS = {
    "v1": {"layout": "v1", "share_att_key": False, "norm_rel_ebd": False, "position_buckets": -1},
    "v3": {"layout": "v2", "share_att_key": True, "norm_rel_ebd": True, "position_buckets": 256},
}
LAYOUT_NOTES = {
    "v1": "v1 layout, as Table 4's base models: separate position projections (share_att_key False), the plain "
          "clamp of eq. (3), no LayerNorm on the relative table",
    "v3": "v3 layout (not Table 4's): position projections shared with the content ones, a layer-normed relative "
          "table, 256 log buckets",
}
# What a run of the ablation may differ in from DeBERTa's run of the same seed and rate: what the FLOP budget sets.
BUDGET_FIELDS = {"steps", "warmup_steps", "eval_every", "log_every"}


@dataclass
class Scale:
    """Everything a reproduction decides, shared by all its runs."""

    name: str
    description: str
    train: TrainConfig  # shared; run_config sets variant, seed, lr, steps, warmup, eval_every, name
    finetune: dict  # FinetuneConfig fields of the sentiment fine-tuning (one per pretraining seed)
    budget_tokens: int  # every run gets the FLOPs of this many DeBERTa tokens (GPU: replaced by the fit)
    layout: str = "v1"
    seeds: tuple[int, ...] = (0, 1, 2)  # pretraining seeds: data order, masks, initial weights
    lr_grid: tuple[float, ...] = (1e-3, 2e-3, 4e-3)  # searched on seeds[0], the same grid for every variant
    evals: int = 8  # held-out evaluations per run, at equal fractions of its FLOPs (and one at step 0)
    warmup_fraction: float = 0.06
    eval_examples: int | None = None  # cut the sentiment dev and test sets (smoke); None: all of them
    topics: dict = field(default_factory=lambda: dict(per_class=20, draws=3, max_chunks=4))
    probe: dict = field(default_factory=lambda: dict(train_windows=512, test_windows=2000))
    random_init_finetunes: int = 3  # sentiment from random weights (DeBERTa), this many seeds
    device: str = "cpu"
    threads: int | None = None  # torch threads per run
    workers: int = 1  # runs at once, each in its own process (CPU only)
    compile: bool = False  # torch.compile the encoder layers
    fit_seconds: float | None = None  # fit budget_tokens so that every run ends within this (GPU)
    max_minutes: float = 90.0  # what the scale promises for the whole run

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {self.layout!r}")
        if len(self.seeds) < 2:
            raise ValueError(f"the ablation pairs runs by seed and tests the differences: give >= 2 seeds, "
                             f"got {self.seeds}")
        if not self.lr_grid:
            raise ValueError("lr_grid needs at least one learning rate")

    @property
    def cpu_scale(self) -> bool:
        return not self.device.startswith("cuda")

    @property
    def grid_seed(self) -> int:
        return self.seeds[0]

    @property
    def label(self) -> str:
        return self.name + ("" if self.layout == "v1" else f"-{self.layout}")


def _smoke() -> Scale:
    tiny = dict(hidden_size=64, intermediate_size=256)
    return Scale(
        name="smoke",
        description="smoke test: a 64-wide, 2-layer model on BBC News, 2 seeds, a grid of 2 rates; seconds per run",
        train=TrainConfig(size="tiny", model_overrides=tiny, source="bbc", vocab_size=8000, seq_length=128,
                          batch_size=8, lr=3e-3, dropout=0.0, log_every=2, eval_rows=32, eval_batch_size=32,
                          save_every=0),
        finetune=dict(lr=1e-3, epochs=1.0, batch_size=32, max_length=48, max_train_examples=96),
        budget_tokens=12 * 8 * 128, seeds=(0, 1), lr_grid=(3e-3, 6e-3), evals=3, eval_examples=96,
        topics=dict(per_class=3, draws=1, max_chunks=1), probe=dict(train_windows=128, test_windows=256),
        random_init_finetunes=2, threads=1, workers=2, max_minutes=3.0,
    )


def _cpu() -> Scale:
    # The `tiny` size (2 layers, 128 wide) on BBC News with the course recipe's dropout 0. Every run: the FLOPs of
    # 2M DeBERTa tokens (977 steps; BERT-style 1.54x the tokens: it has no relative attention and no EMD).
    # 5 variants x 3 rates + 5 x 2 more seeds = 25 runs on 2 processes x 1 thread. Measured on 2 free cores (Xeon,
    # torch 2.13, both processes busy): 154-185 ms/step for BERT-style, −EMD, −C2P, −P2C, 231-270 ms for DeBERTa
    # (16 x 128 tokens), so ~96 worker-minutes of pretraining (48 on 2 workers), plus ~46 s per run for 10
    # evaluations (step 0, eight more, the last step), the probes and the fine-tuning, and ~2 minutes of
    # baselines: about 60 minutes in all. Shared cores are slower: the committed run (AMD EPYC, results/ablation-cpu)
    # took 115 worker-minutes of pretraining and 69 minutes in all as the command printed it (it predates the plan's
    # wall_s; its runs' wall_s add to 130 worker-minutes), 21 under the 90-minute budget.
    return Scale(
        name="cpu",
        description="CPU scale: tiny model (2 layers, hidden 128), BBC News, 16 x 128 tokens per step, every run "
                    "the FLOPs of 2M DeBERTa tokens; 3 seeds, a grid of 3 rates; 2 processes x 1 thread",
        train=TrainConfig(size="tiny", source="bbc", vocab_size=8000, seq_length=128, batch_size=16, lr=2e-3,
                          dropout=0.0, log_every=10, eval_rows=256, eval_batch_size=128, save_every=0),
        finetune=dict(lr=1e-3, epochs=1.0, batch_size=32, max_length=64, max_train_examples=3000),
        budget_tokens=2_000_000, threads=1, workers=2, max_minutes=90.0,
    )


def _gpu() -> Scale:
    # The `small` size (6 layers, 512 wide) on the `large` corpus at 512 tokens, batch 16 x 512, bf16 autocast.
    # budget_tokens is a placeholder: timing.fit_budget replaces it from the step time of every variant measured
    # on the machine (compile included), so that the 25 runs and the baselines end inside fit_seconds. What a run
    # costs besides pretraining (up to 10 evaluations, the probes, 62 fine-tuning steps) is paid 25 times, so it is kept
    # small: 2,000 fine-tuning snippets, topic documents read in at most 2 chunks of 512 tokens.
    return Scale(
        name="gpu",
        description="GPU scale for one GPU: small model (6 layers, hidden 512), `large` corpus at 512 tokens, "
                    "batch 16, bf16; the FLOP budget fitted to the measured step times; 3 seeds, a grid of 3 rates",
        train=TrainConfig(size="small", source="large", vocab_size=32000, seq_length=512, batch_size=16, lr=5e-4,
                          dropout=0.0, precision="auto", log_every=10, eval_rows=256, eval_batch_size=64,
                          save_every=0),
        finetune=dict(lr=3e-4, epochs=1.0, batch_size=32, max_length=64, max_train_examples=2000),
        topics=dict(per_class=20, draws=3, max_chunks=2),
        budget_tokens=4_000_000, lr_grid=(2.5e-4, 5e-4, 1e-3), device="cuda", fit_seconds=380.0, max_minutes=9.0,
    )


SCALES = {"smoke": _smoke, "cpu": _cpu, "gpu": _gpu}


def get_scale(name: str, **changes) -> Scale:
    if name not in SCALES:
        raise ValueError(f"unknown scale {name!r}; choose from {sorted(SCALES)}")
    return dataclasses.replace(SCALES[name](), **changes)


# ----------------------------------------------------------------------------- the runs


def shared_config(scale: Scale) -> TrainConfig:
    """The scale's TrainConfig with its attention layout (v1 or v3) in the model overrides."""
    return scale.train.replace(model_overrides={**LAYOUTS[scale.layout], **scale.train.model_overrides})


def run_cost(cfg: TrainConfig) -> float:
    """Training FLOPs per token of a run (the MLM head on its masked tokens)."""
    return train_flops_per_token(cfg.model_config(), cfg.seq_length, cfg.mlm_probability)


def flop_budget(scale: Scale) -> float:
    """The training FLOPs of every run: those of ``budget_tokens`` DeBERTa tokens."""
    return scale.budget_tokens * run_cost(shared_config(scale).replace(variant="deberta"))


def run_id(variant: str, seed: int, lr: float) -> str:
    return f"{variant}-seed{seed}-lr{lr:g}"


def run_config(scale: Scale, variant: str, seed: int, lr: float) -> TrainConfig:
    """One run: the shared config with this variant, seed and rate, and the steps that spend the FLOP budget."""
    cfg = shared_config(scale).replace(variant=variant, seed=seed, lr=lr, name=f"ablation-{scale.label}-"
                                       + run_id(variant, seed, lr))
    steps = max(scale.evals, round(flop_budget(scale) / (run_cost(cfg) * cfg.tokens_per_step)))
    eval_every = max(1, steps // scale.evals)
    return cfg.replace(steps=steps, warmup_steps=max(1, round(scale.warmup_fraction * steps)),
                       eval_every=eval_every, log_every=max(1, min(cfg.log_every, eval_every)))


def variant_configs(scale: Scale, seed: int | None = None, lr: float | None = None) -> dict[str, TrainConfig]:
    """The five variants' runs for one seed (default: the grid's) and rate (default: the grid's middle)."""
    seed = scale.grid_seed if seed is None else seed
    lr = scale.lr_grid[len(scale.lr_grid) // 2] if lr is None else lr
    return {v: run_config(scale, v, seed, lr) for v in VARIANTS}


def grid_jobs(scale: Scale) -> list[tuple[str, int, float]]:
    """(variant, seed, lr) of the grid: every variant at every rate, on the grid seed."""
    return [(v, scale.grid_seed, lr) for v in VARIANTS for lr in scale.lr_grid]


def seed_jobs(scale: Scale, best_lr: dict[str, float]) -> list[tuple[str, int, float]]:
    """(variant, seed, lr) of the other seeds, each variant at its best rate (its grid-seed run is in the grid)."""
    return [(v, seed, best_lr[v]) for seed in scale.seeds[1:] for v in VARIANTS if v in best_lr]


def config_differences(a: TrainConfig, b: TrainConfig) -> dict[str, tuple]:
    """{field: (a's value, b's value)} for every TrainConfig field that differs, the run name aside."""
    da, db = a.to_dict(), b.to_dict()
    return {k: (da[k], db[k]) for k in da if k != "name" and da[k] != db[k]}


def check_only_variant_differs(configs: dict[str, TrainConfig]) -> None:
    """Runs of one seed and rate differ from DeBERTa's in the variant and in what the FLOP budget sets,
    and they spend the same FLOPs (to within one step)."""
    reference = configs["deberta"]
    budget = run_cost(reference) * reference.tokens_per_step * reference.steps
    for name, cfg in configs.items():
        extra = set(config_differences(reference, cfg)) - {"variant"} - BUDGET_FIELDS
        if extra:
            raise ValueError(f"the {name} run differs from deberta's in more than the variant: "
                             f"{ {k: config_differences(reference, cfg)[k] for k in sorted(extra)} }")
        step = run_cost(cfg) * cfg.tokens_per_step
        if abs(step * cfg.steps - budget) > step:
            raise ValueError(f"the {name} run spends {step * cfg.steps:.3g} FLOPs, deberta's {budget:.3g}: more "
                             f"than one step ({step:.3g}) apart; build both with run_config")


def best_rates(final_losses: dict[str, dict[float, float]]) -> dict[str, float]:
    """{variant: the rate with the lowest final held-out loss on the grid seed} for each finished grid."""
    return {v: min(losses, key=losses.get) for v, losses in final_losses.items() if losses}
