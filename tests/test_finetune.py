"""The fine-tuning loop learns a toy task, with and without SiFT."""

import pytest
import torch

from deberta_edu import DebertaForMaskedLM, make_config
from deberta_edu.data.batch import Batch
from deberta_edu.data.sentiment import Example
from deberta_edu.training.finetune import (
    FinetuneConfig,
    classification_batch,
    classifier_from,
    collate,
    encode,
    finetune,
    sift_loss,
    training_batches,
)
from deberta_edu.training.sift import AdversarialConfig, build_adversary


class WordTokenizer:
    cls_id, sep_id, pad_id = 1, 2, 0

    def __init__(self, words):
        self.ids = {w: i + 5 for i, w in enumerate(words)}

    def encode(self, text):
        return [self.ids[w] for w in text.split()]


def _toy_splits(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos, neg, filler = ["good", "great", "fine"], ["bad", "awful", "dull"], ["the", "film", "was", "a", "plot"]
    words = pos + neg + filler
    examples = []
    for _ in range(n):
        label = int(torch.randint(2, (1,), generator=g))
        sentiment = (pos if label else neg)[int(torch.randint(3, (1,), generator=g))]
        text = [filler[int(i)] for i in torch.randint(5, (6,), generator=g)]
        text.insert(int(torch.randint(7, (1,), generator=g)), sentiment)
        examples.append(Example(" ".join(text), label, 1.0 if label else -1.0))
    return {"train": examples[:300], "dev": examples[300:350], "test": examples[350:]}, WordTokenizer(words)


def test_collate_pads_and_masks():
    ids, mask = collate([[1, 7, 2], [1, 2]])
    assert ids.tolist() == [[1, 7, 2], [1, 2, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    batch = classification_batch([[1, 7, 2], [1, 2]], torch.tensor([1, 0]))  # the Batch pretraining uses too
    assert isinstance(batch, Batch) and torch.equal(batch.input_ids, ids) and torch.equal(batch.attention_mask, mask)
    assert batch.labels.tolist() == [1, 0] and batch.num_targets == 2  # one class per sequence


def test_finetune_learns_with_and_without_sift(tmp_path):
    splits, tok = _toy_splits()
    torch.manual_seed(0)
    pretrained = DebertaForMaskedLM(make_config("tiny", vocab_size=64, max_relative_positions=32,
                                                position_buckets=-1, max_position_embeddings=32))
    for lam, method in ((0.0, "sift"), (1.0, "sift"), (1.0, "vat")):
        cfg = FinetuneConfig(lr=1e-3, epochs=4, batch_size=32, progress=False,
                             adversarial=AdversarialConfig(lam=lam, method=method))
        out = tmp_path / f"{method}-{lam}"
        result = finetune(pretrained, splits, tok, cfg, out_dir=out)
        assert result.test_accuracy > 0.9, (lam, method, result.test_accuracy)
        assert len(result.test_hits) == len(splits["test"]) and sum(result.test_hits) / 50 == result.test_accuracy
        assert (out / "classifier.safetensors").exists()
        if lam:
            assert "adv_loss" in result.history[-1]
            assert ("step_linf_per_token" in result.history[-1]) == (method == "sift")


@pytest.mark.parametrize("method", ["sift", "vat"])
def test_the_adversarial_loss_reaches_what_training_minimises(method):
    """The loss the loop steps on is cross-entropy + λ x the adversarial loss it logs, so SiFT (lesson 5's
    subject) cannot drop out of training while its statistics still look right."""
    splits, tok = _toy_splits(40)
    torch.manual_seed(0)
    pretrained = DebertaForMaskedLM(make_config("tiny", vocab_size=64, max_relative_positions=32,
                                                position_buckets=-1, max_position_embeddings=32))
    model = classifier_from(pretrained, dropout=0.0).train()
    batch = classification_batch(*encode(splits["train"][:8], tok, 32))
    losses = {}
    for lam in (0.0, 2.0):
        stats = {}
        cfg = FinetuneConfig(adversarial=AdversarialConfig(lam=lam, method=method))
        adversary = build_adversary(model.deberta.embeddings, cfg.adversarial, torch.Generator().manual_seed(0))
        losses[lam] = sift_loss(cfg, adversary, model.config.hidden_size, stats)(model, batch)
        if lam:
            assert stats["adv_loss"] > 0
            with torch.no_grad():
                ce = model(batch.input_ids, batch.attention_mask, labels=batch.labels).loss
            assert losses[lam].item() == pytest.approx(ce.item() + lam * stats["adv_loss"], rel=1e-6)
    assert losses[2.0].item() > losses[0.0].item()


def test_random_init_draws_new_weights_for_every_seed(monkeypatch):
    from deberta_edu.training import finetune as ft

    pretrained = DebertaForMaskedLM(make_config("tiny", vocab_size=40))
    seen = []  # (seed, the encoder each run started from)
    monkeypatch.setattr(ft, "finetune", lambda encoder, splits, tokenizer, cfg: seen.append((cfg.seed, encoder))
                        or ft.FinetuneResult(0.5, 0.5, [{}], None, cfg, [True, False]))
    ft.compare(pretrained, {}, None, lams=(0.0,), seeds=(0, 1, 7), random_init=True)
    first = {seed: next(iter(e.state_dict().values())) for seed, e in seen}
    assert all(e is not pretrained and e.config == pretrained.config for _, e in seen)
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[7])  # one draw per seed
    assert torch.equal(first[7], next(iter(ft.random_weights(pretrained, 7).state_dict().values())))  # by its seed
    seen.clear()
    ft.compare(pretrained, {}, None, lams=(0.0,), seeds=(0, 1))
    assert all(e is pretrained for _, e in seen)  # without random_init: the pretrained weights themselves


def test_a_cut_comparison_resumes_to_the_numbers_of_an_uncut_one(tmp_path, monkeypatch):
    from deberta_edu.training import finetune as ft
    from deberta_edu.training.journal import Journal

    splits, tok = _toy_splits()
    pretrained = DebertaForMaskedLM(make_config("tiny", vocab_size=64, max_relative_positions=32,
                                                position_buckets=-1, max_position_embeddings=32))
    recipe = {"lr": 1e-3, "epochs": 0.5, "batch_size": 32, "progress": False}

    def both(journal=None):
        return ft.compare(pretrained, splits, tok, lams=(0.0, 1.0), seeds=(0, 1), random_init=True, journal=journal,
                          **recipe)

    uncut = both()
    real, path = ft.finetune, tmp_path / "results.draws.jsonl"

    def dies_in_the_third_run(encoder, splits, tokenizer, cfg):
        if (cfg.adversarial.lam, cfg.seed) == (1.0, 0):
            raise KeyboardInterrupt
        return real(encoder, splits, tokenizer, cfg)

    monkeypatch.setattr(ft, "finetune", dies_in_the_third_run)
    with pytest.raises(KeyboardInterrupt):
        both(Journal.open(path, {"s": 1}))
    monkeypatch.setattr(ft, "finetune", real)
    torch.manual_seed(12345)  # a new command: the global generator is wherever that process left it
    assert both(Journal.open(path, {"s": 1})) == uncut  # λ = 0 read back, λ = 1 made


def _pretrained():
    torch.manual_seed(0)
    return DebertaForMaskedLM(make_config("tiny", vocab_size=64, max_relative_positions=32, position_buckets=-1,
                                          max_position_embeddings=32))


def test_the_classifier_starts_from_a_copy_of_the_pretrained_encoder():
    pretrained = _pretrained()
    clf = classifier_from(pretrained, dropout=0.3)
    mine = clf.deberta.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in pretrained.deberta.state_dict().items())
    assert clf.config.hidden_dropout_prob == 0.3 and clf.config.attention_probs_dropout_prob == 0.3
    with torch.no_grad():
        clf.deberta.embeddings.word_embeddings.weight.add_(1.0)
    assert not torch.equal(clf.deberta.embeddings.word_embeddings.weight,
                           pretrained.deberta.embeddings.word_embeddings.weight)  # a copy: the original stays


def test_every_epoch_is_a_new_shuffle_of_every_example():
    rows, labels = [[1, 5 + i, 2] for i in range(12)], torch.arange(12)
    epochs = [[], [], []]
    for step, batch in training_batches(rows, labels, FinetuneConfig(batch_size=4, seed=3), steps_per_epoch=3, steps=9):
        assert torch.equal(batch.input_ids[:, 1] - 5, batch.labels)  # each row with its own label
        epochs[step // 3] += batch.labels.tolist()
    assert all(sorted(e) == list(range(12)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 3


def test_finetune_warms_up_then_decays_the_rate_and_decays_only_the_matrices(monkeypatch, one_thread):
    from deberta_edu.training import finetune as ft

    splits, tok = _toy_splits()
    splits = {name: examples[:32] for name, examples in splits.items()}
    seen, real = [], ft.optimizer_step

    def spy(model, optimizer, *args, **kwargs):
        seen.append([(g["lr"], g["weight_decay"]) for g in optimizer.param_groups])
        return real(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(ft, "optimizer_step", spy)
    cfg = FinetuneConfig(lr=1e-3, epochs=2, batch_size=8, max_train_examples=32, warmup_fraction=0.25,
                         weight_decay=0.05, progress=False)
    finetune(_pretrained(), splits, tok, cfg)
    # 2 epochs of 4 updates: 2 of warmup, then linear decay, 1/6 of the rate at the last update
    factors = [0.5, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]
    assert [[lr for lr, _ in groups] for groups in seen] == [pytest.approx([1e-3 * f] * 2) for f in factors]
    assert all([wd for _, wd in groups] == [0.05, 0.0] for groups in seen)


def test_finetune_draws_only_from_its_seed(one_thread):
    """The head, the dropout and SiFT's noise come from cfg.seed, wherever earlier work left the global generator."""
    splits, tok = _toy_splits()
    splits = {name: examples[:16] for name, examples in splits.items()}
    pretrained = _pretrained()
    cfg = FinetuneConfig(lr=1e-3, epochs=1, batch_size=8, max_train_examples=16, progress=False,
                         adversarial=AdversarialConfig(lam=1.0))
    runs = []
    for elsewhere in (1, 2):
        torch.manual_seed(elsewhere)
        runs.append(finetune(pretrained, splits, tok, cfg))
    assert runs[0].history == runs[1].history and runs[0].test_hits == runs[1].test_hits
    a, b = runs[0].model.state_dict(), runs[1].model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_test_accuracy_is_scored_on_the_test_split(one_thread):
    """test_accuracy and test_hits come from the test rows, not the dev rows: lesson 5 reports them as
    held-out numbers, so a swap would quietly report the split the runs were compared on."""
    from deberta_edu.training.finetune import accuracy

    splits, tok = _toy_splits(132)
    splits = {"train": splits["train"][:32], "dev": splits["train"][32:72], "test": splits["train"][72:132]}
    cfg = FinetuneConfig(lr=1e-3, epochs=1, batch_size=16, progress=False)
    result = finetune(_pretrained(), splits, tok, cfg)
    assert len(result.test_hits) == 60  # one per test example; the dev split has 40
    rows, labels = encode(splits["test"], tok, cfg.max_length)
    assert result.test_accuracy == accuracy(result.model, rows, labels)
    assert result.test_hits == accuracy(result.model, rows, labels, per_document=True)


def test_accuracy_scores_with_dropout_off_and_leaves_the_model_training():
    """accuracy() switches dropout off, so a score is one number per model (not a draw), and hands the model
    back in the mode it came in: training for the steps that follow, eval for a model only being scored."""
    from deberta_edu.training.finetune import accuracy

    splits, tok = _toy_splits(64)
    rows, _ = encode(splits["train"][:64], tok, 32)
    model = classifier_from(_pretrained(), dropout=0.5).train()
    ids, mask = collate(rows)
    with torch.no_grad():
        model.eval()
        labels = model(ids, mask).logits.argmax(-1)  # what the model predicts with dropout off
        model.train()
    torch.manual_seed(0)
    first = accuracy(model, rows, labels, batch_size=16, per_document=True)
    second = accuracy(model, rows, labels, batch_size=16, per_document=True)
    assert first == second == [True] * 64
    assert model.training and model.deberta.training  # training mode again afterwards
    accuracy(model.eval(), rows, labels, batch_size=16)
    assert not model.training and not model.deberta.training  # an eval-mode model stays in eval mode


def test_compare_reports_the_sample_standard_deviation(monkeypatch):
    """The spread over seeds is the sample std (n − 1), the estimate a few seeds call for; the population
    std would understate how much seeds disagree."""
    from deberta_edu.training import finetune as ft

    acc = {0: 0.5, 1: 1.0, 2: 0.75}
    monkeypatch.setattr(ft, "finetune", lambda encoder, splits, tokenizer, cfg: ft.FinetuneResult(
        0.5, acc[cfg.seed], [{}], None, cfg, [True]))
    table = ft.compare(None, {}, None, lams=(0.0,), seeds=(0, 1, 2))
    assert table[0.0]["test"] == [0.5, 1.0, 0.75]
    assert table[0.0]["mean"] == pytest.approx(0.75)
    assert table[0.0]["std"] == pytest.approx(0.25)  # pstdev would give 0.204


def test_encode_cuts_long_examples_to_max_length_with_sep_last():
    """A long snippet is cut so that [CLS] + pieces + [SEP] fits max_length: the model's position table and the
    padded batch assume it, and [SEP] must close every row."""
    tok = WordTokenizer(["w"])
    examples = [Example(" ".join(["w"] * n), n % 2, 0.0) for n in (3, 6, 7, 20)]
    rows, labels = encode(examples, tok, max_length=8)
    assert [len(r) for r in rows] == [5, 8, 8, 8]
    assert all(r[0] == tok.cls_id and r[-1] == tok.sep_id for r in rows)
    assert all(r[1:-1] == [tok.ids["w"]] * (len(r) - 2) for r in rows)
    assert labels.tolist() == [1, 0, 1, 0]


def test_fp16_finetuning_hands_the_loss_scale_to_the_adversary(monkeypatch, one_thread):
    """With fp16 (a GPU's choice, emulated on the CPU) the adversary's ascent backward runs on the GradScaler's
    scale, which finetune hands over before every step; float32 leaves it at 1."""
    from deberta_edu.training import finetune as ft

    splits, tok = _toy_splits()
    splits = {name: examples[:16] for name, examples in splits.items()}
    made = []
    monkeypatch.setattr(ft, "build_adversary", lambda *a, **k: made.append(build_adversary(*a, **k)) or made[-1])
    for precision, expected in (("fp16", 2.0**16), ("fp32", 1.0)):
        cfg = FinetuneConfig(lr=1e-3, epochs=1, batch_size=8, max_train_examples=16, progress=False,
                             precision=precision, device="cpu", adversarial=AdversarialConfig(lam=1.0))
        result = finetune(_pretrained(), splits, tok, cfg)
        assert made[-1].grad_scale == expected
        assert all(torch.isfinite(torch.tensor(r["adv_loss"])) for r in result.history)


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_a_diverged_fine_tuning_is_refused_not_scored(lam, one_thread):
    """A fine-tuning whose loss is not finite stops with a FloatingPointError that says where, as pretraining
    does. Before, its NaN weights went on to predict class 0 for every example, and that accuracy (the share of
    class 0) went into lesson 5's tables and the ablation's as a result."""
    splits, tok = _toy_splits()
    pretrained = _pretrained()
    with torch.no_grad():
        pretrained.deberta.embeddings.word_embeddings.weight[7] = float("nan")  # a word every row may hold
    cfg = FinetuneConfig(lr=1e-3, epochs=1, batch_size=16, progress=False, seed=3,
                         adversarial=AdversarialConfig(lam=lam))
    with pytest.raises(FloatingPointError, match=rf"fine-tuning loss became nan at step 1 \(lr 0.001, λ {lam}, seed 3\)"):
        finetune(pretrained, splits, tok, cfg)


def test_the_finetune_command_says_a_divergence_in_words(monkeypatch, tmp_path, capsys):
    """python -m deberta_edu.finetune ends a diverged comparison with 'error: ...', as pretrain's command does."""
    from deberta_edu.training import finetune as module

    def diverge(*args, **kwargs):
        raise FloatingPointError("the fine-tuning loss became nan at step 4")

    monkeypatch.setattr(module, "compare", diverge)
    monkeypatch.setattr("deberta_edu.data.sentiment.load_splits", lambda: _toy_splits(8)[0])
    with pytest.raises(SystemExit, match="error: the fine-tuning loss became nan at step 4"):
        module.main(["--seeds", "0", "1", "--out", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()
