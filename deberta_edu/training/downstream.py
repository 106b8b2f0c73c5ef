"""Did pretraining help? Frozen features, a linear probe, fine-tuning, and the baselines that give the numbers meaning.

A pretrained encoder is worth something when its features separate classes that a model from random
weights cannot, with few labels, and better than counting words. Every arm here sees the same labelled
documents (one draw per seed) and is scored on the same held-out test set:

    majority        the best constant answer: the most frequent *test* class (with balanced training
                    labels the training majority is a tie, so this is the upper bound of any constant)
    bag of words    multinomial Naive Bayes on lower-cased words (add-one smoothing)
    tf-idf logistic logistic regression on tf-idf word vectors (stronger than Naive Bayes on the topics,
                    a little weaker on the short sentiment snippets)
    random init     the same architecture with freshly drawn weights, frozen features + linear probe
    pretrained      the trained encoder, frozen features + the same linear probe

and, on the topics at 20 labels per class and on the sentiment snippets, the two networks *fine-tuned*
(``finetuned_accuracy``): every weight trained on the labelled documents, with the same recipe for both.
Fine-tuned on sentiment, the course model shows no difference from random init (62.5% and 62.7%, p = 0.76; the
bootstrap's 95% interval, -2.7 to +2.2 points, leaves a small gain or loss possible), and
both stay below both bags of words (Naive Bayes 66.1%, tf-idf logistic regression 65.2%).

The topics are also run at 2 to 50 labels per class (``topic_curve``): pretrained features beat Naive
Bayes when labels are few (2 to 10 per class), are 2 points behind it at 20 (confirmed by the draws only) and
4 behind at 50; against tf-idf logistic regression no difference is shown at 2 and 5 per class, which is
ahead from 10
(results/pretraining-value/, lesson 4).

Every difference is tested twice: Welch's t across the draws (``welch``), which takes the test documents as
fixed, and a paired bootstrap over the draws *and* the test documents (``bootstrap``), for which every arm
keeps which test documents it got right. With BBC's 125 test documents the two can disagree: fine-tuned, the
course model is ahead of Naive Bayes on all ten draws (Welch p = 0.001), by a margin a few documents decide
(bootstrap p = 0.1).

Features are the encoder's last hidden states, mean-pooled over the real tokens of a whole document: up to
``max_chunks`` = 16 chunks of ``max_length`` = 128 tokens, as fine-tuning reads it (every test document whole;
the bags of words read whole documents too). The first committed runs read only the first 4 chunks (about
500 tokens); on training-pool documents outside the draws that costs the pretrained probe a quarter of a point
and random init three (``selection``, results/pretraining-value/selection.json, where the tf-idf baseline's
penalty and the fine-tuning recipe were chosen too), so it flattered pretraining's lead. The probe is
multinomial logistic regression with an L2 penalty on standardized features, fitted by L-BFGS: deterministic,
so its variance is the labels' draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict

import torch

from .baselines import TFIDF_PENALTY, linear_probe, majority, naive_bayes, tfidf_logistic
from .documents import FinetuneRecipe, document_features, finetuned_accuracy
from .finetune import random_weights
from .journal import Journal, replaced_by_other_settings
from .significance import BOOTSTRAP_SAMPLES, fraction_right, summary, tested

# the frozen probe reads whole documents, as fine-tuning does: up to 16 chunks of 128 tokens (every test document
# whole; 12 of 2,002 pool documents cut); on the training pool the better reading for both networks (``selection``)
PROBE_LENGTH, PROBE_CHUNKS = 128, FinetuneRecipe().max_chunks


def compare_arms(draw: Callable[[int], tuple[list[str], list[int]]], test: tuple[list[str], list[int]],
                 encoders: dict[str, Callable[[int], tuple[object, object]]], seeds: Sequence[int],
                 fixed: Sequence[str] = (), max_length: int = PROBE_LENGTH, max_chunks: int = PROBE_CHUNKS,
                 finetuned: Sequence[str] = (), recipe: FinetuneRecipe | None = None,
                 progress: Callable[[str], None] = print, journal: Journal | None = None) -> dict:
    """Every arm on every seed. ``draw(seed)`` gives the labelled training texts; ``encoders[name](seed)``
    gives (model, tokenizer) for a probe arm (a random-init arm draws its weights from the seed). The arms
    named in ``fixed`` do not depend on the seed (a trained model): their test features are computed once.
    Each encoder named in ``finetuned`` is also fine-tuned on the same draw: the arm "<name>, fine-tuned".
    A ``journal`` keeps each seed's hits as it ends, and gives back those of seeds an earlier command made."""
    test_texts, test_y = test
    names = ["majority", "bag of words", "tf-idf logistic", *encoders, *(f"{name}, fine-tuned" for name in finetuned)]
    arms: dict[str, list[list[bool]]] = {name: [] for name in names}
    cache: dict[str, torch.Tensor] = {}

    def one_seed(seed: int) -> dict[str, list[bool]]:
        texts, y = draw(seed)
        row = {"majority": majority(test_y, per_document=True),
               "bag of words": naive_bayes(texts, y, test_texts, test_y, per_document=True),
               "tf-idf logistic": tfidf_logistic(texts, y, test_texts, test_y, per_document=True)}
        for name, make in encoders.items():
            model, tokenizer = make(seed)
            test_x = cache.get(name) if name in fixed else None
            if test_x is None:
                test_x = document_features(model, tokenizer, test_texts, max_length, max_chunks)
                if name in fixed:
                    cache[name] = test_x
            train_x = document_features(model, tokenizer, texts, max_length, max_chunks)
            row[name] = linear_probe(train_x, y, test_x, test_y, classes=max(test_y) + 1, per_document=True)
            if name in finetuned:
                row[f"{name}, fine-tuned"] = finetuned_accuracy(
                    model, tokenizer, texts, y, test_texts, test_y, seed, max(test_y) + 1, recipe or FinetuneRecipe(),
                    per_document=True)
        return row

    journal = journal or Journal()
    for seed in seeds:
        kept = f"seed {seed}" in journal
        row = journal.run(f"seed {seed}", lambda seed=seed: one_seed(seed))
        for name in names:
            arms[name].append(row[name])
        progress(f"seed {seed}{' (read back)' * kept}: "
                 + ", ".join(f"{k} {fraction_right(v[-1]):.3f}" for k, v in arms.items()))
    return {name: summary([fraction_right(run) for run in hits], hits) for name, hits in arms.items()}


