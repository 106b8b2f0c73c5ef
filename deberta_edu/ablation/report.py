"""Lesson 6, the report: from the run files that exist to the tables, the verdicts and the paper beside them.

    summarize       plan.json + runs/*.json + baselines.json -> results: the grid and each variant's best rate,
                    every run checked against the unigram plateau, the table at equal FLOPs (mean ± std over
                    seeds), held-out loss at equal tokens, a paired test and a verdict per claim and metric
    claims          "DeBERTa better than X" on each metric: paired by seed (stats.paired_test), never by 2 SE
    load_results, committed_results    a report folder as the lesson reads it (``publish`` writes them)

It reads whatever has finished: a run cut short is listed as missing, never silently dropped.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from deberta_edu.facts import RESULTS_ROOT

from . import stats
from .plan import OTHERS, VARIANTS

SCHEMA = "deberta_edu/ablation/2"
RESULTS_FILE = "results.json"
PLAN_FILE = "plan.json"
BASELINES_FILE = "baselines.json"
COMPARISON_FILE = "comparison.md"
CURVES_FILE = "curves.png"
SUMMARY_FILE = "summary.png"
PLATEAU_MARGIN = 0.25  # nats: a run that ends closer than this to the unigram baseline has not left the plateau

# Table 4 of the paper (base models, dev sets): MNLI-m and RACE accuracy, in %. Its BERT-style row is
# RoBERTa-ReImp_base, the paper's re-implementation of RoBERTa trained like DeBERTa_base.
PAPER = {
    "bert": {"paper_row": "RoBERTa-ReImp_base", "MNLI-m": 84.9, "RACE": 66.8},
    "deberta": {"paper_row": "DeBERTa_base", "MNLI-m": 86.3, "RACE": 71.7},
    "no_emd": {"paper_row": "−EMD", "MNLI-m": 86.1, "RACE": 70.3},
    "no_c2p": {"paper_row": "−C2P", "MNLI-m": 85.9, "RACE": 69.3},
    "no_p2c": {"paper_row": "−P2C", "MNLI-m": 86.0, "RACE": 69.6},
}
# (key, what it is, higher is better): the measures of every run, the first ones the low-variance evidence
METRICS = (
    ("val_loss", "held-out MLM loss, end of the run", False),
    ("val_auc", "held-out MLM loss, mean over the run (area under the curve)", False),
    ("val_accuracy", "masked-token accuracy (held out)", True),
    ("position_probe", "position probe, frozen features", True),
    ("topic_probe", "BBC topics, frozen features + linear probe", True),
    ("sentiment", "sentiment, fine-tuned (constant classifiers left out)", True),
)


# ----------------------------------------------------------------------------- one run


def run_summary(record: dict, unigram: dict | None) -> dict:
    """One run's numbers: final metrics, the area under its curve, its plateau check, probes, sentiment."""
    out = {k: record[k] for k in ("run", "variant", "seed", "lr", "steps", "tokens", "flops") if k in record}
    if record.get("failed"):
        return {**out, "failed": record["failed"]}
    evals = record["evals"]
    x = [e["step"] / record["steps"] for e in evals]  # the fraction of the run's FLOPs spent
    out.update({k: record["metrics"][k] for k in ("val_loss", "val_accuracy", "val_perplexity")})
    out["val_auc"] = stats.area_under(x, [e["val_loss"] for e in evals]) if len(evals) > 1 else None
    out["position_probe"] = (record.get("position_probe") or {}).get("accuracy")
    out["topic_probe"] = (record.get("topic_probe") or {}).get("accuracy")
    sentiment = record.get("sentiment") or {}
    out["sentiment_constant"] = bool(sentiment.get("constant"))
    out["sentiment"] = None if out["sentiment_constant"] else sentiment.get("test")
    out["sentiment_raw"] = sentiment.get("test")
    out["on_plateau"] = bool(unigram and out["val_loss"] > unigram["val_loss"] - PLATEAU_MARGIN)
    out["curve"] = {k: [e[k] for e in evals] for k in ("step", "tokens", "val_loss", "val_accuracy")}
    out["curve"]["flops"] = [e["step"] * record["flops"] / record["steps"] for e in evals]
    out["timing"] = {k: record.get(k) for k in ("step_s", "first_window_s", "pretrain_s", "metrics_s", "wall_s")}
    return out


