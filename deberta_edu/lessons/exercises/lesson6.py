"""Lesson 6: the FLOPs of a training step, and whether a difference between two models is real (paired by seed)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

from deberta_edu.ablation.plan import LABELS, VARIANTS, get_scale, variant_configs
from deberta_edu.model.config import DebertaConfig
from deberta_edu.model.positions import table_span
from deberta_edu.training.flops import flops_with_rows, train_flops_per_token

from ._common import CheckResult, _as_number, _call, _checker, _finish, _one_mistake

FLOPS_TOLERANCE = 1e-4  # the smallest term the exercise names (the MLM head's D x D) is at least 0.13% of the total
FLOPS_LENGTHS = (128, 512)  # 128: a sequence shorter than the relative table (R = 2L − 1); 512: the whole table

FLOPS_MISTAKES = {
    "forward only": "a training step is forward + backward, and backward costs about twice the forward: x 3.",
    "1 FLOP per multiply-add": "a multiply-add is 2 FLOPs: a (m x n) @ (n x p) product costs 2 m n p.",
    "no EMD": "the EMD runs the last layer twice more when config.emd is set (on the masked tokens' queries).",
    "EMD on every token": (
        "the EMD decodes only the masked tokens: W_q, W_out, the FFN, the scores and c2p for 15% of the "
        "queries; only K and V of H (4 D²) and p2c's key side (2 R D) run at every position."
    ),
    "head on every token": "the MLM head runs on the masked tokens only: 15% of them (x 0.15).",
    "no position terms": (
        "each position term (config.position_terms: c2p, p2c) adds a product against R relative-table rows: "
        "2 R D per term and pass."
    ),
    "FFN as 4D": "read F from config.intermediate_size: the FFN is 4D wide in most configs, not in every one.",
    "cap at 2L": "L tokens have 2L − 1 distances (−(L − 1) … L − 1), so the cap is 2L − 1 rows, not 2L.",
    "buckets as the table": (
        "2 x position_buckets is the table's size only with log buckets (v3); without them (v1, position_buckets "
        "= −1) the table has 2k rows: R = min(2 x table_span(k, buckets), 2L − 1)."
    ),
    "whole table": (
        "a sequence of L tokens has only 2L − 1 distances, so it gathers at most 2L − 1 rows of the table: "
        "R = min(2 x table_span(k, buckets), 2L − 1) (see relative_rows_and_index)."
    ),
}


def _table_rows(config: DebertaConfig) -> int:
    return 2 * table_span(config.max_relative_positions, config.position_buckets) if config.relative_attention else 0


def _whole_table(config: DebertaConfig, L: int) -> float:
    """The count with R = the whole table, even where the sequence gathers fewer rows (a known mistake)."""
    return flops_with_rows(config, L, _table_rows(config))


def _emd_everywhere(config: DebertaConfig, L: int) -> float:
    """The count with the EMD's two passes over every token (the released code's work, not this library's)."""
    full = train_flops_per_token(config, L, head_fraction=1.0) - train_flops_per_token(config, L, head_fraction=0.15)
    head = 0.85 * 2 * (config.hidden_size ** 2 + config.hidden_size * config.vocab_size)
    return train_flops_per_token(config, L) + full - 3 * head


def _flops_variants(config: DebertaConfig, L: int) -> dict[str, float]:
    right = train_flops_per_token(config, L)
    return {
        "forward only": right / 3,
        "1 FLOP per multiply-add": right / 2,
        "no EMD": train_flops_per_token(config.replace(emd=False), L),
        "EMD on every token": _emd_everywhere(config, L),
        "head on every token": right + 3 * 0.85 * 2 * (config.hidden_size ** 2 + config.hidden_size * config.vocab_size),
        "no position terms": train_flops_per_token(config.replace(terms=("c2c",)), L),
        "whole table": _whole_table(config, L),
        "buckets as the table": flops_with_rows(config, L, min(2 * config.position_buckets, 2 * L - 1)),
        "FFN as 4D": train_flops_per_token(config.replace(intermediate_size=4 * config.hidden_size), L),
        "cap at 2L": flops_with_rows(config, L, min(_table_rows(config), 2 * L)),
    }