BASELINES = ("random init", "bag of words", "tf-idf logistic")  # what the pretrained arm is tested against


def against_baselines(arms: dict, suffix: str = "", prefix: str = "") -> dict:
    """Welch tests of the arm "pretrained<suffix>" against random init (fine-tuned too, with a suffix) and
    both bag-of-words baselines, named "<prefix>pretrained vs <baseline>"; each with the ``bootstrap`` over
    draws and test documents beside it, where the arms kept their hits."""
    mine = arms[f"pretrained{suffix}"]
    others = {b: arms[b + suffix if b == "random init" else b] for b in BASELINES}
    return {f"{prefix}pretrained vs {b}": tested(mine["runs"], other["runs"], mine.get("hits"), other.get("hits"))
            for b, other in others.items()}


# ----------------------------------------------------------------------------- the committed experiment


CURVE_LABELS = (2, 5, 10, 20, 50)  # labelled documents per class


def topic_curve(model, tokenizer, per_class=CURVE_LABELS, seeds=range(10), progress=print, journal=None) -> dict:
    """The topic experiment at each number of labels per class: where pretraining pays and where it stops."""
    journal = journal or Journal()
    out = {}
    for n in per_class:
        def tell(line, n=n):
            progress(f"{n} per class, {line}")

        r = topic_experiment(model, tokenizer, seeds, n, progress=tell, journal=journal.within(f"{n} per class, "))
        out[str(n)] = {"arms": r["arms"], "tests": r["tests"]}
    labels = ", ".join(map(str, per_class))
    return {"task": f"BBC topics, {labels} labelled documents per class, {len(seeds)} draws each", "per_class": out}


