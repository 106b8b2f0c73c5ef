"""The committed course model and the probes that measure what pretraining bought."""

import json
import math
import statistics
from pathlib import Path

import pytest
import torch
from scipy import stats as scipy_stats

from deberta_edu.facts import CLS_ID, CONFIG_FILE, LOG_FILE, MODEL_FILE, SEP_ID, TOKENIZER_FILE
from deberta_edu.lessons.explorer import load_demo
from deberta_edu.lessons.pretrained import lesson_model_folder, local_run_accuracy, pretrained_for_lessons
from deberta_edu.training import baselines, downstream, significance
from deberta_edu.training.course import COURSE_DIR, course_label, course_metrics, load_course_model
from deberta_edu.training.documents import (
    FinetuneRecipe,
    MeanPoolClassifier,
    chunk_rows,
    document_features,
    finetuned_accuracy,
    mean_pool,
)

MAX_BYTES = 5 * 2**20


def test_the_course_model_is_committed_small_and_loads_offline():
    for f in COURSE_DIR.iterdir():
        assert f.stat().st_size <= MAX_BYTES, f"{f.name} is {f.stat().st_size:,} bytes, over 5 MB"
    model, tok = load_course_model()
    assert model.emd is not None and not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert tok.vocab_size == model.config.vocab_size
    ids = torch.tensor([[1, *tok.encode("The Bank of England raised interest rates."), 2]])
    assert torch.isfinite(model(ids).logits).all()


def test_the_metrics_say_what_the_model_learned_against_the_baseline():
    m = course_metrics()
    assert m["held_out"]["val_loss"] < m["unigram_baseline"]["val_loss"]  # it uses context
    assert m["held_out"]["val_accuracy"] > 3 * m["unigram_baseline"]["val_accuracy"]
    assert m["tokens"] > 1e6 and m["command"]
    assert "course model" in course_label(m)


def test_the_committed_weights_score_what_metrics_json_says(tmp_path):
    """metrics.json's held-out numbers, measured again on the committed fp16 weights: the model the lessons load
    is the model the numbers describe (a loading or conversion fault would move them)."""
    from deberta_edu.data.packing import PackedDataset, pack_validation
    from deberta_edu.training.configs import TrainConfig
    from deberta_edu.training.engine import Distributed, Precision
    from deberta_edu.training.evaluate import Evaluator
    from deberta_edu.training.mlm_data import MaskSpec

    model, tok = load_course_model()
    m = course_metrics()
    cfg = TrainConfig.from_dict(json.loads((COURSE_DIR / CONFIG_FILE).read_text())).replace(eval_rows=10_000)
    val = PackedDataset(pack_validation(m["held_out_source"], tok, cfg.seq_length, tmp_path))
    for key, c in (("held_out", cfg), ("held_out_whole_word_masking", cfg.replace(whole_word_masking=True))):
        now = Evaluator(val, c, MaskSpec.of(c, tok), Distributed(), Precision("fp32", "cpu"))(model)
        assert now["val_tokens"] == m[key]["val_tokens"] and now["val_accuracy"] == pytest.approx(m[key]["val_accuracy"])
        assert now["val_loss"] == pytest.approx(m[key]["val_loss"], abs=1e-5), key


def test_only_a_run_of_the_course_config_counts_as_one():
    from deberta_edu.training.course import differences_from_course

    committed = json.loads((COURSE_DIR / CONFIG_FILE).read_text())
    assert differences_from_course(committed) == []  # the committed model is a run of configs["course"]
    assert differences_from_course({**committed, "log_every": 1}) == []  # how it logs changes nothing it learns
    cut_short = {**committed, "steps": 25, "budget_seconds": None}  # pretrain --config course --steps 25
    assert differences_from_course(cut_short) == ["budget_seconds", "steps"]


def test_a_missing_course_model_says_where_it_comes_from(tmp_path):
    with pytest.raises(FileNotFoundError, match=MODEL_FILE):
        load_course_model(tmp_path)


def test_the_probe_and_the_baselines_can_tell_classes_apart_or_not():
    g = torch.Generator().manual_seed(0)
    y = [i % 3 for i in range(60)]
    centers = torch.randn(3, 8, generator=g) * 3
    x = centers[y] + torch.randn(60, 8, generator=g)
    assert baselines.linear_probe(x[:30], y[:30], x[30:], y[30:]) > 0.9
    noise = torch.randn(60, 8, generator=g)  # features that carry no label: near chance
    assert baselines.linear_probe(noise[:30], y[:30], noise[30:], y[30:]) < 0.7
    texts = ["goal match striker"] * 5 + ["shares bank profit"] * 5
    labels = [0] * 5 + [1] * 5
    assert baselines.naive_bayes(texts, labels, ["the striker scored", "bank shares fell"], [0, 1]) == 1.0
    assert baselines.tfidf_logistic(texts, labels, ["the striker scored", "bank shares fell"], [0, 1]) == 1.0
    shared = [t + " the news" for t in texts]  # words in every document weigh least (idf), yet count
    assert baselines.tfidf_logistic(shared, labels, ["the news the news striker", "the news profit"], [0, 1]) == 1.0
    assert baselines.tfidf_logistic(texts, labels, ["nothing known here"] * 2, [0, 1]) == 0.5  # no known word: one class
    assert baselines.majority([0, 0, 1]) == pytest.approx(2 / 3)
    t = significance.welch([0.9, 0.91, 0.92], [0.5, 0.52, 0.49])
    assert t["difference"] > 0.3 and t["p_greater"] < 0.01
    hits = baselines.linear_probe(x[:30], y[:30], x[30:], y[30:], per_document=True)
    assert len(hits) == 30 and sum(hits) / 30 == baselines.linear_probe(x[:30], y[:30], x[30:], y[30:])
    assert baselines.naive_bayes(texts, labels, ["striker", "striker"], [0, 1], per_document=True) == [True, False]
    assert baselines.majority([0, 0, 1], per_document=True) == [True, True, False]
    assert significance.summary([0.5, 1.0], [[True, False], [True, True]])["hits"] == ["10", "11"]


