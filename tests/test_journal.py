"""The journal of finished draws: a cut experiment resumes, and resumed it gives what an uncut run gives."""

import json
import random
import time

import pytest
import torch

from deberta_edu.data.topics import Document
from deberta_edu.training import downstream, selection
from deberta_edu.training.course import load_course_model
from deberta_edu.training.documents import FinetuneRecipe
from deberta_edu.training.finetune import random_weights
from deberta_edu.training.journal import Journal

WORDS = [["goal", "striker", "match", "league"], ["shares", "bank", "profit", "market"],
         ["vote", "minister", "party", "election"], ["film", "actor", "award", "music"],
         ["phone", "software", "internet", "computer"]]
TINY = FinetuneRecipe(lr=1e-3, epochs=1, max_length=16, max_chunks=2)


def _pool(per_topic: int = 4) -> list[Document]:
    """Documents whose words carry little of their label: what a network learns from them depends on where it
    started, so a draw that took its start from the state an earlier draw left would show in its hits."""
    rng = random.Random(0)
    every = [w for topic in WORDS for w in topic]
    return [Document(" ".join(rng.sample(WORDS[label], 1) + rng.sample(every, 5)), label)
            for label in range(5) for _ in range(per_topic)]


class Cut(Exception):
    """The crash a test stages in the middle of an experiment."""


class CutOnce:
    """A stand-in for a command's draws: ``make(key, value)`` dies (``Cut``) the first time it meets a key in
    ``cut``, and lists every draw it made in ``made``."""

    def __init__(self, *cut):
        self.cut, self.made = list(cut), []

    def make(self, key, value):
        if key in self.cut:
            self.cut.remove(key)
            raise Cut
        self.made.append(key)
        return value


def test_draws_are_kept_read_back_and_refused_under_other_settings(tmp_path):
    path = tmp_path / "results.draws.jsonl"
    journal = Journal.open(path, {"model": "a", "grid": (1, 2)})
    assert journal.run("seed 0", lambda: [True, False]) == [True, False]
    assert journal.within("topics, ").run("seed 0", lambda: 0.5) == 0.5  # another experiment's seed 0
    assert [json.loads(line).get("key") for line in path.read_text().splitlines()] == [None, "seed 0", "topics, seed 0"]
    assert journal.read_back() == {}  # all made by this command

    assert "seed 0" in Journal.open(path, {"model": "a", "grid": (1, 2)})  # the same command, tuple and all
    again = Journal.open(path, {"model": "a", "grid": [1, 2]})  # a tuple comes back from the file as a list
    assert "seed 0" in again and "seed 1" not in again and "seed 0" in again.within("topics, ")
    assert again.run("seed 0", lambda: pytest.fail("a kept draw is not made again")) == [True, False]
    assert again.read_back()["draws"] == 2
    with pytest.raises(ValueError, match="differing: model"):
        Journal.open(path, {"model": "b", "grid": [1, 2]})
    again.close()
    assert not path.exists()


def test_a_line_a_crash_cut_short_is_dropped_and_the_next_draw_lands_on_its_own_line(tmp_path):
    path = tmp_path / "d.jsonl"
    Journal.open(path, {"s": 1}).run("seed 0", lambda: 1.0)
    path.write_text(path.read_text() + '{"key": "seed 1", "val')  # cut in the middle of writing seed 1
    journal = Journal.open(path, {"s": 1})
    assert "seed 0" in journal and "seed 1" not in journal
    journal.run("seed 1", lambda: 2.0)
    assert Journal.open(path, {"s": 1}).run("seed 1", lambda: pytest.fail("kept")) == 2.0
    path.write_text('{"sett')  # cut before the settings line was whole: a new journal
    assert Journal.open(path, {"s": 1}).kept == {}


def test_without_a_file_nothing_is_written_and_every_draw_is_made(tmp_path):
    journal = Journal()
    assert journal.run("seed 0", lambda: 1) == 1 and journal.run("seed 0", lambda: 2) == 1  # kept for the run only
    assert list(tmp_path.iterdir()) == []


def test_the_wall_time_counts_the_seconds_of_the_draws_read_back(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in ({"settings": {"s": 1}},
                                                           {"key": "seed 0", "value": 1, "seconds": 40.0},
                                                           {"key": "seed 1", "value": 2, "seconds": 20.0})) + "\n")
    journal = Journal.open(path, {"s": 1})  # an earlier command spent 40 s and 20 s on two seeds before it was cut
    assert journal.wall_time(time.time()) == pytest.approx(60.0, abs=1.0)
    assert journal.finish(tmp_path / "r.json", {"x": 1}) == {"x": 1, "resumed": {"draws": 2, "seconds": 60}}


