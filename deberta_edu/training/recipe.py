"""What each choice of the small-budget recipe buys, measured one at a time on the lesson-4 shape.

    python -m deberta_edu.training.recipe        # ~80 min, 2 cores -> results/recipe/results.json
    python -m deberta_edu.training.recipe --tokens 200000 --out /tmp/recipe --seeds 0   # a quick look
    python -m deberta_edu.training.recipe --clock   # ~18 min: lesson 4 as the page runs it -> results/recipe/clock.json

The recipe (``get_config("lesson4")``, after Izsak et al. 2021 and Geiping & Goldstein 2022; no dropout is
Cramming's choice, and Izsak et al. do not clip): no dropout, AdamW with β2 = 0.98, gradients clipped to norm
1, the learning rate warmed up and decayed to zero over the budget, 15% of the tokens masked one by one. Each
arm changes one of these and keeps the rest; every arm sees the same number of tokens, in the same order, and
is scored on the same held-out BBC rows, both under token masking and under whole-word span masking (the
harder test). Every arm runs with three seeds: at this budget two seeds of the same recipe differ by several
points, so a smaller difference says nothing. The MLM head on masked tokens only changes speed, not the
function, so it is measured by the bench (``python -m deberta_edu.bench --full-logits``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from deberta_edu import files
from deberta_edu.facts import RESULTS_ROOT

from .configs import TrainConfig, get_config
from .significance import repeated_seeds, welch

RESULTS_DIR = RESULTS_ROOT / "recipe"
CLOCK_FILE = "clock.json"
BUDGET_TOKENS = 3_000_000  # about what lesson 4's 150 seconds buy on two cores
SEEDS = (0, 1, 2)  # three runs an arm: at this budget two seeds of the same recipe differ by several points
# Each arm: (name, what it changes, the change as TrainConfig fields)
ARMS = [
    ("recipe", "the recipe: no dropout, β2 0.98, clip 1, one-cycle, token masking, lr 2e-3", {}),
    ("dropout 0.1", "dropout 0.1 (BERT's and the paper's)", {"dropout": 0.1}),
    ("β2 0.999", "AdamW β2 0.999 (the default)", {"adam_betas": (0.9, 0.999)}),
    ("no clipping", "no gradient clipping", {"max_grad_norm": 1e6}),
    ("whole-word spans", "whole-word span masking (the default elsewhere)", {"whole_word_masking": True}),
    ("lr 1e-3", "half the learning rate (lesson 4's old one)", {"lr": 1e-3}),
    ("lr 4e-3", "twice the learning rate", {"lr": 4e-3}),
]


# Lesson 4's held-out BBC sentences and the words its fill-mask hides in them; ``clock`` keeps where each full-size
# run ranks them (the page checks that these are its own)
FILL_BLANKS = {
    "The UK's jobless total rose for the second month in a row in December, official figures show.": ("the", "month"),
    "Tony Blair has met Italian Prime Minister Silvio Berlusconi and German Chancellor Gerhard Schroeder": ("Minister",),
    "The web looks very different today than it did 10 years ago.": ("years",),
    "The Bank of England is expected to keep rates on hold this week": ("of", "rates"),
}


def arm_config(changes: dict, tokens: int) -> TrainConfig:
    """The lesson-4 recipe on a budget of ``tokens`` (the schedule tied to it), with ``changes``."""
    base = get_config("lesson4", smoke=False)
    steps = max(1, tokens // base.tokens_per_step)
    return base.replace(budget_seconds=None, steps=steps, warmup_steps=max(1, steps // 20), eval_every=0,
                        save_every=0, log_every=1, **changes)


def held_out(model, cfg: TrainConfig, data) -> dict:
    """Held-out loss and accuracy on every validation row, under token and under whole-word masking."""
    from .engine import Distributed, Precision
    from .evaluate import Evaluator
    from .mlm_data import MaskSpec

    out = {}
    world = Distributed(device=next(model.parameters()).device)  # where train() left it: the GPU, when there is one
    for name, spans in (("tokens", False), ("whole_words", True)):
        c = cfg.replace(eval_rows=10_000, whole_word_masking=spans)
        m = Evaluator(data[1], c, MaskSpec.of(c, data[2]), world, Precision("fp32", world.device))(model)
        out[name] = {"accuracy": m["val_accuracy"], "loss": m["val_loss"], "masked_tokens": m["val_tokens"]}
    return out


def kept_runs(path: Path, settings: dict, overwrite: bool) -> list[dict]:
    """The runs a results file at ``path`` already holds, if they were made with the same ``settings`` (the budget;
    the config and the blanks); none without a file. Runs made otherwise are refused, unless ``overwrite`` drops
    them."""
    kept = json.loads(path.read_text()) if path.exists() else {}
    differ = [key for key, value in settings.items() if kept.get(key) != value]
    if not kept.get("runs") or not differ:
        return kept.get("runs", [])
    if overwrite:
        return []
    key, value = differ[0], settings[differ[0]]
    was = f" ({key} {kept.get(key)!r}, not {value!r})" if not isinstance(value, dict) else ""
    raise ValueError(f"{path} holds {len(kept['runs'])} runs made with another {key}{was}; they would be replaced. "
                     "Choose another --out, or add --overwrite to start afresh there")


def run(tokens: int = BUDGET_TOKENS, out: Path = RESULTS_DIR, seeds=SEEDS, arms=None, progress: bool = True,
        overwrite: bool = False) -> dict:
    """Train every arm on every seed. results.json is rewritten after each run, and a run already in it
    (same arm, seed and budget) is not repeated: a crash loses one run at most. A file of another budget is
    refused (``kept_runs``)."""
    from .mlm_data import prepare_data
    from .pretrain import train

    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    result = {"command": "python -m deberta_edu.training.recipe" + (f" --tokens {tokens}" if tokens != BUDGET_TOKENS
                                                                     else ""),
              "shape": "lesson 4: tiny (2 layers, hidden 128), batch 32 x 128 tokens, BBC", "tokens": tokens,
              "seeds": list(seeds), "runs": []}
    result["runs"] = kept_runs(path, {"tokens": tokens}, overwrite)
    done = {(r["arm"], r["seed"]) for r in result["runs"]}
    data = None
    for seed in seeds:
        for name, what, changes in arms or ARMS:
            if (name, seed) in done:
                continue
            data = data or prepare_data(arm_config({}, tokens), progress=progress)
            cfg = arm_config({**changes, "seed": seed}, tokens)
            started = time.perf_counter()
            trained = train(cfg, data[0], None, data[2], progress=progress)
            scores = held_out(trained.model, cfg, data)
            result["runs"].append({"arm": name, "seed": seed, "change": what,
                                   "fields": {k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()},
                                   "held_out": scores, "tokens_per_s": round(trained.tokens_per_s),
                                   "wall_s": round(time.perf_counter() - started, 1)})
            files.write_text(path, json.dumps(result, indent=2, ensure_ascii=False) + "\n")  # atomic
            print(f"{name:>18}, seed {seed}: token masking {scores['tokens']['accuracy']:.1%}, "
                  f"whole words {scores['whole_words']['accuracy']:.1%}", flush=True)
    return result


def clock(out: Path = RESULTS_DIR, seeds=SEEDS, repeats: int = 2, progress: bool = True,
          overwrite: bool = False, blanks: dict = FILL_BLANKS) -> dict:
    """Lesson 4's full size as the page runs it (``get_config("lesson4")``: 150 s of training time, the schedule
    on the clock, its 256 held-out rows scored every 100 steps), ``repeats`` times per seed, nothing else on the
    machine. clock.json keeps each run's tokens, held-out curve and the rank of every word of ``blanks`` (lesson
    4's fill-mask) at the end; it is rewritten after each run, and a run already in it (same seed and repeat,
    same config and blanks) is not repeated; a file of another config is refused (``kept_runs``)."""
    import tempfile

    from .evaluate import answer_ranks
    from .mlm_data import prepare_data
    from .pretrain import train
    from .state import describe_machine

    cfg = get_config("lesson4", smoke=False)
    path = out / CLOCK_FILE
    result = {"command": "python -m deberta_edu.training.recipe --clock",
              "config": files.as_saved(cfg.to_dict()), "blanks": {k: list(v) for k, v in blanks.items()},
              "machine": describe_machine(), "runs": []}
    result["runs"] = kept_runs(path, {k: result[k] for k in ("config", "blanks")}, overwrite)  # others' say nothing
    done = {(r["seed"], r["repeat"]) for r in result["runs"]}
    data = None
    for seed in seeds:
        for repeat in range(repeats):
            if (seed, repeat) in done:
                continue
            data = data or prepare_data(cfg, progress=progress)
            with tempfile.TemporaryDirectory() as folder:  # saved every 100 steps, as on the page
                trained = train(cfg.replace(seed=seed), data[0], data[1], tokenizer=data[2], out_dir=folder,
                                progress=progress)
            evals = [{k: r[k] for k in ("step", "val_loss", "val_accuracy")}
                     for r in trained.history if r["kind"] == "eval"]
            last = [r for r in trained.history if r["kind"] == "train"][-1]
            ranks = answer_ranks(trained.model, data[2], blanks) if data[2] is not None else None  # None: synthetic
            result["runs"].append({"seed": seed, "repeat": repeat, "tokens": last["tokens"], "steps": last["step"],
                                   "tokens_per_s": round(trained.tokens_per_s), "evals": evals,
                                   "answer_ranks": ranks})
            out.mkdir(parents=True, exist_ok=True)
            files.write_text(path, json.dumps(result, indent=1) + "\n")  # atomic
            print(f"seed {seed}, run {repeat + 1}: {last['tokens']:,} tokens, held-out accuracy "
                  f"{evals[-1]['val_accuracy']:.1%}", flush=True)
    return result


def by_arm(result: dict) -> dict[str, dict]:
    """{arm: {"tokens": [accuracy per seed], "whole_words": [...], "change": ...}} in the order of ARMS."""
    arms: dict[str, dict] = {}
    for r in sorted(result["runs"], key=lambda r: r["seed"]):
        a = arms.setdefault(r["arm"], {"change": r["change"], "tokens": [], "whole_words": [], "tokens_per_s": []})
        for kind in ("tokens", "whole_words"):
            a[kind].append(r["held_out"][kind]["accuracy"])
        a["tokens_per_s"].append(r["tokens_per_s"])
    order = [name for name, _, _ in ARMS]
    return dict(sorted(arms.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def welch_p(a, b) -> float | None:
    """Two-sided Welch p of two arms' runs; None with fewer than two runs on a side."""
    return welch(a, b)["p_two_sided"] if min(len(a), len(b)) >= 2 else None