def flops_cases() -> list[tuple[str, DebertaConfig]]:
    """(label, config): the five variants of the GPU scale in the v3 layout, and of the CPU scale in v1 with a
    narrower FFN (F = 3D), so that no size, layout or FFN width can be written in instead of read.

    In v3 (256 log buckets) the table of 512 rows is shorter than the 2L − 1 = 1,023 distances at L = 512 and
    longer than the 255 at L = 128, so both sides of the cap are tried; v1 has no buckets (2k rows)."""
    gpu, cpu = variant_configs(get_scale("gpu", layout="v3")), variant_configs(get_scale("cpu", layout="v1"))
    cases = [(f"{LABELS[v]} (GPU scale, v3)", gpu[v].model_config()) for v in VARIANTS]
    for v in VARIANTS:
        config = cpu[v].model_config()
        cases.append((f"{LABELS[v]} (CPU scale, v1, F = 3D)", config.replace(intermediate_size=3 * config.hidden_size)))
    return cases


@_checker
def check_flops(fn: Callable[[DebertaConfig, int], float]) -> CheckResult:
    """``fn(config, L)``: the matrix FLOPs of one training step per token, for the five variants at two sizes
    and layouts (``flops_cases``) at L = 128 and 512, within 0.01% of ``training.flops.train_flops_per_token``."""
    name = "check_flops"
    failures, found, cases = [], [], 0
    for label, config in flops_cases():
        for L in FLOPS_LENGTHS:
            cases += 1
            expected, answer = train_flops_per_token(config, L), _call(fn, config, L)
            got = _as_number(answer)
            if got is None or not math.isfinite(got):
                failures.append(f"{label}, L = {L}: expected a number of FLOPs, got {answer!r}")
                continue
            if abs(got - expected) <= FLOPS_TOLERANCE * expected:
                continue
            failures.append(f"{label}, L = {L}: expected {expected / 1e6:.6g} MFLOP per token, "
                            f"got {got / 1e6:.6g} ({(got - expected) / expected:+.3%})")
            variants = _flops_variants(config, L).items()
            found.append([m for m, x in variants if x != expected and math.isclose(got, x, rel_tol=1e-4)])
    mistake = _one_mistake(found)
    hint = ""
    if mistake:
        hint = f"this looks like '{mistake}': {FLOPS_MISTAKES[mistake]}"
    elif failures:
        hint = ("3 x (layers x [2 (4 D² + 2 D F) + 2 (2 L D) + #terms x 2 R D] + EMD + 0.15 x 2 (D² + D V)), "
                "EMD = 2 x (0.15 x [2 (2 D² + 2 D F) + 2 (2 L D) + c2p's 2 R D] + 4 D² + p2c's 2 R D)")
    return _finish(name, cases, failures, hint)


# (a, b, the verdict): one value per pretraining seed of model A and model B (higher is better), paired by seed
VERDICT_CASES = (
    ([0.70, 0.80, 0.75], [0.68, 0.78, 0.72], "A"),  # seeds differ a lot, the pairs little: only pairing sees it
    ([0.72, 0.74, 0.70], [0.70, 0.69, 0.68], "noise"),  # over 2 SE, but t = 3.0 with 2 degrees of freedom
    ([0.60, 0.62, 0.61, 0.63], [0.66, 0.67, 0.665, 0.69], "B"),
    ([0.70, 0.72, 0.68], [0.71, 0.69, 0.73], "noise"),
    ([0.80, 0.85, 0.90], [0.78, 0.70, 0.74], "noise"),  # Welch p = 0.04 unpaired; the per-seed gains disagree
    ([0.81, 0.83, 0.80, 0.82, 0.84], [0.78, 0.80, 0.77, 0.79, 0.76], "A"),
    ([0.72, 0.75, 0.78], [0.70, 0.72, 0.74], "A"),  # paired p = 0.035: a stricter level than 0.05 misses it
    ([0.74, 0.76, 0.75], [0.725, 0.735, 0.71], "noise"),  # t = 3.67, p = 0.067: np.std's ddof=0, or n df, pass it
    ([0.71, 0.76, 0.80], [0.709, 0.71, 0.70], "noise"),  # every seed gains, but t = 1.76 (p = 0.22)
    ([0.72, 0.68, 0.76], [0.72, 0.68, 0.76], "noise"),  # the same results: p is NaN, and NaN > 0.05 is False
)
ALPHA = 0.05