def topic_experiment(model, tokenizer, seeds=range(5), per_class: int = 20, finetune: bool = False,
                     progress=print, journal: Journal | None = None) -> dict:
    """BBC topics with ``per_class`` labels per class: the trained encoder against random init and baselines
    (frozen features; with ``finetune`` also both networks fine-tuned, about 40 s per network and draw on 2 cores)."""
    from deberta_edu.data.topics import few_labels, load_topics

    topics = load_topics()
    test = ([d.text for d in topics["test"]], [d.label for d in topics["test"]])

    def draw(seed):
        docs = few_labels(topics["train"], per_class, seed)
        return [d.text for d in docs], [d.label for d in docs]

    def random_init(seed):
        return random_weights(model, seed).eval(), tokenizer

    arms = compare_arms(draw, test, {"pretrained": lambda seed: (model, tokenizer), "random init": random_init},
                        list(seeds), fixed=["pretrained"], progress=progress, journal=journal,
                        finetuned=["pretrained", "random init"] if finetune else ())
    tests = against_baselines(arms)
    if finetune:
        tests.update(against_baselines(arms, ", fine-tuned", "fine-tuned: "))
    return {"task": f"BBC topics, {per_class} labelled documents per class, {len(test[1])} held-out test documents",
            "arms": arms, "tests": tests}


def sentiment_experiment(model, tokenizer, seeds=range(5), train_size: int = 500, finetune: bool = False,
                         progress=print, journal: Journal | None = None) -> dict:
    """Lesson 5's snippets with ``train_size`` labels per seed: the same arms, the same probe (with ``finetune``
    also both networks fine-tuned with the topics' recipe, a snippet being one chunk)."""
    import random

    from deberta_edu.data.sentiment import load_splits

    splits = load_splits()
    test = ([e.text for e in splits["test"]], [e.label for e in splits["test"]])

    def draw(seed):
        chosen = random.Random(seed).sample(splits["train"], train_size)
        return [e.text for e in chosen], [e.label for e in chosen]

    def random_init(seed):
        return random_weights(model, seed).eval(), tokenizer

    arms = compare_arms(draw, test, {"pretrained": lambda seed: (model, tokenizer), "random init": random_init},
                        list(seeds), fixed=["pretrained"], max_chunks=1, progress=progress, journal=journal,
                        finetuned=["pretrained", "random init"] if finetune else ())
    tests = against_baselines(arms)
    if finetune:
        tests.update(against_baselines(arms, ", fine-tuned", "fine-tuned: "))
    return {"task": f"movie-review sentiment, {train_size} labelled snippets per seed, {len(test[1])} test snippets",
            "arms": arms, "tests": tests}