def table(result: dict) -> str:
    """The arms as a markdown table, under a line naming the model, the budget and the seeds: the mean over
    seeds (the lowest and highest run in brackets), its difference in points from the recipe's mean, and
    Welch's p of that difference under token masking."""
    arms = by_arm(result)
    ref = arms["recipe"]
    rows = [f"Held-out masked-token accuracy of {result['shape']}: {result['tokens']:,} tokens per run, seeds "
            f"{', '.join(map(str, result['seeds']))}.", "",
            "| arm | token masking | vs recipe | Welch p | whole-word masking | vs recipe |",
            "|---|---|---|---|---|---|"]
    for name, a in arms.items():
        cells = []
        for kind in ("tokens", "whole_words"):
            mean, base = sum(a[kind]) / len(a[kind]), sum(ref[kind]) / len(ref[kind])
            cells += [f"{mean:.1%} ({100 * min(a[kind]):.1f}–{100 * max(a[kind]):.1f})",
                      f"{100 * (mean - base):+.1f}"]
            if kind == "tokens":
                p = welch_p(a[kind], ref[kind]) if name != "recipe" else None
                cells.append("—" if p is None else f"{p:.2g}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m deberta_edu.training.recipe", description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=BUDGET_TOKENS, help="training tokens per arm")
    p.add_argument("--out", default=str(RESULTS_DIR), help="default: the committed %(default)s; the runs a file "
                   "there holds are kept and not repeated, and a file of other settings is refused")
    p.add_argument("--overwrite", action="store_true", help="start afresh where --out holds runs of other settings")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="one run per arm and seed (default: "
                   "%(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (a log file), data building too")
    p.add_argument("--clock", action="store_true", help="instead: lesson 4's full size as the page runs it, "
                   f"twice per seed -> {CLOCK_FILE}")
    args = p.parse_args(argv)
    if problem := repeated_seeds(args.seeds):
        sys.exit(f"error: {problem}")
    if args.clock:
        try:
            runs = clock(Path(args.out), tuple(args.seeds), progress=not args.no_progress,
                         overwrite=args.overwrite)["runs"]
        except ValueError as err:
            sys.exit(f"error: {err}")
        print(", ".join(f"{r['evals'][-1]['val_accuracy']:.1%}" for r in runs))
        return
    if args.tokens < 32 * 128:
        sys.exit(f"error: --tokens must be at least one batch (4096 tokens), got {args.tokens}")
    try:
        result = run(args.tokens, Path(args.out), tuple(args.seeds), progress=not args.no_progress,
                     overwrite=args.overwrite)
    except ValueError as err:
        sys.exit(f"error: {err}")
    print(table(result))


if __name__ == "__main__":
    main()
