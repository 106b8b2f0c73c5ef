"""Lesson 6, the report in words: comparison.md and the findings, generated from the numbers of ``report.summarize``.

Every number stands beside what gives it meaning: the unigram plateau, the majority class, bag of words, the
same network from random weights, and the paper's Table 4. A verdict is the paired test's, never a rule of thumb.
"""

from __future__ import annotations

from .plan import LABELS, OTHERS, VARIANTS
from .report import METRICS, PAPER, PLATEAU_MARGIN
from .stats import ALPHA

METRIC_LABELS = {key: label for key, label, _ in METRICS}


def run_kind(results: dict) -> str:
    """How a run is labelled everywhere: GPU, CPU scale, or a smoke test (never shown as a trained result)."""
    if not results["cpu_scale"]:
        return "GPU"
    return "CPU scale" if results["scale"] == "cpu" else f"{results['scale']} (CPU, not a result)"


def _ms(m: dict, digits: int = 3, percent: bool = False) -> str:
    if not m or m.get("mean") is None:
        return "–"
    f = (lambda x: f"{100 * x:.1f}%") if percent else (lambda x: f"{x:.{digits}f}")
    return f(m["mean"]) + ("" if m["std"] is None else f" ± {f(m['std'])}") + f" (n={m['n']})"


def _percent(key: str) -> bool:
    return key not in ("val_loss", "val_auc")


def plateau_lines(results: dict) -> list[str]:
    base = results.get("unigram_baseline")
    runs = [r for r in results["runs"].values() if not r.get("failed")]
    if not base:
        return ["The unigram baseline is not computed yet: no run is checked against the plateau."]
    stuck = results["on_plateau"]
    head = (f"Word frequencies alone (the unigram baseline) give a held-out loss of {base['val_loss']:.3f} and "
            f"{base['val_accuracy']:.1%} masked-token accuracy. A run that ends less than {PLATEAU_MARGIN} nats "
            "below it has not left the plateau.")
    if not runs:
        return [head]
    if not stuck:
        gap = min(base["val_loss"] - r["val_loss"] for r in runs)
        return [head + f" Every one of the {len(runs)} finished runs ended at least {gap:.2f} nats below it."]
    above = sum(results["runs"][r]["val_loss"] > base["val_loss"] for r in stuck)  # short of even the frequencies
    short = f"; {above} of them end above it, short of even the word frequencies" if above else ""
    return [head + f" ON THE PLATEAU: {', '.join(stuck)} ({len(stuck)} of {len(runs)} runs{short}); no claim is "
                   "tested on them."]