def _hit_strings(base: list[int], wins: range, losses: range, draws: int, seed: int) -> list[str]:
    """Per-draw hit strings: ``base`` (1 = right) with the documents in ``wins`` right and those in ``losses``
    wrong on every draw, and one other document flipped at random per draw (a little draw-to-draw noise)."""
    import random

    rng, out = random.Random(seed), []
    for _ in range(draws):
        h = list(base)
        for d in wins:
            h[d] = 1
        for d in losses:
            h[d] = 0
        flip = rng.randrange(20, len(h))
        h[flip] = 1 - h[flip]
        out.append("".join(map(str, h)))
    return out


def test_the_bootstrap_counts_the_test_documents_where_welch_does_not():
    base = [1] * 110 + [0] * 15  # 125 test documents, as the topics' test set
    # A is right on 6 documents that B gets wrong, B on 3 that A gets wrong, on every draw: +3 documents, 2.4 points
    a = _hit_strings(base, range(0, 6), range(6, 9), 10, seed=1)
    b = _hit_strings(base, range(6, 9), range(0, 6), 10, seed=2)
    acc = lambda hits: [h.count("1") / len(h) for h in hits]  # noqa: E731
    assert significance.welch(acc(a), acc(b))["p_two_sided"] < 1e-6  # the draws agree: Welch is sure
    boot = significance.bootstrap(a, b)
    assert boot["difference"] == pytest.approx(statistics.fmean(acc(a)) - statistics.fmean(acc(b)))
    assert boot["p_two_sided"] > 0.2 and boot["ci95"][0] < 0 < boot["ci95"][1]  # 9 documents decide it: not sure
    wide = _hit_strings([1] * 125, range(0), range(0), 10, seed=3)  # about 20 documents ahead of b: sure either way
    assert significance.bootstrap(wide, b)["p_two_sided"] < 0.001
    assert significance.bootstrap(a, a)["p_two_sided"] == 1.0
    with pytest.raises(ValueError, match="same"):
        significance.bootstrap(a, b[:-1])
    with pytest.raises(ValueError, match="same"):  # no draws at all: said, not an IndexError
        significance.bootstrap([], [])


def test_welch_is_the_unequal_variance_t_test():
    # unequal sizes and spreads: Welch's t with the Welch-Satterthwaite degrees of freedom, by hand
    a, b = [0.90, 0.91, 0.93, 0.95, 0.80, 0.88], [0.70, 0.85, 0.60]
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / (va + vb) ** 0.5
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # 2.36, not Student's 7
    w = significance.welch(a, b)
    assert w["t"] == pytest.approx(t) and w["difference"] == pytest.approx(0.1783, abs=1e-4)
    assert w["p_two_sided"] == pytest.approx(2 * scipy_stats.t.sf(abs(t), df))  # 0.12: within noise
    assert w["p_greater"] == pytest.approx(scipy_stats.t.sf(t, df))
    assert scipy_stats.ttest_ind(a, b).pvalue < 0.05 < w["p_two_sided"]  # Student's pooled test would call it


def test_welch_of_an_arm_of_identical_runs_is_quiet_and_rests_on_the_other_arm():
    """Lesson 4's lr 4e-3 arm: three seeds on one plateau, equal to the last bit. scipy warned ("catastrophic
    cancellation") in the page; the arm has no variance, so t and its degrees of freedom are the other arm's."""
    import warnings

    a, b = [0.03643061809250921] * 3, [0.195, 0.234, 0.25]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = significance.welch(a, b)
    vb = statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / vb**0.5
    assert w["t"] == pytest.approx(t) and w["p_two_sided"] == pytest.approx(2 * scipy_stats.t.sf(abs(t), len(b) - 1))


def test_sure_needs_both_tests_and_unsure_reads_the_bootstrap():
    def test(welch_p, boot_p):
        return {"p_two_sided": welch_p, "bootstrap": {"p_two_sided": boot_p}}

    assert significance.sure(test(0.001, 0.01)) and not significance.sure(test(0.001, 0.2))
    assert not significance.sure(test(0.2, 0.001))  # the draws cannot tell: not sure either
    assert significance.unsure(test(0.001, 0.1)) and not significance.unsure(test(0.5, 0.01))  # the documents decide


def test_an_arms_summary_keeps_the_sample_std():
    s = significance.summary([0.5, 1.0, 0.75])
    assert s["mean"] == pytest.approx(0.75) and s["std"] == pytest.approx(0.25)  # squares 0.125 over n − 1 (over n: 0.20)
    assert significance.summary([0.5])["std"] == 0.0


def test_naive_bayes_is_add_one_over_the_training_vocabulary_with_the_prior():
    # class 0: 8 words once each, class 1: "z" twice; |V| = 9. p(a | 0) = 2 / (8 + 9), p(a | 1) = 1 / (2 + 9): 0
    # (without |V| in the denominator: 2 / 8 < 1 / 2, class 1). Words never seen in training are left out: counted,
    # each "qqq" would add log(17 / 11) for class 1 and outweigh "a"
    texts, labels = ["a b c d e f g h", "z z"], [0, 1]
    assert baselines.naive_bayes(texts, labels, ["a", "a qqq qqq qqq"], [0, 0], per_document=True) == [True, True]
    # the prior: a document without a known word goes to the class with the most training documents (3 of 4)
    assert baselines.naive_bayes(["a", "b", "b", "b"], [0, 1, 1, 1], ["", "unseen"], [1, 1]) == 1.0