def _compare(journal=None, crash_at=None):
    model, tokenizer = load_course_model()
    pool = _pool(6)
    train, test = pool[::2], pool[1::2]

    def draw(seed):
        if seed == crash_at:
            raise Cut
        docs = [train[(seed + 2 * k) % len(train)] for k in range(10)]
        return [d.text for d in docs], [d.label for d in docs]

    def random_init(seed):
        return random_weights(model, seed).eval(), tokenizer

    # random init fine-tuned only: a pretrained arm fine-tuned first would reseed the generator before the random
    # weights are drawn, and hide a draw that forgot to seed its own weights (checked: it does not hide it now)
    return downstream.compare_arms(draw, ([d.text for d in test], [d.label for d in test]),
                                   {"pretrained": lambda seed: (model, tokenizer), "random init": random_init},
                                   [0, 1, 2], fixed=["pretrained"], max_chunks=2, finetuned=["random init"],
                                   recipe=TINY, progress=lambda line: None, journal=journal)


def test_a_cut_downstream_experiment_resumes_to_the_numbers_of_an_uncut_one(tmp_path):
    uncut = _compare()
    path = tmp_path / "results.draws.jsonl"
    with pytest.raises(Cut):
        _compare(Journal.open(path, {"s": 1}), crash_at=1)
    assert len(path.read_text().splitlines()) == 2  # the settings and seed 0
    journal = Journal.open(path, {"s": 1})
    torch.manual_seed(12345)  # a new command: the global generator is wherever that process left it
    assert _compare(journal) == uncut  # seed 0 read back, seeds 1 and 2 made in another order of work
    assert journal.read_back()["draws"] == 1


def test_a_cut_selection_resumes_to_the_numbers_of_an_uncut_one(tmp_path, monkeypatch):
    model, tokenizer = load_course_model()
    pool, recipes = _pool(8), {"tiny": TINY, "tiny, faster": FinetuneRecipe(lr=3e-3, epochs=1, max_length=16)}
    monkeypatch.setattr(selection, "READINGS", {"first chunk": 1, "2 chunks": 2})

    def both(journal=None):
        reading = selection.reading_and_baseline(model, tokenizer, pool, seeds=(100, 101), per_class=1, held=10,
                                                 progress=lambda line: None, journal=journal)
        grid = selection.recipe_grid(model, tokenizer, pool, seeds=(100, 101), per_class=1, held=10, recipes=recipes,
                                     progress=lambda line: None, journal=journal)
        return reading, grid

    uncut = both()
    path = tmp_path / "selection.draws.jsonl"
    real = selection.finetuned_accuracy

    def crash_on_the_second_split(net, tokenizer, texts, y, test_texts, test_y, seed, *rest):
        if seed == 101:
            raise Cut
        return real(net, tokenizer, texts, y, test_texts, test_y, seed, *rest)

    monkeypatch.setattr(selection, "finetuned_accuracy", crash_on_the_second_split)
    with pytest.raises(Cut):
        both(Journal.open(path, {"s": 1}))
    monkeypatch.setattr(selection, "finetuned_accuracy", real)
    # kept: both reading splits, and the first split under each recipe
    assert len(path.read_text().splitlines()) == 1 + 2 + 2
    torch.manual_seed(12345)  # a new command: the global generator is wherever that process left it
    assert both(Journal.open(path, {"s": 1})) == uncut


def test_downstream_keeps_its_draws_beside_the_results_and_resumes_a_cut_command(tmp_path, monkeypatch):
    draws = CutOnce(2)  # the first command dies in its third draw

    def topics(model, tokenizer, seeds, finetune, progress, journal):
        return {"task": "stand-in",
                "arms": {"runs": [journal.run(f"seed {s}", lambda s=s: draws.make(s, s / 10)) for s in seeds]}}

    monkeypatch.setattr(downstream, "topic_experiment", topics)
    argv = ["--out", str(tmp_path), "--seeds", "2", "--skip-sentiment", "--skip-curve"]
    with pytest.raises(Cut):
        downstream.main(argv)
    assert not (tmp_path / "results.json").exists() and (tmp_path / "results.draws.jsonl").exists()
    monkeypatch.setattr("sys.argv", ["downstream.py", *argv])  # from the shell this time
    downstream.main()
    assert draws.made == [0, 1, 2, 3]  # the second command made only the draws the first had not finished
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["command"] == " ".join(["python -m deberta_edu.training.downstream", *argv])  # its flags too
    assert result["topics"]["arms"]["runs"] == [0.0, 0.1, 0.2, 0.3]
    assert result["resumed"]["draws"] == 2
    assert not (tmp_path / "results.draws.jsonl").exists()  # written: the journal is gone