def _claim_rows(results: dict) -> list[str]:
    """One row per claim and measure: the paired difference over seeds, its 95% CI, p, and the verdict."""
    lines = ["| claim | measure | DeBERTa − other | 95% CI | p (paired t) | verdict |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for c in results["claims"]:
        claim = f"DeBERTa better than {LABELS[c['other']]}"
        if not c["metric"]:
            lines.append(f"| {claim} | all | | | | {c['note']} |")
            continue
        t, key = c["test"], c["metric"]
        scale, unit = (100, " pt") if _percent(key) else (1, "")
        diff = "–" if t["mean_difference"] is None else f"{t['mean_difference'] * scale:+.3g}{unit} (n={t['n']})"
        ci = "–" if not t["ci95"] else f"{t['ci95'][0] * scale:+.3g} … {t['ci95'][1] * scale:+.3g}"
        p = "–" if t["p"] is None else f"{t['p']:.3g}"
        lines.append(f"| {claim} | {METRIC_LABELS[key]} | {diff} | {ci} | {p} | "
                     f"{'**' + c['verdict'] + '**' if c['verdict'] else c.get('note', 'not tested')} |")
    return lines


def findings(results: dict) -> list[str]:
    """Plain sentences: what the runs show, what is missing, and where the result agrees with the paper."""
    out = plateau_lines(results)
    if results["best_lr"]:
        rates = ", ".join(f"{LABELS[v]} {lr:g}" for v, lr in results["best_lr"].items())
        out.append(f"Best rate of each variant on seed {results['seeds'][0]} (grid {list(results['lr_grid'])}, "
                   f"lowest final held-out loss): {rates}.")
    if results["best_lr_at_grid_edge"]:
        out.append(f"At the edge of the grid: {', '.join(LABELS[v] for v in results['best_lr_at_grid_edge'])}; a "
                   "wider grid might serve them better.")
    eq = results["table"]
    if "deberta" in eq and "bert" in results["equal_tokens"].get("variants", {}):
        tokens = {v: [results["runs"][r]["tokens"] for r in results["main_runs"][v].values() if r in results["runs"]]
                  for v in results["main_runs"]}
        if tokens.get("bert") and tokens.get("deberta"):
            out.append(f"At equal FLOPs BERT-style sees {tokens['bert'][0] / tokens['deberta'][0]:.2f}x the tokens of "
                       "DeBERTa (no relative attention, no EMD).")
    if results["constant_classifiers"]:
        out.append(f"Constant classifiers after fine-tuning (one class for every test snippet), left out of the "
                   f"sentiment means and tests: {', '.join(results['constant_classifiers'])}.")
    if results["failed"]:
        out.append(f"Diverged (loss not finite): {', '.join(results['failed'])}.")
    if results["missing"]:
        out.append(f"MISSING (not run yet; run the same command again to resume): {'; '.join(results['missing'])}.")
    for other in OTHERS:
        cs = [c for c in results["claims"] if c["other"] == other and c["metric"]]
        if not cs:
            continue
        p = {t: PAPER["deberta"][t] - PAPER[other][t] for t in ("MNLI-m", "RACE")}
        verdicts = [c["verdict"] for c in cs if c["verdict"]]
        summary = ", ".join(f"{verdicts.count(v)} {v}" for v in ("agrees", "disagrees", "within noise")
                            if verdicts.count(v))
        out.append(f"DeBERTa better than {LABELS[other]}? Paper: +{p['MNLI-m']:.1f} MNLI-m, +{p['RACE']:.1f} RACE. "
                   f"Ours, over {len(cs)} measures: {summary or 'nothing tested yet'}.")
    return out


def _grid_table(results: dict) -> list[str]:
    rates = [f"{lr:g}" for lr in results["lr_grid"]]
    lines = ["| variant | " + " | ".join(f"lr {r}" for r in rates) + " | best |",
             "| --- | " + " | ".join("---:" for _ in rates) + " | ---: |"]
    for v in VARIANTS:
        cells = [("–" if x is None else x if isinstance(x, str) else f"{x:.4f}") for x in results["grid"][v].values()]
        best = results["best_lr"].get(v)
        lines.append(f"| {LABELS[v]} | " + " | ".join(cells) + f" | {'–' if best is None else f'{best:g}'} |")
    return lines


def _main_table(results: dict) -> list[str]:
    shown = [v for v in VARIANTS if v in results["table"]]
    lines = ["| measure | " + " | ".join(LABELS[v] for v in shown) + " |", "| --- |" + " ---: |" * len(shown)]
    for key, label, higher in METRICS:
        cells = [_ms(results["table"][v][key], percent=_percent(key)) for v in shown]
        lines.append(f"| {label} ({'higher' if higher else 'lower'} is better) | " + " | ".join(cells) + " |")
    eq = results["equal_tokens"]
    if eq:
        cells = [_ms(eq["variants"].get(v)) for v in shown]
        lines.append(f"| held-out MLM loss at equal tokens ({eq['tokens']:,}, mid-run for all but DeBERTa) | "
                     + " | ".join(cells) + " |")
    return lines


def _baseline_lines(results: dict) -> list[str]:
    b = results.get("baselines")
    if not b:
        return ["Baselines: not computed yet."]
    s = b["sentiment"]
    tuned = [t["test"] for t in s.get("random_init", [])]
    lines = [f"- Sentiment ({s['test_examples']} test snippets): majority class {s['majority']:.1%}, bag of words "
             f"(Naive Bayes on the {s['train_examples']} training snippets) {s['bag_of_words']:.1%}, DeBERTa "
             f"fine-tuned from random weights {', '.join(f'{x:.1%}' for x in tuned)}."]
    t = b.get("topics") or {}
    if "missing" in t:
        lines.append(f"- BBC topics: not measured ({t['missing']}).")
    elif t:
        lines.append(f"- BBC topics ({t['test_documents']} held-out documents, {t['per_class']} labelled per class): "
                     f"majority {t['majority']:.1%}, bag of words {t['bag_of_words']:.1%}.")
    for v, r in b.get("random_init", {}).items():
        pos = (r.get("position_probe") or {}).get("accuracy")
        top = (r.get("topic_probe") or {}).get("accuracy")
        lines.append(f"- {LABELS[v]} from random weights: position probe "
                     f"{'–' if pos is None else f'{pos:.1%}'}, topic probe {'–' if top is None else f'{top:.1%}'}.")
    return lines


def _plateau_table(results: dict) -> list[str]:
    base = (results.get("unigram_baseline") or {}).get("val_loss")
    lines = ["| run | tokens | held-out loss | below unigram | accuracy | status |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for rid, r in sorted(results["runs"].items()):
        if r.get("failed"):
            lines.append(f"| {rid} | | | | | diverged |")
            continue
        below = "–" if base is None else f"{base - r['val_loss']:.3f}"
        status = "left the plateau"
        if r["on_plateau"]:
            status = "ON THE PLATEAU" + (" (loss above the unigram's)" if base is not None and r["val_loss"] > base
                                         else "")
        lines.append(f"| {rid} | {r['tokens']:,} | {r['val_loss']:.4f} | {below} | {r['val_accuracy']:.1%} | "
                     f"{status} |")
    return lines


def _masking(results: dict) -> str:
    cfg = results["train_config"]
    if not cfg.get("whole_word_masking"):
        return f"Token masking ({cfg['mlm_probability']:.0%}, 80/10/10), not span masking."
    return (f"Span masking of whole words ({cfg['mlm_probability']:.0%} of the tokens, runs of n ≤ 3 words with "
            "p(n) ∝ 1/n, then 80/10/10; training.masking).")


def comparison(results: dict) -> str:
    """comparison.md: provenance, design, the plateau check, the grid, the tables, the verdicts, the paper."""
    hw = results["hardware"]
    where = hw.get("gpu") or f"{hw['cpu']}, {hw['workers']} process(es) x {hw['threads_per_worker']} thread(s)"
    commands = "; ".join(f"`{c}`" for c in results["commands"])
    ended = results.get("wall_s", [])  # none in a folder made before commands kept their time
    wall = (f" Wall time {sum(w['seconds'] for w in ended) / 60:.1f} minutes, the sum over the {len(ended)} of "
            f"{len(results['commands'])} command(s) that ended (a killed one keeps none)." if ended else "")
    text = [
        f"# Pretraining ablation vs. the paper's Table 4 — {run_kind(results)} (`{results['scale']}`, "
        f"{results['layout']} layout)", "",
        f"Made by {commands} ({where}; torch {results['software']['torch']}); report built "
        f"{results['report_built'][:16]}.{wall} {'Complete.' if results['complete'] else 'INCOMPLETE: see what is missing below.'}",
        "", f"{results['description']}.", "",
        f"Design: {results['layout_note']}. {_masking(results)} Every run gets the "
        f"same training FLOPs, those of {results['budget_tokens']:,} DeBERTa tokens ({results['flops_per_run']:.3g} "
        "FLOPs by `training.flops`), with warmup then linear decay to zero over its own steps. Pretraining seeds "
        f"{list(results['seeds'])} pair the runs (same rows, order and masks across variants); the rate of each variant "
        f"is the best of the grid {list(results['lr_grid'])} on seed {results['seeds'][0]}. Verdicts: a two-sided paired "
        f"t-test over seeds at p < {ALPHA}, \"within noise\" otherwise.", "",
        "## Did every run leave the plateau?", "", *plateau_lines(results), "", *_plateau_table(results), "",
        f"## The learning-rate grid (seed {results['seeds'][0]}, final held-out loss)", "", *_grid_table(results), "",
        "## At equal FLOPs (mean ± std over seeds, each variant at its best rate)", "", *_main_table(results), "",
        "## Baselines", "", *_baseline_lines(results), "",
        "## The paper's claims, tested", "",
        "Points: percentage points; loss in nats (lower is better, so a negative difference agrees with the paper).",
        "", *_claim_rows(results), "",
        "## The paper's Table 4 (base models, fine-tuned; accuracy %)", "",
        "| variant | paper row | MNLI-m | RACE |", "| --- | --- | ---: | ---: |",
        *[f"| {LABELS[v]} | {PAPER[v]['paper_row']} | {PAPER[v]['MNLI-m']:.1f} | {PAPER[v]['RACE']:.1f} |"
          for v in VARIANTS], "",
        "## Findings", "", *[f"- {line}" for line in findings(results)], "",
    ]
    return "\n".join(text)
