"""Lesson 6, the report: our numbers beside the paper's Table 4, the verdicts, the Markdown and the figures.

    compare_with_paper     each claim of Table 4 (DeBERTa beats each other row), checked against the noise
    assert_learning        every run's losses are finite and fell (a run that did not learn proves nothing)
    results_table, findings, comparison_markdown     the table and the sentences, from the numbers
    plot_curves, plot_summary                        the two pictures (through deberta_edu.figures)
    write_report, load_results, rebuild_report, committed_results    the files of a run
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

from deberta_edu.facts import RESULTS_ROOT
from deberta_edu.figures import save_figure, smooth, subplots

from .plan import LABELS, NOISE_RUN, VARIANTS

SCHEMA = "deberta_edu/ablation/1"
RESULTS_FILE = "results.json"
CURVES_FILE = "curves.png"
SUMMARY_FILE = "summary.png"
COMPARISON_FILE = "comparison.md"

# Table 4 of the paper (base models, dev sets): MNLI-m accuracy and RACE accuracy, in %. The paper's
# BERT-style row is RoBERTa-ReImp_base, its own re-implementation of RoBERTa trained like DeBERTa_base.
PAPER = {
    "bert": {"paper_row": "RoBERTa-ReImp_base", "MNLI-m": 84.9, "RACE": 66.8},
    "deberta": {"paper_row": "DeBERTa_base", "MNLI-m": 86.3, "RACE": 71.7},
    "no_emd": {"paper_row": "−EMD", "MNLI-m": 86.1, "RACE": 70.3},
    "no_c2p": {"paper_row": "−C2P", "MNLI-m": 85.9, "RACE": 69.3},
    "no_p2c": {"paper_row": "−P2C", "MNLI-m": 86.0, "RACE": 69.6},
}


# ----------------------------------------------------------------------------- the paper, side by side


def _claim(v: dict, other: str, loss_noise: float | None) -> dict:
    """One claim, "DeBERTa better than <other>", on held-out loss and on fine-tuning accuracy."""
    d_loss = v[other]["val_loss"] - v["deberta"]["val_loss"]  # > 0: DeBERTa is better
    if loss_noise is None:
        loss_verdict = "agrees" if d_loss > 0 else "disagrees"
        loss_verdict += " (no seed-noise estimate at this scale)"
    elif abs(d_loss) <= loss_noise:
        loss_verdict = "within seed noise"
    else:
        loss_verdict = "agrees" if d_loss > 0 else "disagrees"
    a, b = v["deberta"]["finetune"], v[other]["finetune"]
    d_acc = a["test_mean"] - b["test_mean"]
    n = len(a["test"])
    se = math.sqrt((a["test_std"] ** 2 + b["test_std"] ** 2) / n) if n > 1 else 0.0
    acc_verdict = "within fine-tuning noise" if abs(d_acc) <= 2 * se else ("agrees" if d_acc > 0 else "disagrees")
    return {"val_loss_delta": d_loss, "val_loss_verdict": loss_verdict, "finetune_delta": d_acc,
            "finetune_2se": 2 * se, "finetune_verdict": acc_verdict}


def compare_with_paper(results: dict) -> dict:
    """Each of the paper's claims (DeBERTa beats each other row of Table 4), checked on our two measures.

    A difference counts only when it is larger than the noise: for held-out loss, the gap between two
    pretraining seeds of DeBERTa (the noise run); for fine-tuning, twice the standard error of the
    difference of the two means over fine-tuning seeds.
    """
    v, noise = results["variants"], results.get("noise")
    finished = [x for x in VARIANTS if not v[x].get("failed")]
    loss_noise = None
    if noise and not noise.get("failed") and "deberta" in finished:
        loss_noise = abs(noise["val_loss"] - v["deberta"]["val_loss"])
    claims = []
    for other in ("bert", "no_emd", "no_c2p", "no_p2c"):
        paper = {task: PAPER["deberta"][task] - PAPER[other][task] for task in ("MNLI-m", "RACE")}
        claim = {"claim": f"DeBERTa better than {LABELS[other]}", "other": other, "paper_delta": paper}
        if "deberta" not in finished or other not in finished:
            claims.append({**claim, "failed": "a run did not finish"})
        else:
            claims.append({**claim, **_claim(v, other, loss_noise)})
    return {
        "claims": claims,
        "seed_noise_val_loss": loss_noise,
        "paper_order_mnli": sorted(VARIANTS, key=lambda x: -PAPER[x]["MNLI-m"]),
        "paper_order_race": sorted(VARIANTS, key=lambda x: -PAPER[x]["RACE"]),
        "our_order_val_loss": sorted(finished, key=lambda x: v[x]["val_loss"]),
        "our_order_finetune": sorted(finished, key=lambda x: -v[x]["finetune"]["test_mean"]),
        "failed_runs": [x for x in VARIANTS if x not in finished] + (
            [NOISE_RUN] if noise and noise.get("failed") else []),
    }


def results_table(results: dict) -> str:
    """The side-by-side table in Markdown: the paper's Table 4 rows and our numbers for the same variants."""
    lines = [
        "| variant | paper row | paper MNLI-m | paper RACE | held-out MLM loss | masked-token acc. | perplexity "
        "| sentiment test acc. (mean ± std) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [(v, results["variants"][v]) for v in VARIANTS]
    if results.get("noise"):
        rows.append((NOISE_RUN, results["noise"]))
    for name, r in rows:
        p = PAPER.get(name, {"paper_row": "(seed-noise yardstick)", "MNLI-m": None, "RACE": None})
        if r.get("failed"):
            lines.append(f"| {r['label']} | {p['paper_row']} | {p['MNLI-m'] or '–'} | {p['RACE'] or '–'} "
                         f"| failed: {r['failed'][:60]} | | | |")
            continue
        ft = r["finetune"]
        mnli, race = ("–" if p[t] is None else f"{p[t]:.1f}" for t in ("MNLI-m", "RACE"))
        lines.append(f"| {r['label']} | {p['paper_row']} | {mnli} | {race} | {r['val_loss']:.4f} "
                     f"| {r['val_accuracy']:.2%} | {r['val_perplexity']:.1f} "
                     f"| {ft['test_mean']:.2%} ± {ft['test_std']:.2%} |")
    return "\n".join(lines)


def findings(results: dict) -> list[str]:
    """Plain sentences: where the small-scale result agrees with the paper and where it does not."""
    c = results["comparison"]
    out = []

    def names(order):
        return " > ".join(LABELS[x] for x in order)

    out.append(f"Paper's order (MNLI-m): {names(c['paper_order_mnli'])}; (RACE): {names(c['paper_order_race'])}.")
    out.append(f"Our order by held-out MLM loss (lower is better): {names(c['our_order_val_loss'])}.")
    out.append(f"Our order by sentiment test accuracy: {names(c['our_order_finetune'])}.")
    if c["seed_noise_val_loss"] is not None:
        out.append(f"Two pretraining seeds of DeBERTa differ by {c['seed_noise_val_loss']:.4f} nats of held-out loss: "
                   "smaller differences between variants are not findings.")
    base = results.get("unigram_baseline")
    if base:
        stuck = [LABELS[x] for x in VARIANTS if not results["variants"][x].get("failed")
                 and results["variants"][x]["val_loss"] > base["val_loss"] - 0.1]
        out.append(f"Word frequencies alone give a held-out loss of {base['val_loss']:.3f}"
                   + (f"; {', '.join(stuck)} ended within 0.1 nats of it: still on the plateau where the context is "
                      "not used yet." if stuck else "; every variant ended well below it."))
    if c.get("failed_runs"):
        out.append(f"Did not finish (diverged): {', '.join(c['failed_runs'])}; claims about them are not tested.")
    for claim in c["claims"]:
        p = claim["paper_delta"]
        if claim.get("failed"):
            continue
        out.append(
            f"{claim['claim']}: paper +{p['MNLI-m']:.1f} MNLI-m, +{p['RACE']:.1f} RACE. Ours: held-out loss "
            f"{'lower' if claim['val_loss_delta'] > 0 else 'higher'} by {abs(claim['val_loss_delta']):.4f} nats "
            f"({claim['val_loss_verdict']}); sentiment accuracy {claim['finetune_delta']:+.2%} "
            f"(2 SE = {claim['finetune_2se']:.2%}; {claim['finetune_verdict']})."
        )
    return out


def run_kind(results: dict) -> str:
    """How a run is labelled everywhere: a GPU run, the CPU-scale reduced reproduction, or a smoke test."""
    if not results["cpu_scale"]:
        return "GPU"
    return "CPU-scale" if results["scale"] == "cpu" else f"{results['scale']} scale (CPU)"


def comparison_markdown(results: dict) -> str:
    scale = {"GPU": "GPU reproduction", "CPU-scale": "CPU-scale reduced reproduction"}.get(run_kind(results),
                                                                                        run_kind(results))
    hw = results["hardware"]
    where = hw["gpu"] or f"{hw['cpu']}, {hw['workers']} process(es) x {hw['threads_per_worker']} thread(s)"
    cfg = results["train_config"]
    text = [
        f"# Pretraining ablation vs. the paper's Table 4 — {scale} (`{results['scale']}`)",
        "",
        f"Produced by `{results['command']}` on {results['created'][:10]} ({where}; torch {results['software']['torch']}), "
        f"{results['wall_time_s'] / 60:.1f} minutes wall time.",
        "",
        f"{results['description']}. Every variant: the same {cfg['steps']} steps of {cfg['batch_size']} x "
        f"{cfg['seq_length']} tokens ({results['tokens_per_run']:,} tokens) from `{cfg['source']}`, the same data "
        f"order, masks and seed {cfg['seed']}; only the variant differs. Held-out numbers: masked tokens of the "
        "validation split, the same masks for every model. Sentiment: plain fine-tuning (λ = 0), test accuracy over "
        f"seeds {results['finetune_config']['seeds']}.",
        "",
        results_table(results),
        "",
        "The paper's numbers are MNLI-m and RACE accuracy (%) after pretraining base-size models on billions of "
        "tokens; ours are a much smaller model and run, measured on the pretraining task itself and on a small "
        "sentiment task. Compare directions, not magnitudes.",
        "",
        "## Where it agrees and where it does not",
        "",
        *[f"- {line}" for line in findings(results)],
        "",
    ]
    return "\n".join(text)


def assert_learning(results: dict) -> None:
    """Every variant's losses are finite and fall: held-out loss below its start, late train loss below early."""
    problems = []
    for name, r in {**results["variants"], **({NOISE_RUN: results["noise"]} if results.get("noise") else {})}.items():
        if r.get("failed"):
            problems.append(f"{name}: {r['failed']}")
        elif not r["all_losses_finite"]:
            problems.append(f"{name}: a loss is not finite")
        elif r["val_loss_start"] is not None and not r["val_loss"] < r["val_loss_start"]:
            problems.append(f"{name}: held-out loss {r['val_loss']:.4f} did not fall below {r['val_loss_start']:.4f}")
        elif not r["train_loss_last"] < r["train_loss_first"]:
            problems.append(f"{name}: training loss {r['train_loss_last']:.4f} did not fall below "
                            f"{r['train_loss_first']:.4f}")
    assert not problems, "pretraining did not learn: " + "; ".join(problems)


# ----------------------------------------------------------------------------- pictures


def _finished_runs(results: dict) -> list[tuple[str, dict, str]]:
    """(name, summary, line style) of every run that finished: the five variants, then the noise run dotted."""
    runs = [(v, results["variants"][v], "-") for v in VARIANTS]
    if results.get("noise"):
        runs.append((NOISE_RUN, results["noise"], ":"))
    return [run for run in runs if not run[1].get("failed")]


def plot_curves(results: dict):
    """Held-out MLM loss, held-out accuracy on masked tokens and smoothed training loss, against tokens seen."""
    fig, axes = subplots(1, 3, figsize=(15, 4))
    runs = _finished_runs(results)
    for name, r, style in runs:
        color = None if name != NOISE_RUN else "tab:orange"
        ev, tr = r["curves"]["eval"], r["curves"]["train"]
        line = axes[0].plot(ev["tokens"], ev["val_loss"], style, marker="o", ms=3, label=r["label"], color=color)[0]
        color = line.get_color()
        axes[1].plot(ev["tokens"], ev["val_accuracy"], style, marker="o", ms=3, label=r["label"], color=color)
        axes[2].plot(tr["tokens"], smooth(tr["loss"], 0.8), style, label=r["label"], color=color)
    titles = ("held-out MLM loss", "held-out accuracy on masked tokens", "training loss (smoothed)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set(xlabel="tokens seen", title=title)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{run_kind(results)}: the five variants, the same data and steps")
    axes[0].set_ylabel("nats per masked token")
    if results.get("unigram_baseline"):
        for ax, key in ((axes[0], "val_loss"), (axes[1], "val_accuracy")):
            ax.axhline(results["unigram_baseline"][key], color="gray", ls="--", lw=1, label="word frequencies alone")
    # the end of training is where variants differ: zoom in on the last 60% of the held-out loss
    last = [r["curves"]["eval"]["val_loss"] for name, r, _ in runs if name != NOISE_RUN]
    cut = [curve[len(curve) * 2 // 5:] for curve in last]
    lo, hi = min(min(c) for c in cut), max(max(c) for c in cut)
    if hi > lo:
        axes[0].set_ylim(lo - 0.1 * (hi - lo), hi + 0.3 * (hi - lo))
    axes[0].legend(fontsize=8)
    return fig


def _loss_bars(ax, results: dict, kind: str) -> None:
    """Held-out loss of each variant as bars, the noise run and the unigram baseline as lines."""
    losses = [results["variants"][v].get("val_loss", float("nan")) for v in VARIANTS]  # a failed run: no bar
    ax.bar(range(len(VARIANTS)), losses, color="tab:blue")
    finite = [y for y in losses if math.isfinite(y)] or [0.0]
    if results.get("noise") and not results["noise"].get("failed"):
        ax.axhline(results["noise"]["val_loss"], color="tab:orange", ls=":", label="DeBERTa, another seed")
    if results.get("unigram_baseline"):
        ax.axhline(results["unigram_baseline"]["val_loss"], color="gray", ls="--", lw=1,
                   label="word frequencies alone")
        finite.append(results["unigram_baseline"]["val_loss"])
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    lo, hi = min(finite), max(finite)
    ax.set_ylim(lo - max(0.5 * (hi - lo), 0.02), hi + max(0.5 * (hi - lo), 0.02))
    ax.set(title=f"ours, {kind}: held-out MLM loss (lower is better)", ylabel="nats per masked token")


def plot_summary(results: dict):
    """Ours (held-out loss; sentiment accuracy with every seed) beside the paper's Table 4 (MNLI-m, RACE)."""
    x = range(len(VARIANTS))
    fig, axes = subplots(1, 3, figsize=(15, 4))
    kind = run_kind(results)
    _loss_bars(axes[0], results, kind)
    for i, v in enumerate(VARIANTS):
        if results["variants"][v].get("failed"):
            continue
        ft = results["variants"][v]["finetune"]
        axes[1].errorbar(i, ft["test_mean"], yerr=ft["test_std"], fmt="o", color="tab:green", capsize=4)
        axes[1].plot([i] * len(ft["test"]), ft["test"], "x", color="gray", ms=5)
    axes[1].set(title=f"ours, {kind}: sentiment test accuracy", ylabel="mean ± std over seeds (x: each seed)")
    width = 0.38
    for k, (task, color) in enumerate((("MNLI-m", "tab:purple"), ("RACE", "tab:red"))):
        axes[2].bar([i + (k - 0.5) * width for i in x], [PAPER[v][task] for v in VARIANTS], width, label=task,
                    color=color)
    axes[2].set_ylim(60, 90)
    axes[2].set(title="paper, Table 4: base models, fine-tuned", ylabel="accuracy (%)")
    axes[2].legend(fontsize=8, loc="upper left", ncol=2)
    for ax in axes:
        ax.set_xticks(list(x), [LABELS[v] for v in VARIANTS])
        ax.grid(alpha=0.3, axis="y")
    return fig


# ----------------------------------------------------------------------------- files


def write_report(results: dict, out_dir: str | Path) -> Path:
    """results.json, curves.png, summary.png and comparison.md in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results["files"] = [RESULTS_FILE, CURVES_FILE, SUMMARY_FILE, COMPARISON_FILE]
    save_figure(plot_curves(results), out / CURVES_FILE, dpi=72)
    save_figure(plot_summary(results), out / SUMMARY_FILE, dpi=72)
    (out / COMPARISON_FILE).write_text(comparison_markdown(results), encoding="utf-8")
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def load_results(folder: str | Path) -> dict:
    path = Path(folder) / RESULTS_FILE
    results = json.loads(path.read_text(encoding="utf-8"))
    if results.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not an ablation result (schema {results.get('schema')!r}, expected {SCHEMA!r})")
    return results


def rebuild_report(folder: str | Path) -> dict:
    """Redo the comparison, pictures and text of a finished run from its results.json (no training)."""
    results = load_results(folder)
    results["comparison"] = compare_with_paper(results)
    results["report_rebuilt"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    write_report(results, folder)
    return results


def committed_results(root: str | Path | None = None) -> Path | None:
    """The committed real run to show: the GPU one if there is one, else the CPU-scale one."""
    root = Path(root) if root else RESULTS_ROOT
    for name in ("ablation-gpu", "ablation-cpu"):
        if (root / name / RESULTS_FILE).exists():
            return root / name
    return None