def markdown_table(result: dict) -> str:
    """The tasks of a results.json as one markdown table, a row per task and encoder use (frozen features +
    probe; fine-tuned, where the task has those arms; with its number of draws): each arm's accuracy (%, mean ±
    std over the draws), and the pretrained arm's difference in points from random init and from each bag of words
    (Welch p across draws; where the arms kept their hits, then the ``bootstrap`` p over draws and test
    documents, after a slash)."""
    rows = ["| task | encoder | majority | bag of words (naive Bayes) | bag of words (tf-idf logistic) | random init | "
            "pretrained | vs random init | vs naive Bayes | vs tf-idf logistic |", "|---" * 10 + "|"]
    for key in ("topics", "sentiment"):
        if key not in result:
            continue
        arms, tests = result[key]["arms"], result[key]["tests"]
        task = ", ".join(result[key]["task"].split(", ")[:2])  # what and how many labels
        uses = [("frozen", "", "")] + ([("fine-tuned", ", fine-tuned", "fine-tuned: ")]
                                       if "pretrained, fine-tuned" in arms else [])
        for use, suffix, prefix in uses:
            cells = [f"{100 * arms[a]['mean']:.1f} ± {100 * arms[a]['std']:.1f}"
                     for a in ("majority", "bag of words", "tf-idf logistic", f"random init{suffix}", f"pretrained{suffix}")]
            cells += [f"{100 * t['difference']:+.1f}, p = {t['p_two_sided']:.2g}"
                      + (f" / {t['bootstrap']['p_two_sided']:.2g}" if "bootstrap" in t else "")
                      for t in (tests[f"{prefix}pretrained vs {b}"] for b in BASELINES)]
            draws = len(arms[f"pretrained{suffix}"]["runs"])
            rows.append(f"| {task}, {draws} draw{'s' * (draws != 1)} | {use} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _problem(args) -> str | None:
    """What stops the command before any work, in one sentence (a count, the --out folder, the data), or None."""
    from deberta_edu import files
    from deberta_edu.data.sentiment import load_splits
    from deberta_edu.data.topics import load_topics

    if args.seeds < 1:
        return f"--seeds is how many draws (at least 1), got {args.seeds}"
    try:  # the BBC documents and the sentiment snippets are there, before anything is written
        files.check_not_a_file(args.out)
        load_topics()
        if not args.skip_sentiment:
            load_splits()
    except (OSError, ValueError) as err:
        return str(err)
    return None


def main(argv=None) -> None:
    """python -m deberta_edu.training.downstream [--out DIR]: the course model's value, as results.json."""
    import argparse
    import functools
    import json
    import sys
    import time
    from pathlib import Path

    from deberta_edu.facts import RESULTS_ROOT

    from .course import course_label, course_metrics, load_course_model, weights_digest

    p = argparse.ArgumentParser(prog="python -m deberta_edu.training.downstream",
                                description="Frozen-feature probes of the course model vs random init and baselines")
    p.add_argument("--out", default=str(RESULTS_ROOT / "pretraining-value"),
                   help="folder of results.json (default: the committed %(default)s)")
    p.add_argument("--seeds", type=int, default=5, help="sentiment draws; the topics get twice as many")
    p.add_argument("--skip-sentiment", action="store_true", help="the BBC topics only")
    p.add_argument("--skip-curve", action="store_true", help="skip the topics at 2 ... 50 labels per class")
    p.add_argument("--overwrite", action="store_true", help="replace a results.json of other settings in --out")
    args = p.parse_args(argv)
    problem = _problem(args) or replaced_by_other_settings(p, args, Path(args.out) / "results.json")
    if problem:
        sys.exit(f"error: {problem}")
    tell = functools.partial(print, flush=True)  # each draw as it ends, also into a log file
    torch.manual_seed(0)
    model, tokenizer = load_course_model()
    start = time.time()
    result = {"command": " ".join([p.prog, *(sys.argv[1:] if argv is None else argv)]),
              "model": course_label(course_metrics()), "probe": "last encoder layer mean-pooled over a document's "
              f"first {PROBE_CHUNKS} chunks of {PROBE_LENGTH} tokens (every test document whole), frozen; L2 "
              "logistic regression (L-BFGS) on standardized features",
              "tests": "Welch's t across draws (scipy); bootstrap: draws and test documents resampled, paired, "
              f"{BOOTSTRAP_SAMPLES:,} samples",
              "baselines": {"bag of words": "multinomial naive Bayes, lower-cased words, add-one smoothing",
                            "tf-idf logistic": f"L2 logistic regression (l2 {TFIDF_PENALTY:g}) on unit tf-idf vectors of "
                            "lower-cased words, sublinear counts, idf of the labelled texts"},
              "finetune": {"what": "every weight, mean-pool + linear head, chunks labelled with their document's "
                           "label, a document's answer summed over its chunks", **asdict(FinetuneRecipe())}}
    settings = {k: result[k] for k in ("model", "probe", "baselines", "finetune")} | {"weights": weights_digest()}
    journal = Journal.for_command(Path(args.out) / "results.draws.jsonl", settings, tell)  # a cut run resumes from it
    try:
        result["topics"] = topic_experiment(model, tokenizer, range(2 * args.seeds), finetune=True, progress=tell,
                                            journal=journal.within("topics, "))
        if not args.skip_sentiment:
            result["sentiment"] = sentiment_experiment(model, tokenizer, range(args.seeds), finetune=True,
                                                       progress=tell, journal=journal.within("sentiment, "))
        if not args.skip_curve:
            result["topics_by_labels"] = topic_curve(model, tokenizer, seeds=range(2 * args.seeds), progress=tell,
                                                     journal=journal.within("curve, "))
    except FloatingPointError as err:  # a diverged fine-tuning; the draws that ended are kept in the journal
        sys.exit(f"error: {err}")
    result["wall_time_s"] = round(journal.wall_time(start))  # draws an earlier, cut command made count too
    result = journal.finish(Path(args.out) / "results.json", result)
    print(json.dumps({k: v["arms"] for k, v in result.items() if isinstance(v, dict) and "arms" in v}, indent=1))


if __name__ == "__main__":
    main()