def test_selection_keeps_its_splits_beside_its_json_and_resumes_a_cut_command(tmp_path, monkeypatch):
    draws = CutOnce("seed 101, r")

    def kept(journal, key, value):
        return journal.run(key, lambda: draws.make(key, value))

    def reading(model, tokenizer, pool, progress, journal):
        return {"pretrained": kept(journal, "seed 100", 0.9)}

    def grid(model, tokenizer, pool, progress, journal):
        return {"r": {"pretrained": {"mean": sum(kept(journal, f"seed {s}, r", 0.5) for s in (100, 101)) / 2}}}

    monkeypatch.setattr(selection, "reading_and_baseline", reading)
    monkeypatch.setattr(selection, "recipe_grid", grid)
    with pytest.raises(Cut):
        selection.main(["--out", str(tmp_path)])
    selection.main(["--out", str(tmp_path)])
    assert draws.made == ["seed 100", "seed 100, r", "seed 101, r"]  # nothing made twice
    result = json.loads((tmp_path / "selection.json").read_text())
    assert result["chosen recipe"] == "r" and result["resumed"]["draws"] == 2
    assert not (tmp_path / "selection.draws.jsonl").exists()


def test_downstream_and_selection_say_a_diverged_fine_tuning_in_words(tmp_path, monkeypatch):
    """A diverged fine-tuning ends either command with 'error: ...' (as pretrain's does), not a traceback; the
    draws that ended stay in the journal for the next command."""

    def diverge(model, tokenizer, *args, journal, **kwargs):
        journal.run("seed 0", lambda: 0.5)
        raise FloatingPointError("the fine-tuning loss became nan (seed 1, lr 0.001)")

    monkeypatch.setattr(downstream, "topic_experiment", diverge)
    with pytest.raises(SystemExit, match=r"error: the fine-tuning loss became nan \(seed 1"):
        downstream.main(["--out", str(tmp_path), "--seeds", "2", "--skip-sentiment", "--skip-curve"])
    assert len((tmp_path / "results.draws.jsonl").read_text().splitlines()) == 2  # its settings, seed 0
    monkeypatch.setattr(selection, "reading_and_baseline", diverge)
    with pytest.raises(SystemExit, match=r"error: the fine-tuning loss became nan \(seed 1"):
        selection.main(["--out", str(tmp_path)])
    assert len((tmp_path / "selection.draws.jsonl").read_text().splitlines()) == 2


def test_finetune_keeps_its_runs_beside_its_json_and_resumes_a_cut_command(tmp_path, monkeypatch):
    from deberta_edu.training import finetune as ft

    runs = CutOnce((1.0, 1))  # the first command dies in its last run

    def run(encoder, splits, tokenizer, cfg):
        result = ft.FinetuneResult(0.6, 0.5 + cfg.seed / 10, [{"adv_loss": 0.1}], None, cfg, [True, False])
        return runs.make((cfg.adversarial.lam, cfg.seed), result)

    monkeypatch.setattr(ft, "finetune", run)
    out = tmp_path / "results.json"
    argv = ["--out", str(out), "--seeds", "0", "1"]
    with pytest.raises(Cut):
        ft.main(argv)
    assert not out.exists() and (tmp_path / "results.draws.jsonl").exists()
    with pytest.raises(SystemExit, match="other settings"):  # another recipe refuses those runs
        ft.main([*argv, "--lr", "2e-4"])
    result = ft.main(argv)
    assert runs.made == [(0.0, 0), (0.0, 1), (1.0, 0), (1.0, 1)]  # nothing made twice
    assert result["test_accuracy"]["lambda=1.0"]["test"] == [0.5, 0.6] and result["resumed"]["draws"] == 3
    assert json.loads(out.read_text())["resumed"]["draws"] == 3 and not (tmp_path / "results.draws.jsonl").exists()
