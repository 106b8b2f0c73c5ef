"""The baselines a pretrained encoder is measured against, and the probe that reads its features.

    majority        the best constant answer: the most frequent *test* class
    naive Bayes     multinomial, on lower-cased words, add-one smoothing
    tf-idf logistic L2 logistic regression on unit tf-idf vectors of the same words (its penalty chosen on
                    training-pool documents: ``selection``)
    linear probe    L2 multinomial logistic regression on (standardized) features, fitted by L-BFGS: deterministic,
                    so an experiment's variance is its labels' draw; tf-idf logistic is this probe on tf-idf vectors

Each returns the test accuracy, or with ``per_document`` whether each test document was right (what the
paired bootstrap of ``significance`` resamples). ``downstream`` runs them beside the networks.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import torch

from .significance import hits_or_accuracy

WORD = re.compile(r"[a-z0-9']+")
TFIDF_PENALTY = 1e-4  # the tf-idf baseline's l2: the best of four on the training pool (``selection``)


def words(text: str) -> list[str]:
    """The lower-cased words a bag-of-words baseline reads."""
    return WORD.findall(text.lower())


def linear_probe(train_x: torch.Tensor, train_y: Sequence[int], test_x: torch.Tensor, test_y: Sequence[int],
                 l2: float = 1e-2, classes: int | None = None, standardize: bool = True,
                 per_document: bool = False) -> float | list[bool]:
    """Test accuracy of an L2-regularized multinomial logistic regression on (by default standardized) features
    (with ``per_document``, whether each test document was right)."""
    y = torch.as_tensor(list(train_y))
    classes = classes or max(int(y.max()), max(test_y)) + 1
    xs, xt = train_x, test_x
    if standardize:
        mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
        xs, xt = (train_x - mean) / std, (test_x - mean) / std
    w = torch.zeros(xs.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w + b, y) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (xt @ w + b).argmax(1)
    return hits_or_accuracy(pred.tolist(), test_y, per_document)


def naive_bayes(train_texts: Sequence[str], train_y: Sequence[int], test_texts: Sequence[str],
                test_y: Sequence[int], per_document: bool = False) -> float | list[bool]:
    """Test accuracy of multinomial Naive Bayes on lower-cased word counts (add-one smoothing)."""
    classes = sorted(set(train_y))
    counts = {c: Counter() for c in classes}
    for text, c in zip(train_texts, train_y, strict=True):
        counts[c].update(words(text))
    vocab = set().union(*counts.values())
    prior = {c: math.log(list(train_y).count(c) / len(train_y)) for c in classes}
    total = {c: sum(counts[c].values()) + len(vocab) for c in classes}
    predicted = []
    for text in test_texts:
        known = [w for w in words(text) if w in vocab]
        score = {c: prior[c] + sum(math.log((counts[c][w] + 1) / total[c]) for w in known) for c in classes}
        predicted.append(max(score, key=score.get))
    return hits_or_accuracy(predicted, test_y, per_document)


def tfidf_logistic(train_texts: Sequence[str], train_y: Sequence[int], test_texts: Sequence[str],
                   test_y: Sequence[int], l2: float = TFIDF_PENALTY, per_document: bool = False) -> float | list[bool]:
    """Test accuracy of L2-regularized logistic regression on tf-idf vectors of lower-cased words: a count
    enters as 1 + log(count), times the smoothed inverse document frequency log((1 + n) / (1 + df)) + 1 of the
    training texts, each vector scaled to unit length. ``l2`` barely matters (1e-4 to 1e-1 move it a point on
    training-pool documents; the default is the best of them: ``selection``)."""
    counts = [Counter(words(t)) for t in train_texts]
    index = {w: i for i, w in enumerate(sorted(set().union(*counts)))}

    def vectors(bags):
        x = torch.zeros(len(bags), len(index))
        for n, bag in enumerate(bags):
            seen = [(index[w], k) for w, k in bag.items() if w in index]
            if seen:
                cols, k = zip(*seen, strict=True)
                x[n, list(cols)] = 1 + torch.log(torch.tensor(k, dtype=torch.float))
        return x

    train_x = vectors(counts)
    idf = torch.log((1 + len(counts)) / (1 + (train_x > 0).sum(0))) + 1
    test_x = vectors([Counter(words(t)) for t in test_texts])
    unit = lambda x: torch.nn.functional.normalize(x * idf, dim=1)  # noqa: E731
    return linear_probe(unit(train_x), train_y, unit(test_x), test_y, l2, standardize=False, per_document=per_document)


def majority(test_y: Sequence[int], per_document: bool = False) -> float | list[bool]:
    """Accuracy of the best constant classifier: always the most frequent test class."""
    return hits_or_accuracy([Counter(test_y).most_common(1)[0][0]] * len(test_y), test_y, per_document)