# ----------------------------------------------------------------------------- all runs


def load_folder(folder: str | Path) -> tuple[dict, dict[str, dict], dict | None]:
    """(plan, {run id: record}, baselines) of an ablation folder, from whatever files exist."""
    folder = Path(folder)
    plan_path = folder / PLAN_FILE
    if not plan_path.exists():
        raise FileNotFoundError(f"{plan_path} is missing: this is not an ablation folder (run_ablation writes it "
                                "first)")
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    runs = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((folder / "runs").glob("*.json"))}
    base = folder / BASELINES_FILE
    return plan, runs, json.loads(base.read_text(encoding="utf-8")) if base.exists() else None


def _grid(plan: dict, runs: dict[str, dict]) -> tuple[dict, dict, list[str]]:
    """{variant: {rate: final loss, "diverged" or None (missing)}}, the best rates of complete grids, edge cases."""
    seed, grid = plan["seeds"][0], {}
    for v in VARIANTS:
        grid[v] = {}
        for lr in plan["lr_grid"]:
            r = runs.get(f"{v}-seed{seed}-lr{lr:g}")
            grid[v][f"{lr:g}"] = None if r is None else "diverged" if r.get("failed") else r["metrics"]["val_loss"]
    best = {}
    for v, g in grid.items():
        finite = {lr: x for lr, x in g.items() if isinstance(x, float)}
        if None not in g.values() and finite:  # a complete grid with a rate that did not diverge
            best[v] = float(min(finite, key=finite.get))
    rates = [f"{lr:g}" for lr in plan["lr_grid"]]
    edge = [v for v, lr in best.items() if len(rates) > 1 and f"{lr:g}" in (rates[0], rates[-1])]
    return grid, best, edge


def _main_runs(plan: dict, runs: dict, best: dict) -> dict[str, dict[int, str]]:
    """{variant: {seed: run id}} of the runs at each variant's best rate (expected, whether finished or not)."""
    return {v: {s: f"{v}-seed{s}-lr{best[v]:g}" for s in plan["seeds"]} for v in best}


def _table(main: dict, summaries: dict) -> dict:
    """{variant: {metric: mean ± std over the seeds that finished}} at equal FLOPs."""
    table = {}
    for v, by_seed in main.items():
        done = [summaries[r] for r in by_seed.values() if r in summaries and not summaries[r].get("failed")]
        table[v] = {key: stats.mean_std([d[key] for d in done if d.get(key) is not None]) for key, _, _ in METRICS}
    return table


def _equal_tokens(main: dict, summaries: dict) -> dict:
    """Held-out loss of every run read off its curve at the tokens DeBERTa's runs end at (the fewest)."""
    ends = [summaries[r]["tokens"] for r in main.get("deberta", {}).values()
            if r in summaries and not summaries[r].get("failed")]
    if not ends:
        return {}
    at = min(ends)
    out = {"tokens": at, "variants": {}}
    for v, by_seed in main.items():
        values = []
        for r in by_seed.values():
            s = summaries.get(r)
            if s and not s.get("failed"):
                y = stats.interpolate(s["curve"]["tokens"], s["curve"]["val_loss"], at)
                if y is not None:
                    values.append(y)
        out["variants"][v] = stats.mean_std(values)
    return out


