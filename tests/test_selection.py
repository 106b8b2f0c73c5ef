"""Downstream's choices (what the probe reads, the baseline's penalty, the fine-tuning recipe) were made on the
training pool, and the committed measurements still make them."""

import json
from dataclasses import asdict, replace

import torch

from deberta_edu.data.topics import TOPICS, Document
from deberta_edu.training import selection
from deberta_edu.training.baselines import TFIDF_PENALTY
from deberta_edu.training.course import COURSE_DIR
from deberta_edu.training.documents import FinetuneRecipe
from deberta_edu.training.downstream import PROBE_CHUNKS

SELECTION = COURSE_DIR.parent / "pretraining-value" / "selection.json"


def test_a_dev_split_is_a_draw_and_other_pool_documents():
    pool = [Document(f"text {topic} {n}", label) for label, topic in enumerate(TOPICS) for n in range(30)]
    labelled, scored = selection.dev_split(pool, seed=100, per_class=4, held=50)
    assert sorted(d.label for d in labelled) == sorted(list(range(len(TOPICS))) * 4)
    assert len(scored) == 50 and not {d.text for d in labelled} & {d.text for d in scored}
    again = selection.dev_split(pool, seed=100, per_class=4, held=50)
    assert again == (labelled, scored)  # a seed is one split
    assert selection.dev_split(pool, seed=101, per_class=4, held=50) != (labelled, scored)
    assert not (set(selection.DEV_SEEDS) | set(selection.RECIPE_SEEDS)) & set(range(10))  # never the experiment's seeds


def test_the_measurements_run_at_a_tiny_size():
    from deberta_edu.data.topics import load_topics
    from deberta_edu.training.course import load_course_model

    model, tokenizer = load_course_model()
    pool = load_topics()["train"]
    reading = selection.reading_and_baseline(model, tokenizer, pool, seeds=[100], per_class=2, held=10,
                                             progress=lambda line: None)
    assert set(reading) == {f"{net}, {what}" for net in ("pretrained", "random init") for what in selection.READINGS} | {
        f"tf-idf logistic, l2 {l2:g}" for l2 in selection.TFIDF_L2}
    assert all(len(arm["runs"]) == 1 and 0 <= arm["mean"] <= 1 for arm in reading.values())
    quick = {"one epoch": replace(FinetuneRecipe(), epochs=1, max_chunks=2)}
    grid = selection.recipe_grid(model, tokenizer, pool, seeds=[100], per_class=2, held=5, recipes=quick,
                                 progress=lambda line: None)
    assert grid["one epoch"]["recipe"]["epochs"] == 1 and len(grid["one epoch"]["random init"]["runs"]) == 1
    assert selection.best_recipe({"a": {"pretrained": {"mean": 0.5}}, "b": {"pretrained": {"mean": 0.7}}}) == "b"


def test_the_committed_measurements_make_the_choices_the_code_runs():
    s = json.loads(SELECTION.read_text())
    assert s["command"].startswith("python -m deberta_edu.training.selection")
    # the recipe downstream fine-tunes with is the one the pool chose
    assert s["recipes"][s["chosen recipe"]]["recipe"] == asdict(FinetuneRecipe())
    assert s["chosen recipe"] == selection.best_recipe(s["recipes"])
    random_init = [r["random init"]["mean"] for r in s["recipes"].values()]
    assert max(random_init) - min(random_init) < 0.01  # random weights: within a point of each other with each
    assert set(s["recipes"]) == set(selection.RECIPES)
    for name, recipe in selection.RECIPES.items():
        assert s["recipes"][name]["recipe"] == asdict(recipe)
        assert len(s["recipes"][name]["pretrained"]["runs"]) == len(selection.RECIPE_SEEDS)
    reading = s["reading"]
    assert {len(arm["runs"]) for arm in reading.values()} == {len(selection.DEV_SEEDS)}
    used = next(what for what, chunks in selection.READINGS.items() if chunks == PROBE_CHUNKS)
    for net in ("pretrained", "random init"):  # the probe reads what served both networks best
        assert reading[f"{net}, {used}"]["mean"] == max(reading[f"{net}, {what}"]["mean"] for what in selection.READINGS)
    tfidf = {l2: reading[f"tf-idf logistic, l2 {l2:g}"]["mean"] for l2 in selection.TFIDF_L2}
    assert tfidf[TFIDF_PENALTY] == max(tfidf.values())  # the baseline gets its best penalty
    assert max(tfidf.values()) - min(tfidf.values()) < 0.015  # which barely matters


def test_every_tfidf_penalty_is_measured_with_its_own_value(monkeypatch):
    pool = [Document(f"text {topic} {n}", label) for label, topic in enumerate(TOPICS) for n in range(6)]
    penalties = []

    def tfidf(texts, y, test_texts, test_y, l2):
        penalties.append(l2)
        return l2

    monkeypatch.setattr(selection, "tfidf_logistic", tfidf)
    monkeypatch.setattr(selection, "document_features", lambda net, tok, texts, *a: torch.zeros(len(texts), 2))
    monkeypatch.setattr(selection, "random_weights", lambda model, seed: torch.nn.Identity())
    monkeypatch.setattr(selection, "linear_probe", lambda *a, **k: 0.5)
    reading = selection.reading_and_baseline(None, None, pool, seeds=[100], per_class=1, held=5,
                                             progress=lambda line: None)
    assert penalties == list(selection.TFIDF_L2)
    assert [reading[f"tf-idf logistic, l2 {l2:g}"]["runs"] for l2 in selection.TFIDF_L2] == [[1e-4], [1e-3], [1e-2], [1e-1]]


def test_each_probe_learns_from_the_labelled_documents_and_is_scored_on_the_held_ones(monkeypatch):
    """The reading is chosen by what the probe scores on the split's held documents; fitted on those same
    documents, the choice would reward memorising them."""
    pool = [Document(f"text {topic} {n}", label) for label, topic in enumerate(TOPICS) for n in range(6)]
    labelled, scored = selection.dev_split(pool, 100, 1, 5)
    probes = []

    def probe(train_x, train_y, test_x, test_y, **kwargs):
        probes.append((train_x[:, 0].tolist(), list(train_y), test_x[:, 0].tolist(), list(test_y)))
        return 0.5

    index = {d.text: float(n) for n, d in enumerate(pool)}  # a document's feature: its place in the pool
    monkeypatch.setattr(selection, "document_features",
                        lambda net, tok, texts, *a: torch.tensor([[index[t]] for t in texts]))
    monkeypatch.setattr(selection, "random_weights", lambda model, seed: torch.nn.Identity())
    monkeypatch.setattr(selection, "tfidf_logistic", lambda *a: 0.5)
    monkeypatch.setattr(selection, "linear_probe", probe)
    selection.reading_and_baseline(None, None, pool, seeds=[100], per_class=1, held=5, progress=lambda line: None)
    expected = ([index[d.text] for d in labelled], [d.label for d in labelled],
                [index[d.text] for d in scored], [d.label for d in scored])
    assert probes == [expected] * (2 * len(selection.READINGS))  # both networks, every reading
    assert not set(expected[0]) & set(expected[2])


def test_the_selection_table_marks_the_options_downstream_uses():
    used = [row for row in selection.markdown_table(json.loads(SELECTION.read_text())).splitlines() if "(used)" in row]
    assert [row.split(" | ")[:2] for row in used] == [
        ["| frozen probe reads", "16 chunks (used)"], ["| tf-idf penalty", "l2 0.0001 (used)"],
        ["| fine-tuning", "6 epochs at 3e-4 (used)"]]
