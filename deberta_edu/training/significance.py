"""How sure a difference between two arms is: over the draws of labelled documents, and over the test documents.

An arm is one way of classifying (a baseline, a probe, a fine-tuned network), run once per draw of labelled
documents and scored on one fixed test set. ``summary`` keeps its accuracies, and which test documents it
got right. ``welch`` tests a difference across the draws; ``bootstrap`` resamples the test documents too.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch


def fraction_right(hits: Sequence[bool]) -> float:
    """The accuracy of a run's hits (0 for no documents at all)."""
    return sum(hits) / max(1, len(hits))


def hits_or_accuracy(predicted: Sequence[int], test_y: Sequence[int], per_document: bool) -> float | list[bool]:
    """Whether each test document was classified right (``per_document``), or the fraction that was."""
    hits = [int(p) == int(t) for p, t in zip(predicted, test_y, strict=True)]
    return hits if per_document else fraction_right(hits)


def summary(values: Sequence[float], hits: Sequence[Sequence[bool]] | None = None) -> dict:
    """Mean, std and runs of an arm's accuracies; with ``hits``, each run's right (1) and wrong (0) test
    documents as a string of 0s and 1s in test order, for ``bootstrap``."""
    out = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
           "runs": list(values)}
    if hits is not None:
        out["hits"] = hit_strings(hits)
    return out


def hit_strings(hits: Sequence[Sequence[bool]]) -> list[str]:
    """Each run's right (1) and wrong (0) test documents as a string, in test order: how results files keep them."""
    return ["".join("1" if h else "0" for h in run) for run in hits]


def repeated_seeds(seeds: Sequence[int]) -> str | None:
    """What is wrong with a command's --seeds that repeat one (it would count one run twice in every mean and p)."""
    if len(set(seeds)) != len(seeds):
        return f"--seeds repeats a seed ({list(seeds)}): each seed is one run, give distinct ones"
    return None


def welch(a: Sequence[float], b: Sequence[float]) -> dict:
    """Welch's t-test of mean(a) > mean(b) (one-sided) and two-sided, from scipy."""
    import warnings

    from scipy import stats

    with warnings.catch_warnings():  # an arm of identical runs (all stuck on one plateau) has no variance, and
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)  # the test rests on the
        two = stats.ttest_ind(a, b, equal_var=False)  # other arm's, rightly; scipy warns of rounding near zero
        one = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    return {"difference": statistics.fmean(a) - statistics.fmean(b), "t": float(two.statistic),
            "p_two_sided": float(two.pvalue), "p_greater": float(one.pvalue)}


def tested(a: Sequence[float], b: Sequence[float], a_hits: Sequence[str] | None = None,
           b_hits: Sequence[str] | None = None) -> dict:
    """``welch(a, b)``; where both arms kept their hits, the ``bootstrap`` over them beside it ("bootstrap")."""
    test = welch(a, b)
    if a_hits is not None and b_hits is not None:
        test["bootstrap"] = bootstrap(a_hits, b_hits)
    return test


def sure(test: dict, level: float = 0.05) -> bool:
    """Both p-values of a ``tested`` difference below ``level``: the draws and the test documents agree."""
    return max(test["p_two_sided"], test["bootstrap"]["p_two_sided"]) < level


def unsure(test: dict) -> bool:
    """The test documents cannot tell (bootstrap p above 0.05), whatever the draws say."""
    return test["bootstrap"]["p_two_sided"] > 0.05


BOOTSTRAP_SAMPLES = 10_000


def bootstrap(a_hits: Sequence[str], b_hits: Sequence[str], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """Two arms' difference in mean accuracy, with the test documents counted as a sample too.

    Welch's test across draws asks whether another draw of labelled documents would change the verdict; it
    takes the test documents as fixed. With 125 of them, which documents happen to be in the test set moves
    an accuracy by a few points (one document is 0.8 of a point), the same way for every draw. This
    resamples both, paired: draws with replacement (the same draws for both arms, as in the experiment),
    and test documents with replacement (the same documents for both arms and every draw). ``a_hits`` and
    ``b_hits`` are ``summary``'s hit strings, one per draw, in the same draw order. Returns the difference,
    its 95% interval, and a two-sided p-value: twice the smaller tail of resampled differences at or beyond
    zero (at least 1 / ``samples``). Resampling both levels errs on the cautious side (wide intervals)."""
    if not a_hits or len(a_hits) != len(b_hits) or {len(h) for h in (*a_hits, *b_hits)} != {len(a_hits[0])}:
        raise ValueError("bootstrap needs the same draws and the same test documents for both arms")
    as_tensor = lambda hits: torch.tensor([[c == "1" for c in h] for h in hits], dtype=torch.float64)  # noqa: E731
    diff = as_tensor(a_hits) - as_tensor(b_hits)  # (draws, documents)
    draws, docs = diff.shape
    g = torch.Generator().manual_seed(seed)
    draw_weight = torch.zeros(samples, draws, dtype=torch.float64).scatter_add_(
        1, torch.randint(draws, (samples, draws), generator=g), torch.ones(samples, draws, dtype=torch.float64))
    doc_weight = torch.zeros(samples, docs, dtype=torch.float64).scatter_add_(
        1, torch.randint(docs, (samples, docs), generator=g), torch.ones(samples, docs, dtype=torch.float64))
    resampled = ((draw_weight @ diff) * doc_weight).sum(1) / (draws * docs)
    tail = min((resampled <= 0).double().mean().item(), (resampled >= 0).double().mean().item())
    low, high = torch.quantile(resampled, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"difference": diff.mean().item(), "ci95": [low, high], "p_two_sided": max(min(1.0, 2 * tail), 1 / samples),
            "samples": samples}