def test_words_are_lower_cased():
    assert baselines.words("The BBC's GOAL, 2-1!") == ["the", "bbc's", "goal", "2", "1"]


def test_tfidf_vectors_are_sublinear_unit_and_weighted_by_the_labelled_texts_idf(monkeypatch):
    seen = {}

    def probe(train_x, train_y, test_x, test_y, l2, standardize=True, per_document=False):
        seen.update(train_x=train_x, test_x=test_x, l2=l2, standardize=standardize)
        return 0.0

    monkeypatch.setattr(baselines, "linear_probe", probe)
    train = ["goal goal match", "Match vote"]  # columns: goal, match, vote (sorted)
    baselines.tfidf_logistic(train, [0, 1], ["goal unknown", "vote vote vote goal goal match"], [0, 1], l2=0.5)
    assert seen["l2"] == 0.5 and seen["standardize"] is False
    idf = {"goal": math.log(3 / 2) + 1, "match": math.log(3 / 3) + 1, "vote": math.log(3 / 2) + 1}  # 2 labelled texts

    def unit(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    expect_train = [unit([(1 + math.log(2)) * idf["goal"], idf["match"], 0]), unit([0, idf["match"], idf["vote"]])]
    expect_test = [[1.0, 0.0, 0.0], unit([(1 + math.log(2)) * idf["goal"], idf["match"], (1 + math.log(3)) * idf["vote"]])]
    torch.testing.assert_close(seen["train_x"], torch.tensor(expect_train))  # the test texts do not enter the idf
    torch.testing.assert_close(seen["test_x"], torch.tensor(expect_test))


def test_the_probe_standardizes_with_the_training_features_and_is_penalized():
    # trained on 0 -> class 0 and 2 -> class 1; every test point lies far on class 1's side. Standardized with the
    # training mean and std it is class 1 everywhere; with the test set's own, half of it would turn class 0
    train, test = torch.tensor([[0.0], [0.0], [2.0], [2.0]]), torch.tensor([[10.0], [10.0], [12.0], [12.0]])
    assert baselines.linear_probe(train, [0, 0, 1, 1], test, [1, 1, 1, 1]) == 1.0
    # a heavy penalty leaves the bias alone: the training majority (class 1) everywhere; a light one separates
    x = torch.tensor([[-1.0], [1.0], [1.0], [1.0]])
    assert baselines.linear_probe(x, [0, 1, 1, 1], torch.tensor([[-5.0]]), [1], l2=1e3) == 1.0
    assert baselines.linear_probe(x, [0, 1, 1, 1], torch.tensor([[-5.0]]), [0], l2=1e-4) == 1.0
    # standardized, the penalty does not depend on a feature's units: a tiny-scale feature that separates the
    # classes still wins over the 10:30 majority (only centred, its weight would need to be 1000 times larger)
    y = [0] * 10 + [1] * 30
    tiny = torch.tensor([[1e-3 * (2 * label - 1)] for label in y])
    assert baselines.linear_probe(tiny, y, torch.tensor([[-1e-3], [1e-3]]), [0, 1]) == 1.0


def test_the_pretrained_arm_is_tested_against_each_baseline_in_its_own_use():
    arms = {name: significance.summary(runs) for name, runs in {
        "pretrained": [0.8, 0.9], "random init": [0.5, 0.6], "bag of words": [0.7, 0.72], "tf-idf logistic": [0.9, 1.0],
        "pretrained, fine-tuned": [0.95, 0.97], "random init, fine-tuned": [0.85, 0.89]}.items()}
    frozen = downstream.against_baselines(arms)
    assert {k: round(t["difference"], 6) for k, t in frozen.items()} == {
        "pretrained vs random init": 0.3, "pretrained vs bag of words": 0.14, "pretrained vs tf-idf logistic": -0.1}
    assert frozen["pretrained vs random init"]["p_two_sided"] == pytest.approx(
        scipy_stats.ttest_ind([0.8, 0.9], [0.5, 0.6], equal_var=False).pvalue)
    tuned = downstream.against_baselines(arms, ", fine-tuned", "fine-tuned: ")
    # fine-tuned against random init fine-tuned (not frozen), and against the bags of words, which are not tuned
    assert {k: round(t["difference"], 6) for k, t in tuned.items()} == {
        "fine-tuned: pretrained vs random init": 0.09, "fine-tuned: pretrained vs bag of words": 0.25,
        "fine-tuned: pretrained vs tf-idf logistic": 0.01}
    assert all("bootstrap" not in t for t in tuned.values())  # no hits kept: no bootstrap
    # with hits kept, the bootstrap beside each test compares the same two arms the same way round
    hits = {"pretrained": ["11100", "11110"], "random init": ["10000", "11000"], "bag of words": ["11000", "11100"],
            "tf-idf logistic": ["11111", "11110"]}
    arms = {name: significance.summary([h.count("1") / 5 for h in rows], [[c == "1" for c in h] for h in rows])
            for name, rows in hits.items()}
    for name, t in downstream.against_baselines(arms).items():
        assert t["bootstrap"]["difference"] == pytest.approx(t["difference"]), name
        assert (t["difference"] > 0) == (name != "pretrained vs tf-idf logistic"), name


def test_a_random_init_arm_reads_the_test_documents_with_each_seeds_weights(monkeypatch):
    read = []  # (model, number of texts) of every document_features call

    def features(model, tokenizer, texts, max_length, max_chunks):
        read.append((model, len(texts)))
        return torch.full((len(texts), 2), float(len(read)))

    monkeypatch.setattr(downstream, "document_features", features)
    test = (["goal match", "bank shares", "match striker"], [0, 1, 0])

    def draw(seed):
        return ["goal match striker", "bank shares profit"], [0, 1]

    encoders = {"pretrained": lambda seed: ("trained", None), "random init": lambda seed: (f"weights {seed}", None)}
    arms = downstream.compare_arms(draw, test, encoders, [0, 1, 2], fixed=["pretrained"], progress=lambda line: None)
    test_reads = [model for model, n in read if n == 3]
    assert test_reads == ["trained", "weights 0", "weights 1", "weights 2"]  # the trained model's once, cached
    assert len(read) == 4 + 2 * 3  # and every seed's labelled documents through both
    assert [len(h) for h in arms["random init"]["hits"]] == [3, 3, 3]
    assert arms["majority"]["runs"] == pytest.approx([2 / 3] * 3)


def test_committed_pretraining_value_results_are_consistent():
    path = COURSE_DIR.parent / "pretraining-value" / "results.json"
    r = json.loads(path.read_text())
    arms = r["topics"]["arms"]
    for name in ("majority", "bag of words", "tf-idf logistic", "random init", "pretrained"):
        assert len(arms[name]["runs"]) >= 5
    assert r["topics"]["tests"]["pretrained vs random init"]["difference"] == pytest.approx(
        arms["pretrained"]["mean"] - arms["random init"]["mean"])
    for name in ("pretrained, fine-tuned", "random init, fine-tuned"):  # both networks tuned on every draw
        assert len(arms[name]["runs"]) == len(arms["pretrained"]["runs"])
    for baseline in ("bag of words", "tf-idf logistic"):
        assert r["topics"]["tests"][f"fine-tuned: pretrained vs {baseline}"]["difference"] == pytest.approx(
            arms["pretrained, fine-tuned"]["mean"] - arms[baseline]["mean"])
    sentiment = r["sentiment"]["arms"]
    for name in ("pretrained, fine-tuned", "random init, fine-tuned"):  # sentiment: both tuned on every draw too
        assert len(sentiment[name]["runs"]) == len(sentiment["pretrained"]["runs"]) >= 5
    assert r["sentiment"]["tests"]["fine-tuned: pretrained vs random init"]["difference"] == pytest.approx(
        sentiment["pretrained, fine-tuned"]["mean"] - sentiment["random init, fine-tuned"]["mean"])
    assert r["finetune"]["lr"] == FinetuneRecipe().lr  # the recipe the code runs is the one recorded
    assert f"first {downstream.PROBE_CHUNKS} chunks of {downstream.PROBE_LENGTH} tokens" in r["probe"]
    assert "bootstrap" in r["tests"] and f"{significance.BOOTSTRAP_SAMPLES:,}" in r["tests"]
    tasks = (r["topics"], r["sentiment"], *r["topics_by_labels"]["per_class"].values())
    for task in tasks:  # each run's hits are its accuracy, document by document, on one test set
        for arm in task["arms"].values():
            assert [h.count("1") / len(h) for h in arm["hits"]] == pytest.approx(arm["runs"])
            assert {len(h) for h in arm["hits"]} == {len(task["arms"]["majority"]["hits"][0])}
        assert all("bootstrap" in t for t in task["tests"].values())
    boot = r["topics"]["tests"]["fine-tuned: pretrained vs bag of words"]["bootstrap"]
    assert boot == significance.bootstrap(arms["pretrained, fine-tuned"]["hits"], arms["bag of words"]["hits"])
    curve = r["topics_by_labels"]["per_class"]
    assert [int(n) for n in curve] == list(downstream.CURVE_LABELS)
    for point in curve.values():
        for name in ("majority", "bag of words", "tf-idf logistic", "random init", "pretrained"):
            assert len(point["arms"][name]["runs"]) >= 5
        for baseline in ("bag of words", "tf-idf logistic"):
            assert point["tests"][f"pretrained vs {baseline}"]["difference"] == pytest.approx(
                point["arms"]["pretrained"]["mean"] - point["arms"][baseline]["mean"])


def _fake_run(folder, name, accuracy, *, best=None, **changes):
    """A run folder as pretrain.train leaves it (lesson 4's config, with ``changes``), as far as the lessons'
    choice reads it; ``best``: an earlier evaluation that scored higher than the last."""
    from deberta_edu.training.configs import get_config

    folder.mkdir(parents=True)
    for f in (MODEL_FILE, TOKENIZER_FILE):
        (folder / f).write_bytes(b"")
    run = get_config("lesson4", smoke=False).replace(name=name, **changes).to_dict()
    (folder / CONFIG_FILE).write_text(json.dumps(run))
    records = [{"kind": "eval", "step": 0, "tokens": 0, "val_accuracy": 0.0},
               *([{"kind": "eval", "step": 200, "tokens": 409600, "val_accuracy": best}] if best else []),
               {"kind": "eval", "step": 400, "tokens": 819200, "val_accuracy": accuracy}]
    (folder / LOG_FILE).write_text("\n".join(json.dumps(r) for r in records) + "\n{cut by a cra")


def test_the_lessons_show_the_course_model_unless_a_full_size_run_beats_it(tmp_path):
    course_accuracy = course_metrics()["held_out"]["val_accuracy"]
    none = tmp_path / "nothing"
    assert lesson_model_folder(none) == (COURSE_DIR, course_label())
    smoke = tmp_path / "smoke"
    _fake_run(smoke, "lesson4-smoke", 0.99)  # a smoke run is never shown, whatever it scored
    assert local_run_accuracy(smoke) is None and lesson_model_folder(smoke)[0] == COURSE_DIR
    worse = tmp_path / "worse"
    _fake_run(worse, "lesson4", course_accuracy - 0.01)
    assert local_run_accuracy(worse) == (pytest.approx(course_accuracy - 0.01), 819200)
    assert lesson_model_folder(worse)[0] == COURSE_DIR
    once_better = tmp_path / "once better"  # the saved model is the last one: an earlier, better score is gone
    _fake_run(once_better, "lesson4", course_accuracy - 0.01, best=course_accuracy + 0.05)
    assert local_run_accuracy(once_better)[0] == pytest.approx(course_accuracy - 0.01)
    assert lesson_model_folder(once_better)[0] == COURSE_DIR
    better = tmp_path / "better"
    _fake_run(better, "lesson4", course_accuracy + 0.01)
    folder, label = lesson_model_folder(better)
    assert folder == better and label.startswith("your lesson 4 model (0.8M tokens")
    assert label.endswith(f"above the course model's {course_accuracy:.1%})")
    for name, changes in {"smaller vocabulary": dict(vocab_size=1000), "shorter rows": dict(seq_length=64),
                          "fewer masks": dict(mlm_probability=0.1), "spans": dict(whole_word_masking=True),
                          "other text": dict(source="large")}.items():  # scored otherwise: never compared
        other = tmp_path / name
        _fake_run(other, "lesson4", course_accuracy + 0.2, **changes)
        assert local_run_accuracy(other) is not None and lesson_model_folder(other)[0] == COURSE_DIR, name


def test_the_explorer_and_lesson_5_show_the_course_model_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("DEBERTA_EDU_DATA", str(tmp_path))  # no lesson 4 run here
    demo = load_demo("a new store opened beside the new mall")
    assert demo.trained and demo.source == course_label() and "RANDOM" not in demo.source
    model, tokenizer, label = pretrained_for_lessons()
    assert label == course_label() and model.emd is not None and not model.training
    assert tokenizer.vocab_size == model.config.vocab_size == demo.model.config.vocab_size


def test_export_writes_what_load_course_model_reads(tmp_path, monkeypatch):
    """A few steps of a course-style run on a small corpus, exported: the committed files, in their formats."""
    from safetensors import safe_open
    from test_packing import write_corpus

    from deberta_edu import facts
    from deberta_edu.training import course
    from deberta_edu.training.configs import get_config
    from deberta_edu.training.mlm_data import prepare_data
    from deberta_edu.training.pretrain import train

    monkeypatch.setenv(facts.DATA_ENV, str(tmp_path / "data"))
    source = write_corpus(tmp_path, n_docs=400)
    cfg = get_config("debug", smoke=False).replace(
        name="export-test", source=str(source), vocab_size=320, whole_word_masking=False, steps=8,
        eval_every=4, save_every=4, log_every=1, eval_rows=16)
    train_data, val_data, tok = prepare_data(cfg)
    run = train(cfg, train_data, val_data, tokenizer=tok, out_dir=tmp_path / "run")
    out = tmp_path / "exported"
    metrics = course.export(run.path, out, command="pytest")
    assert {p.name for p in out.iterdir()} == {MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE, LOG_FILE, "metrics.json"}
    with safe_open(str(out / MODEL_FILE), "pt") as f:  # fp16 on disk, half the bytes
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert json.loads((out / "metrics.json").read_text()) == metrics == course.course_metrics(out)
    assert metrics["command"] == "pytest" and metrics["steps"] == 8 and metrics["tokens"] == 8 * cfg.tokens_per_step
    assert metrics["masking"].startswith("tokens") and metrics["held_out_whole_word_masking"]["val_tokens"] > 0
    logged = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    assert logged[-1] == run.history[-1] and len(logged) <= course.LOG_KEEP
    model, loaded_tok = load_course_model(out)  # what the lessons load: the same network, in fp32, offline
    ids = torch.tensor([[tok.cls_id, *tok.encode("the model learns to predict masked words"), tok.sep_id]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, run.model.float().eval()(ids).logits, atol=2e-2)
    assert loaded_tok.sha256 == tok.sha256
    # the held-out numbers are those of the committed fp16 weights, under token and under whole-word masking
    from deberta_edu.training.engine import Distributed, Precision
    from deberta_edu.training.evaluate import Evaluator
    from deberta_edu.training.mlm_data import MaskSpec

    every_row = cfg.replace(eval_rows=10_000)
    for key, c in (("held_out", every_row), ("held_out_whole_word_masking", every_row.replace(whole_word_masking=True))):
        assert metrics[key] == Evaluator(val_data, c, MaskSpec.of(c, tok), Distributed(), Precision("fp32", "cpu"))(model)
    assert metrics["below_unigram_nats"] == pytest.approx(
        metrics["unigram_baseline"]["val_loss"] - metrics["held_out"]["val_loss"])
    # an export that fails halfway leaves the exported model as it was, and nothing beside it
    before, measure = {p.name: p.read_bytes() for p in out.iterdir()}, course._measure
    monkeypatch.setattr(course, "_measure", lambda *args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        course.export(run.path, out, command="again")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # the command line exports only runs of configs["course"], unless told otherwise
    with pytest.raises(SystemExit, match=r"run of config 'export-test', not get_config\('course'\) \(it differs in "):
        course.main(["export", str(run.path), "--out", str(out)])
    with pytest.raises(SystemExit, match="holds no run"):
        course.main(["export", str(tmp_path / "no-such-run"), "--out", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # an export replaces its folder whole: never one that holds the run, or anything else
    with pytest.raises(ValueError, match="holds the run"):
        course.export(run.path, run.path, command="into the run")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds more than an exported model \(notes.txt\)"):
        course.export(run.path, tmp_path / "busy", command="over my notes")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]
    monkeypatch.setattr(course, "_measure", measure)  # and one that succeeds takes the old one's place
    assert course.export(run.path, out, command="again")["command"] == "again" == course.course_metrics(out)["command"]
    assert {p.name for p in out.iterdir()} == set(before) and not any(p.name.startswith(".") for p in tmp_path.iterdir())
    real_rename, calls = Path.rename, []

    def second_rename_fails(self, target):  # the new export cannot take the old one's place
        calls.append(self)
        if len(calls) == 2:
            raise OSError("simulated")
        return real_rename(self, target)

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(Path, "rename", second_rename_fails)
    with pytest.raises(OSError, match="simulated"):
        course.export(run.path, out, command="third")
    monkeypatch.setattr(Path, "rename", real_rename)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old export is back in its place
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_export_reads_the_runs_clock_and_its_held_out_corpus(tmp_path, monkeypatch):
    """metrics.json's times are the log's training clock and wall clock, and it names the corpus scored on."""
    from test_packing import write_corpus

    from deberta_edu import facts
    from deberta_edu.training import course
    from deberta_edu.training.configs import get_config
    from deberta_edu.training.mlm_data import prepare_data
    from deberta_edu.training.pretrain import train

    monkeypatch.setenv(facts.DATA_ENV, str(tmp_path / "data"))
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    source, held = write_corpus(tmp_path / "a", n_docs=300), write_corpus(tmp_path / "b", n_docs=300, seed=1)
    cfg = get_config("debug", smoke=False).replace(
        name="export-clock", source=str(source), eval_source=str(held), vocab_size=320, whole_word_masking=False,
        steps=4, eval_every=4, save_every=4, log_every=1, eval_rows=8)
    train_data, val_data, tok = prepare_data(cfg)
    run = train(cfg, train_data, val_data, tokenizer=tok, out_dir=tmp_path / "run")
    records = [json.loads(line) for line in (run.path / LOG_FILE).read_text().splitlines()]
    last = max(i for i, r in enumerate(records) if r.get("kind") == "train")
    records[last] |= {"train_time": 123.4, "time": 456.7}  # a run whose clocks tell apart
    (run.path / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    metrics = course.export(run.path, tmp_path / "exported", command="pytest")
    assert (metrics["train_time_s"], metrics["wall_time_s"]) == (123, 457)
    assert (metrics["source"], metrics["held_out_source"]) == (str(source), str(held))


def test_the_training_log_is_downsampled_evenly_and_keeps_every_eval():
    from deberta_edu.training.course import LOG_KEEP, _downsample

    records = [{"kind": "eval" if n % 100 == 99 else "train", "step": n} for n in range(1000)]
    kept = _downsample(records, keep=50)
    train = [r["step"] for r in kept if r["kind"] == "train"]
    assert len(train) == 50 and train[0] == 0 and train[-1] == 998  # the first and the last training record
    assert max(b - a for a, b in zip(train, train[1:], strict=False)) <= 2 * 1000 / 50  # evenly spread
    assert [r["step"] for r in kept if r["kind"] == "eval"] == list(range(99, 1000, 100))
    assert [r["step"] for r in kept] == sorted(r["step"] for r in kept)  # in their order
    assert _downsample(records[:30], keep=50) == records[:30]  # short logs stay whole
    committed = [json.loads(line) for line in (COURSE_DIR / LOG_FILE).read_text().splitlines()]
    train = [r for r in committed if r["kind"] == "train"]
    assert len(train) <= LOG_KEEP and train[-1]["step"] == course_metrics()["steps"]


def test_fine_tuning_learns_from_the_labels_and_leaves_the_model_alone():
    import random

    model, tokenizer = _tiny_encoder()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = random.Random(0)
    texts = [" ".join(rng.choice(TOPIC_WORDS[i % 2]) for _ in range(12)) for i in range(80)]
    y = [i % 2 for i in range(80)]
    recipe = FinetuneRecipe(lr=1e-3, epochs=4, max_length=8)  # chunks of 6 words: several per text
    assert finetuned_accuracy(model, tokenizer, texts[:40], y[:40], texts[40:], y[40:], 0,
                                         recipe=recipe) > 0.95
    shuffled = [rng.randrange(2) for _ in range(40)]  # labels that carry nothing: near chance on the test half
    assert finetuned_accuracy(model, tokenizer, texts[:40], shuffled, texts[40:], y[40:], 0,
                                         recipe=recipe) < 0.8
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy was tuned


class _CountingTokenizer:
    """Text "n" is the n ids 10, 11, ..., 10 + n - 1."""

    def encode_batch(self, texts):
        return [list(range(10, 10 + int(t))) for t in texts]


class _IdEncoder(torch.nn.Module):
    """An encoder whose one-dimensional state at each position is the token id there."""

    config = type("Config", (), {"hidden_size": 1})

    def forward(self, ids, attention_mask=None):
        return type("Output", (), {"last_hidden_state": ids.float()[..., None]})


def test_chunk_rows_cut_texts_into_cls_sep_rows_of_at_most_max_length():
    rows, owner = chunk_rows(_CountingTokenizer(), ["9", "0", "3"], max_length=5, max_chunks=2)
    assert rows == [[1, 10, 11, 12, 2], [1, 13, 14, 15, 2],  # "9": 3 chunks of 3, the first 2 kept
                    [1, 2],  # an empty text still gets a row, so every document has features
                    [1, 10, 11, 12, 2]]
    assert owner == [0, 0, 1, 2]


def test_mean_pool_averages_over_the_real_tokens_only():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 3.0], [0.0, 0.0]]  # padding ignored; no real token: zeros


def test_document_features_average_every_real_token_of_every_chunk():
    """Text "9" is three rows [CLS] 3 ids [SEP]: 15 tokens summing to 3 x (1 + 2) + (10 + ... + 18) = 135."""
    features = document_features(_IdEncoder(), _CountingTokenizer(), ["9", "3", "1"], max_length=5, max_chunks=4,
                                 batch_size=2)
    expected = [135 / 15, (1 + 10 + 11 + 12 + 2) / 5, (1 + 10 + 2) / 3]
    torch.testing.assert_close(features[:, 0], torch.tensor(expected))


TOPIC_WORDS = (["goal", "match", "striker", "coach", "league"], ["shares", "bank", "profit", "market", "firm"])


def _tiny_encoder():
    """A one-layer DebertaForMaskedLM of width 32 from seed 0, with the course model's tokenizer."""
    from deberta_edu.model.config import DebertaConfig
    from deberta_edu.model.emd import DebertaForMaskedLM

    _, tokenizer = load_course_model()
    torch.manual_seed(0)
    model = DebertaForMaskedLM(DebertaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64)).eval()
    return model, tokenizer


def _tiny_encoder_and_texts():
    model, tokenizer = _tiny_encoder()
    texts = [" ".join(TOPIC_WORDS[i % 2][(i + k) % 5] for k in range(12)) for i in range(80)]
    return model, tokenizer, texts, [i % 2 for i in range(80)]


def test_the_mean_pool_head_starts_at_zero_so_the_first_predictions_are_uniform():
    model, tokenizer, texts, _ = _tiny_encoder_and_texts()
    ids = torch.tensor([[CLS_ID, *tokenizer.encode(texts[0]), SEP_ID]])
    logits = MeanPoolClassifier(model.deberta, 3)(ids, torch.ones_like(ids))
    assert torch.equal(logits, torch.zeros(1, 3))


def test_the_head_learns_at_its_own_rate_and_a_zero_rate_leaves_it_at_zero():
    """head_lr_scale multiplies the head's rate: at 0 the head stays at zero, every class scores alike, the answer is
    class 0 for every document, whatever the encoder learned."""
    model, tokenizer, texts, y = _tiny_encoder_and_texts()
    recipe = FinetuneRecipe(lr=1e-3, epochs=2, max_length=8, head_lr_scale=0.0)
    hits = finetuned_accuracy(model, tokenizer, texts[:40], y[:40], texts[40:], y[40:], 0, recipe=recipe,
                              per_document=True)
    assert hits == [label == 0 for label in y[40:]]


def test_a_diverged_document_fine_tuning_is_refused_not_scored():
    """A fine-tuning whose loss is not finite stops with a FloatingPointError, as pretraining does. Before, its NaN
    weights answered class 0 for every document, and that accuracy (class 0's share) went into downstream's and
    selection's tables."""
    model, tokenizer, texts, y = _tiny_encoder_and_texts()
    with torch.no_grad():
        model.deberta.embeddings.word_embeddings.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"loss became nan \(seed 4, lr 0.001\)"):
        finetuned_accuracy(model, tokenizer, texts[:40], y[:40], texts[40:], y[40:], 4,
                           recipe=FinetuneRecipe(lr=1e-3, epochs=1, max_length=8))


def test_a_documents_answer_sums_the_log_probabilities_of_its_chunks(monkeypatch):
    """Three chunks at p(0) = 0.9 and one at p(1) = 0.9999: summed log-probabilities say 1 (-9.5 against -6.9), where
    summed probabilities, the first chunk or the last chunk alone would say 0 for one of the two documents."""
    from deberta_edu.training import documents

    weak, strong = 10, 11

    class ChunkByItsWords(torch.nn.Module):  # in place of MeanPoolClassifier: a fixed prediction per chunk
        def __init__(self, encoder, classes):
            super().__init__()
            self.encoder, self.head = torch.nn.Linear(1, 1), torch.nn.Linear(1, classes)

        def forward(self, ids, mask):
            p1 = torch.where((ids == strong).any(1), 0.9999, 0.1)
            return torch.stack([(1 - p1).log(), p1.log()], -1) + 0 * self.head.weight.sum()

    class Words:
        def encode_batch(self, texts):
            return [[{"w": weak, "s": strong}[w] for w in t.split()] for t in texts]

    monkeypatch.setattr(documents, "MeanPoolClassifier", ChunkByItsWords)
    texts = ["w w w w w w s s", "s s w w w w w w"]  # chunks of 2 words: the strong one last, or first
    hits = finetuned_accuracy(None, Words(), texts, [1, 1], texts, [1, 1], 0, classes=2,
                              recipe=FinetuneRecipe(epochs=1, max_length=4), per_document=True)
    assert hits == [True, True]


def test_the_value_table_puts_the_model_beside_its_baselines():
    def arm(mean, std):
        return {"mean": mean, "std": std, "runs": [mean]}

    task = {"task": "BBC topics, 20 labelled documents per class, 125 held-out test documents",
            "arms": {"majority": arm(0.328, 0), "bag of words": arm(0.9, 0.02), "tf-idf logistic": arm(0.94, 0.015),
                     "random init": arm(0.6, 0.05), "pretrained": arm(0.88, 0.03)},
            "tests": {"pretrained vs random init": {"difference": 0.28, "p_two_sided": 1e-4},
                      "pretrained vs bag of words": {"difference": -0.02, "p_two_sided": 0.3},
                      "pretrained vs tf-idf logistic": {"difference": -0.06, "p_two_sided": 2e-5}}}
    table = downstream.markdown_table({"topics": task})
    assert table.splitlines()[2] == (
        "| BBC topics, 20 labelled documents per class, 1 draw | frozen | 32.8 ± 0.0 | 90.0 ± 2.0 | 94.0 ± 1.5 | "
        "60.0 ± 5.0 | 88.0 ± 3.0 | +28.0, p = 0.0001 | -2.0, p = 0.3 | -6.0, p = 2e-05 |")
    assert len(table.splitlines()) == 3  # no fine-tuned arms, no fine-tuned row
    task["arms"] |= {"pretrained, fine-tuned": arm(0.94, 0.01), "random init, fine-tuned": arm(0.83, 0.05)}
    task["tests"] |= {"fine-tuned: pretrained vs random init": {"difference": 0.11, "p_two_sided": 6e-5},
                      "fine-tuned: pretrained vs bag of words": {"difference": 0.04, "p_two_sided": 0.001},
                      "fine-tuned: pretrained vs tf-idf logistic": {"difference": 0.0, "p_two_sided": 0.9}}
    assert downstream.markdown_table({"topics": task}).splitlines()[3] == (
        "| BBC topics, 20 labelled documents per class, 1 draw | fine-tuned | 32.8 ± 0.0 | 90.0 ± 2.0 | 94.0 ± 1.5 | "
        "83.0 ± 5.0 | 94.0 ± 1.0 | +11.0, p = 6e-05 | +4.0, p = 0.001 | +0.0, p = 0.9 |")
    task["tests"]["fine-tuned: pretrained vs bag of words"]["bootstrap"] = {"p_two_sided": 0.21}  # after a slash
    assert "| +4.0, p = 0.001 / 0.21 |" in downstream.markdown_table({"topics": task}).splitlines()[3]


def test_lesson_5s_runs_record_the_commands_that_made_them():
    sift = COURSE_DIR.parent / "sift"
    grid = sorted((sift / "lr-grid").glob("*.json"))
    assert {p.stem for p in grid} == {f"{arm}-lr{lr}" for arm in ("course", "random") for lr in ("2e-4", "3e-3")}
    for path in [sift / "results.json", sift / "random-init.json", *grid]:
        r = json.loads(path.read_text())
        arm, lr = path.stem.split("-lr") if "-lr" in path.stem else (path.stem, "1e-3")
        command = r["command"].split()
        assert command[command.index("--lr") + 1] == lr, (path.name, r["command"])  # the rate its name says
        assert ("--random-init" in command) == arm.startswith("random"), (path.name, r["command"])
        assert command[command.index("--out") + 1] == path.relative_to(COURSE_DIR.parents[1]).as_posix(), path.name
        assert ("drawn anew with each seed" in r["encoder"]) == arm.startswith("random")  # one draw per seed
        for row in r["test_accuracy"].values():  # which test snippets each seed got right, for the bootstrap
            assert [h.count("1") / len(h) for h in row["hits"]] == pytest.approx(row["test"]), path.name


@pytest.mark.parametrize("epochs, per_epoch", [(5, 2), (10, 1)])
def test_fine_tuning_of_exactly_ten_steps_runs(epochs, per_epoch, monkeypatch):
    """10 steps (5 epochs of 2 batches, or 10 of 1): torch's one-cycle warm-up would end at step 0 and divide by 0."""
    cycles = []

    class Recorded(torch.optim.lr_scheduler.OneCycleLR):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            cycles.append(self)

    monkeypatch.setattr(torch.optim.lr_scheduler, "OneCycleLR", Recorded)
    model, tokenizer, texts, y = _tiny_encoder_and_texts()
    recipe = FinetuneRecipe(lr=1e-3, epochs=epochs, max_length=16, max_chunks=1)  # one chunk per text
    accuracy = finetuned_accuracy(model, tokenizer, texts[:16 * per_epoch], y[:16 * per_epoch], texts[40:], y[40:], 0,
                                  recipe=recipe)
    assert 0.0 <= accuracy <= 1.0
    assert [c.total_steps for c in cycles] == [10] and cycles[0].last_epoch == 10  # the ten steps, all taken


def test_fine_tuning_clips_every_step_and_warms_up_over_a_tenth(monkeypatch):
    """The recipe's clipping (max_grad_norm) runs at every step, and its one cycle warms up over the first 10% of
    the steps, as FinetuneRecipe and the committed results say."""
    from deberta_edu.training import documents

    cycles, clips = [], []

    class Recorded(torch.optim.lr_scheduler.OneCycleLR):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            cycles.append(kwargs)

    real_clip = documents.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.optim.lr_scheduler, "OneCycleLR", Recorded)
    monkeypatch.setattr(documents.nn.utils, "clip_grad_norm_", lambda p, norm: clips.append(norm) or real_clip(p, norm))
    model, tokenizer, texts, y = _tiny_encoder_and_texts()
    recipe = FinetuneRecipe(lr=1e-3, epochs=2, max_length=16, max_chunks=1, max_grad_norm=0.5)
    finetuned_accuracy(model, tokenizer, texts[:32], y[:32], texts[40:], y[40:], 0, recipe=recipe)  # 2 x 2 batches
    assert clips == [0.5] * 4
    assert [(c["total_steps"], c["pct_start"]) for c in cycles] == [(4, 0.1)]


@pytest.mark.parametrize("module, args, words", [
    ("downstream", ["--seeds", "0"], "--seeds is how many draws (at least 1), got 0"),
    ("downstream", ["--out", "{file}"], "is a file; name a folder"),
    ("selection", ["--out", "{file}"], "is a file; name a folder"),
    ("finetune", ["--step-eps", "-1", "--out", "{dir}/r.json"], "--step-eps must be >= 0"),
    ("finetune", ["--out", "{dir}"], "is a folder; give the path of the JSON file"),
])
def test_the_experiment_commands_refuse_before_any_work(tmp_path, module, args, words):
    import importlib

    (tmp_path / "a-file").write_text("")
    args = [a.format(file=tmp_path / "a-file", dir=tmp_path) for a in args]
    main = importlib.import_module(f"deberta_edu.training.{module}").main
    with pytest.raises(SystemExit, match=words.replace("(", r"\(").replace(")", r"\)")):
        main(args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing written