def claims(main: dict, summaries: dict) -> list[dict]:
    """The paper's claim "DeBERTa better than X" for each X and metric, tested on the per-seed differences."""
    out = []
    for other in OTHERS:
        if "deberta" not in main or other not in main:
            out.append({"other": other, "metric": None, "note": "not tested: the grid of a variant is unfinished"})
            continue
        for key, _, higher in METRICS:
            pairs, plateau = [], []
            for seed in main["deberta"]:
                a, b = summaries.get(main["deberta"][seed]), summaries.get(main[other][seed])
                if not a or not b or a.get("failed") or b.get("failed"):
                    continue
                plateau += [s["run"] for s in (a, b) if s["on_plateau"]]
                if a.get(key) is not None and b.get(key) is not None:
                    pairs.append((a[key], b[key]))
            test = stats.paired_test([p[0] for p in pairs], [p[1] for p in pairs])
            claim = {"other": other, "metric": key, "test": test, "verdict": stats.verdict(test, higher)}
            if plateau:
                claim.update(verdict=None, note=f"not tested: {', '.join(sorted(set(plateau)))} on the plateau")
            elif claim["verdict"] is None:
                claim["note"] = test.get("note") or f"not tested: {test['n']} paired seed(s) finished"
            out.append(claim)
    return out


# long: one results dict, each entry one line; split, a reader would hunt for where a key comes from
def summarize(folder: str | Path) -> dict:
    """Everything the report says, from the files in ``folder``."""
    plan, runs, baselines = load_folder(folder)
    unigram = (baselines or {}).get("unigram")
    summaries = {rid: run_summary(r, unigram) for rid, r in runs.items()}
    grid, best, edge = _grid(plan, runs)
    main = _main_runs(plan, runs, best)
    expected = {f"{v}-seed{plan['seeds'][0]}-lr{lr:g}" for v in VARIANTS for lr in plan["lr_grid"]}
    expected |= {r for by_seed in main.values() for r in by_seed.values()}
    missing = sorted(expected - set(runs))
    if len(best) < len(VARIANTS):
        missing.append(f"the other seeds of {', '.join(v for v in VARIANTS if v not in best)} (their grid is "
                       "unfinished, so their rate is not chosen yet)")
    return {
        "schema": SCHEMA, **{k: plan[k] for k in plan if k not in ("schema",)},
        "report_built": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "unigram_baseline": unigram, "baselines": baselines,
        "grid": grid, "best_lr": best, "best_lr_at_grid_edge": edge,
        "main_runs": {v: {str(s): r for s, r in by_seed.items()} for v, by_seed in main.items()},
        "runs": summaries,
        "table": _table(main, summaries), "equal_tokens": _equal_tokens(main, summaries),
        "claims": claims(main, summaries),
        "on_plateau": sorted(r for r, s in summaries.items() if s.get("on_plateau")),
        "constant_classifiers": sorted(r for r, s in summaries.items() if s.get("sentiment_constant")),
        "failed": sorted(r for r, s in summaries.items() if s.get("failed")),
        "missing": missing, "complete": not missing and baselines is not None,
        "paper": PAPER,
    }


# ----------------------------------------------------------------------------- files


def load_results(folder: str | Path) -> dict:
    path = Path(folder) / RESULTS_FILE
    results = json.loads(path.read_text(encoding="utf-8"))
    if results.get("schema") != SCHEMA:
        raise ValueError(f"{path} was made by another design of the ablation (schema {results.get('schema')!r}, this "
                         f"code reads {SCHEMA!r}); rerun it (python -m deberta_edu.reproduce --help)")
    return results


def committed_results(root: str | Path | None = None) -> Path | None:
    """The committed real run of this design to show: the GPU one if there is one, else the CPU one; else None."""
    root = Path(root) if root else RESULTS_ROOT
    for name in ("ablation-gpu", "ablation-cpu"):
        path = root / name / RESULTS_FILE
        if path.exists() and json.loads(path.read_text(encoding="utf-8")).get("schema") == SCHEMA:
            return root / name
    return None