VERDICT_MISTAKES = {
    "A and B swapped": "A wins when mean(a) − mean(b) is positive (and the test says it is not noise).",
    "2 SE": (
        "'larger than twice its standard error' is a normal-distribution rule; with 3 seeds the t quantile is 4.30, "
        "not 2, so it calls noise a finding. Use the paired t-test: scipy.stats.ttest_rel(a, b).pvalue < 0.05."
    ),
    "unpaired": (
        "the runs are paired by seed (same data order and masks): test the per-seed differences "
        "(scipy.stats.ttest_rel), not two independent groups (ttest_ind), which mixes seed-to-seed spread into the noise."
    ),
    "every seed agrees": (
        "every seed agreeing is not a test: with 3 seeds and no real difference, the three gains share a sign "
        "1 time in 4, and it ignores how large they are. Use the paired t-test: scipy.stats.ttest_rel(a, b).pvalue "
        "< 0.05."
    ),
    "t by hand": (
        "by hand, t = mean(d) / (stdev(d) / √n) with the sample standard deviation (ddof=1; np.std's default "
        "is ddof=0) and n − 1 degrees of freedom (n seeds, one mean estimated); or use scipy.stats.ttest_rel."
    ),
}


def _verdict(a: list[float], b: list[float], rule: str = "paired") -> str:
    """The report's rule (a two-sided paired t-test at p < 0.05), and the rules a learner may use instead."""
    from scipy import stats

    diff = statistics.mean(a) - statistics.mean(b)
    if rule == "2 SE":  # the standard error of the difference of two independent means
        noise = abs(diff) <= 2 * math.sqrt((statistics.stdev(a) ** 2 + statistics.stdev(b) ** 2) / len(a))
    elif rule == "2 SE paired":  # ... or of the mean per-seed difference
        noise = abs(diff) <= 2 * statistics.stdev([x - y for x, y in zip(a, b, strict=True)]) / math.sqrt(len(a))
    elif rule == "every seed agrees":  # a tie is no gain either way
        noise = not (all(x > y for x, y in zip(a, b, strict=True)) or all(x < y for x, y in zip(a, b, strict=True)))
    elif rule in ("ddof 0", "n df"):  # a paired t written out by hand, with one of two slips
        d = [x - y for x, y in zip(a, b, strict=True)]
        n = len(d)
        spread = statistics.pstdev(d) if rule == "ddof 0" else statistics.stdev(d)
        t = diff / (spread / math.sqrt(n)) if spread else math.copysign(math.inf, diff) if diff else math.nan
        noise = not 2 * stats.t.sf(abs(t), n if rule == "n df" else n - 1) < ALPHA
    else:
        test = stats.ttest_rel(a, b) if rule == "paired" else stats.ttest_ind(a, b, equal_var=False)
        noise = not test.pvalue < ALPHA
    if noise:
        return "noise"
    return "A" if diff > 0 else "B"


@_checker
def check_verdict(fn: Callable[[list[float], list[float]], str]) -> CheckResult:
    """``fn(a, b)``: "A", "B" or "noise" for two lists of values (one per pretraining seed, paired by seed,
    higher is better); noise unless a two-sided paired t-test gives p < 0.05."""
    name = "check_verdict"
    failures, got = [], []
    for a, b, want in VERDICT_CASES:
        answer = _call(fn, list(a), list(b))
        got.append(answer)
        if answer != want:
            failures.append(f"my_verdict({a}, {b}): expected {want!r}, got {answer!r}")
    swap = {"A": "B", "B": "A", "noise": "noise"}
    by_rule = lambda rule: [_verdict(a, b, rule=rule) for a, b, _ in VERDICT_CASES]  # noqa: E731
    variants = {  # each mistake: the answers it gives (a 2-SE rule with either standard error)
        "A and B swapped": [[swap[want] for _, _, want in VERDICT_CASES]],
        "2 SE": [by_rule("2 SE"), by_rule("2 SE paired")],
        "unpaired": [by_rule("welch")],
        "every seed agrees": [by_rule("every seed agrees")],
        "t by hand": [by_rule("ddof 0"), by_rule("n df")],
    }
    mistake = next((m for m, answers in variants.items() if failures and got in answers), None)
    hint = ""
    if mistake:
        hint = f"this looks like '{mistake}': {VERDICT_MISTAKES[mistake]}"
    elif failures:
        hint = ('p = scipy.stats.ttest_rel(a, b).pvalue; "noise" if not p < 0.05, '
                'else "A" if mean(a) > mean(b) else "B"')
    return _finish(name, len(VERDICT_CASES), failures, hint)
