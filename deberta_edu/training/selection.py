"""How downstream's choices are made: on training-pool documents, never on the test documents.

Three choices shape results/pretraining-value (the topics; sentiment reuses them). This module measures each,
by one command, on documents of the training pool:

    reading       the frozen probe reads a document's first 4 chunks or the whole of it (16 chunks: every
                  test document whole, 12 of 2,002 pool documents cut)
    tf-idf l2     the penalty of the tf-idf logistic baseline (a baseline tuned too little would flatter the
                  course model)
    recipe        how both networks are fine-tuned (``FinetuneRecipe``: learning rate, epochs)

downstream uses, for each, the option the pool liked best: the reading that served both networks best, the
baseline's best penalty, the recipe the pretrained network did best with (random weights score within a point
with every recipe here; a test checks all three). The recipe was chosen before the test documents were read.
The reading and the penalty were not: the first committed runs read 4 chunks with a penalty of 1e-2, and this
measurement, made after their test results, moved the probe to whole documents (which helps random weights
more than the course model) and the baseline to its best penalty: against random weights and against tf-idf,
both go against the course model.

A dev split is one draw of labelled documents (``per_class`` of each topic, as ``few_labels`` draws them, seeds
100 and up: never a seed of the committed experiment) and ``held`` other pool documents to score on. The pool
was part of the pretraining text, so these numbers may flatter the pretrained arms a little; they choose, the
test documents judge. Run as ``python -m deberta_edu.training.selection`` (19 minutes on 2 cores)
-> results/pretraining-value/selection.json.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace

from .baselines import TFIDF_PENALTY, linear_probe, tfidf_logistic
from .documents import FinetuneRecipe, document_features, finetuned_accuracy
from .downstream import PROBE_CHUNKS, PROBE_LENGTH
from .finetune import random_weights
from .journal import Journal
from .significance import summary

DEV_SEEDS = tuple(range(100, 110))  # draws for the probe and the baseline; the experiment's seeds are 0-9
RECIPE_SEEDS = (100, 101, 102)  # fine-tuning costs about a minute per network and draw: three draws
WHOLE = FinetuneRecipe().max_chunks  # "the whole document": as many chunks as fine-tuning reads (16)
READINGS = {"first 4 chunks": 4, f"{WHOLE} chunks": WHOLE}  # the frozen probe's two readings
TFIDF_L2 = (1e-4, 1e-3, 1e-2, 1e-1)
RECIPES = {"6 epochs at 3e-4": FinetuneRecipe(),
           "6 epochs at 1e-3": replace(FinetuneRecipe(), lr=1e-3),
           "10 epochs at 3e-4": replace(FinetuneRecipe(), epochs=10)}


def dev_split(pool: Sequence, seed: int, per_class: int = 20, held: int = 200) -> tuple[list, list]:
    """(labelled, scored): ``per_class`` documents of each topic drawn as the experiment draws them, and
    ``held`` other pool documents, drawn with the same seed."""
    from deberta_edu.data.topics import few_labels

    labelled = few_labels(list(pool), per_class, seed)
    chosen = {id(d) for d in labelled}
    rest = [d for d in pool if id(d) not in chosen]
    return labelled, random.Random(seed).sample(rest, min(held, len(rest)))


def _texts(docs) -> tuple[list[str], list[int]]:
    return [d.text for d in docs], [d.label for d in docs]


def reading_and_baseline(model, tokenizer, pool, seeds=DEV_SEEDS, per_class: int = 20, held: int = 200,
                         progress: Callable[[str], None] = print, journal: Journal | None = None) -> dict:
    """The frozen probe with each of ``READINGS`` (first 4 chunks, or ``WHOLE`` chunks), of the pretrained
    network and of random weights drawn per seed (as the experiment draws them), and the tf-idf baseline at
    each penalty in ``TFIDF_L2``: {arm: ``summary``} over the dev splits (a ``journal`` keeps each split's)."""

    def one_split(seed: int) -> dict[str, float]:
        labelled, scored = dev_split(pool, seed, per_class, held)
        (texts, y), (test_texts, test_y) = _texts(labelled), _texts(scored)
        row = {}
        for name, net in (("pretrained", model), ("random init", random_weights(model, seed).eval())):
            for what, chunks in READINGS.items():
                train_x = document_features(net, tokenizer, texts, PROBE_LENGTH, chunks)
                test_x = document_features(net, tokenizer, test_texts, PROBE_LENGTH, chunks)
                row[f"{name}, {what}"] = linear_probe(train_x, y, test_x, test_y, classes=max(y + test_y) + 1)
        for l2 in TFIDF_L2:
            row[f"tf-idf logistic, l2 {l2:g}"] = tfidf_logistic(texts, y, test_texts, test_y, l2)
        return row

    runs: dict[str, list[float]] = {}
    journal = journal or Journal()
    for seed in seeds:
        kept = f"seed {seed}" in journal
        for name, value in journal.run(f"seed {seed}", lambda seed=seed: one_split(seed)).items():
            runs.setdefault(name, []).append(value)
        progress(f"seed {seed}{' (read back)' * kept}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in runs.items()))
    return {name: summary(values) for name, values in runs.items()}


def recipe_grid(model, tokenizer, pool, seeds=RECIPE_SEEDS, per_class: int = 20, held: int = 200,
                recipes: dict[str, FinetuneRecipe] | None = None, progress: Callable[[str], None] = print,
                journal: Journal | None = None) -> dict:
    """Both networks fine-tuned with each recipe on the dev splits: {recipe: {"recipe": its fields,
    "pretrained": ``summary``, "random init": ``summary``}} (a ``journal`` keeps each split's, per recipe)."""
    recipes, journal = recipes or RECIPES, journal or Journal()

    def one_split(seed: int, recipe: FinetuneRecipe) -> dict[str, float]:
        labelled, scored = dev_split(pool, seed, per_class, held)
        (texts, y), (test_texts, test_y) = _texts(labelled), _texts(scored)
        nets = {"pretrained": model, "random init": random_weights(model, seed)}  # fine-tuning copies them
        return {arm: finetuned_accuracy(net, tokenizer, texts, y, test_texts, test_y, seed, max(y + test_y) + 1, recipe)
                for arm, net in nets.items()}

    runs: dict[str, dict[str, list[float]]] = {name: {"pretrained": [], "random init": []} for name in recipes}
    for seed in seeds:
        for name, recipe in recipes.items():
            key = f"seed {seed}, {name}"
            kept = key in journal
            for arm, value in journal.run(key, lambda seed=seed, recipe=recipe: one_split(seed, recipe)).items():
                runs[name][arm].append(value)
            progress(f"{key}{' (read back)' * kept}: " + ", ".join(f"{a} {v[-1]:.3f}" for a, v in runs[name].items()))
    return {name: {"recipe": asdict(recipes[name]), **{arm: summary(v) for arm, v in arms.items()}}
            for name, arms in runs.items()}


def best_recipe(grid: dict, arm: str = "pretrained") -> str:
    """The recipe whose ``arm`` scored highest on the dev splits (the first of equals)."""
    return max(grid, key=lambda name: grid[name][arm]["mean"])


def markdown_table(result: dict) -> str:
    """A selection.json as one markdown table: each choice, its options, and the dev accuracy (%, mean ± std
    over the dev splits) of the arms it was measured on; the option downstream uses is marked "(used)"."""
    cell = lambda arm: f"{100 * arm['mean']:.1f} ± {100 * arm['std']:.1f}"  # noqa: E731
    reading, recipes = result["reading"], result["recipes"]
    rows = ["| choice | option | pretrained | random init | tf-idf logistic |", "|---" * 5 + "|"]
    for what, chunks in READINGS.items():
        used = " (used)" if chunks == PROBE_CHUNKS else ""
        rows.append(f"| frozen probe reads | {what}{used} | {cell(reading[f'pretrained, {what}'])} | "
                    f"{cell(reading[f'random init, {what}'])} | |")
    for l2 in TFIDF_L2:
        used = " (used)" if l2 == TFIDF_PENALTY else ""
        rows.append(f"| tf-idf penalty | l2 {l2:g}{used} | | | {cell(reading[f'tf-idf logistic, l2 {l2:g}'])} |")
    for name, arms in recipes.items():
        used = " (used)" if arms["recipe"] == asdict(FinetuneRecipe()) else ""
        rows.append(f"| fine-tuning | {name}{used} | {cell(arms['pretrained'])} | {cell(arms['random init'])} | |")
    return "\n".join(rows)


def main(argv=None) -> None:
    """python -m deberta_edu.training.selection [--out DIR]: the dev measurements behind downstream's choices."""
    import argparse
    import functools
    import json
    import sys
    import time
    from pathlib import Path

    from deberta_edu import files
    from deberta_edu.data.topics import load_topics
    from deberta_edu.facts import RESULTS_ROOT

    from .course import course_label, course_metrics, load_course_model, weights_digest

    p = argparse.ArgumentParser(prog="python -m deberta_edu.training.selection",
                                description="Downstream's choices, measured on training-pool documents")
    p.add_argument("--out", default=str(RESULTS_ROOT / "pretraining-value"),
                   help="folder of selection.json (default: the committed %(default)s)")
    args = p.parse_args(argv)
    try:
        files.check_not_a_file(args.out)
        pool = load_topics()["train"]  # the BBC documents are there (before anything is written)
    except (OSError, ValueError) as err:
        sys.exit(f"error: {err}")
    tell = functools.partial(print, flush=True)  # each draw as it ends, also into a log file
    model, tokenizer = load_course_model()
    start = time.time()
    result = {"command": " ".join([p.prog, *(sys.argv[1:] if argv is None else argv)]),
              "model": course_label(course_metrics()),
              "dev": "per seed: 20 labelled documents per topic drawn from the training pool as the experiment draws "
                     "them, scored on 200 other pool documents drawn with the same seed; the test documents unread"}
    settings = {"model": result["model"], "weights": weights_digest(), "dev": result["dev"], "readings": READINGS,
                "chunk length": PROBE_LENGTH, "tf-idf l2": list(TFIDF_L2),
                "recipes": {name: asdict(recipe) for name, recipe in RECIPES.items()}}
    journal = Journal.for_command(Path(args.out) / "selection.draws.jsonl", settings, tell)  # a cut run resumes
    try:
        result["reading"] = reading_and_baseline(model, tokenizer, pool, progress=tell,
                                                 journal=journal.within("reading, "))
        result["recipes"] = recipe_grid(model, tokenizer, pool, progress=tell, journal=journal.within("recipes, "))
    except FloatingPointError as err:  # a diverged fine-tuning; the splits that ended are kept in the journal
        sys.exit(f"error: {err}")
    result["chosen recipe"] = best_recipe(result["recipes"])
    result["wall_time_s"] = round(journal.wall_time(start))  # splits an earlier, cut command made count too
    result = journal.finish(Path(args.out) / "selection.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "reading"}, indent=1))


if __name__ == "__main__":
    main()
