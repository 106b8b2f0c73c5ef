"""Lesson 6, what a pretrained model is scored on besides its held-out MLM loss, and the baselines beside it.

    position_probe    lesson 3's probe (training.probe) on FROZEN features: "the new <noun>" in the subject or the
                      object slot of a padded window, read from the state the MLM head reads (the EMD's output,
                      or the last layer's); a linear probe (training.baselines.linear_probe). From random weights a
                      model without absolute positions sits at chance; but [CLS] at position 0 is inside the
                      relative window, so pretraining can teach it the slot (lesson 3's anchored case)
    topic_probe       BBC News topics with 20 labelled documents per class, frozen mean-pooled features, the same
                      linear probe; the test documents are the held-out ones pretraining never saw
    sentiment         plain fine-tuning on movie-review snippets (lesson 5's task); a classifier that predicts one
                      class for every test snippet is flagged "constant" (the report leaves it out of means)
    baselines         majority class, bag of words (Naive Bayes), the same networks from random weights

Both probes are deterministic given the features (L-BFGS), so their variance is the pretraining seed's.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from deberta_edu.training import baselines as bow
from deberta_edu.training import documents
from deberta_edu.training.configs import TrainConfig
from deberta_edu.training.finetune import FinetuneConfig, classification_batch, encode, finetune
from deberta_edu.training.probe import ProbeTask, held_out, majority_rate, probe_batch

PROBE_NOUNS = ("store", "mall", "company", "government", "film", "team", "market", "party", "phone", "music",
               "plan", "deal", "club", "school", "bank", "show")


# ----------------------------------------------------------------------------- the position probe


def probe_task(tokenizer) -> ProbeTask | None:
    """The probe's toy language in the tokenizer's own pieces: "the", "new" and the nouns that are one piece."""
    if tokenizer is None:
        return None

    def piece(word):
        ids = tokenizer.encode(word)
        return ids[0] if len(ids) == 1 else None

    the, new = piece("the"), piece("new")
    nouns = tuple(i for i in map(piece, PROBE_NOUNS) if i is not None)
    if the is None or new is None or len(nouns) < 2:
        return None
    return ProbeTask(the=the, new=new, nouns=nouns)


@torch.no_grad()
def _noun_states(model, batch, batch_size: int = 512) -> torch.Tensor:
    """(N, D) the state the MLM head reads at each window's noun, in float32 on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    states = []
    for s in range(0, len(batch.ids), batch_size):
        ids, mask = batch.ids[s:s + batch_size].to(device), batch.mask[s:s + batch_size].to(device)
        out = model.deberta(ids, mask)  # what DebertaForMaskedLM.forward does before its head (no logits needed)
        h = model.emd(model.deberta.encoder.layers[-1], out.encoder_state) if model.emd is not None \
            else out.last_hidden_state  # (b, window, D): the EMD's output, or the last layer's
        h = h.float()
        states.append(h[torch.arange(len(ids), device=device), batch.pos[s:s + batch_size].to(device)].cpu())
    return torch.cat(states)


def position_probe(model, tokenizer, settings: dict) -> dict | None:
    """Held-out accuracy of a linear probe for the slot (subject / object) on frozen noun states; None without words."""
    task = probe_task(tokenizer)
    if task is None:
        return None
    train = probe_batch(task, settings["train_windows"], torch.Generator().manual_seed(0))
    test = held_out(task, settings["test_windows"])
    accuracy = bow.linear_probe(_noun_states(model, train), train.label.tolist(), _noun_states(model, test),
                                       test.label.tolist(), classes=2)
    return {"accuracy": accuracy, "chance": majority_rate(test.label)}


# ----------------------------------------------------------------------------- the topic probe


class _OnItsDevice:
    """The encoder as ``documents.document_features`` calls it (CPU tensors in and out), run on its own device."""

    def __init__(self, model):
        self.encoder = model.deberta
        self.config = self.encoder.config

    def eval(self):
        self.encoder.eval()
        return self

    def __call__(self, ids, attention_mask):
        device = next(self.encoder.parameters()).device
        out = self.encoder(ids.to(device), attention_mask=attention_mask.to(device))
        return SimpleNamespace(last_hidden_state=out.last_hidden_state.float().cpu())


_TOPICS: dict[tuple, dict] = {}  # topic_data per (data root, settings): read once per process


def topic_data(settings: dict) -> dict:
    """The labelled draws and the test documents of BBC News topics; {"missing": why} without the corpus."""
    from deberta_edu.data.topics import few_labels, load_topics
    from deberta_edu.facts import data_root

    key = (str(data_root()), settings["per_class"], settings["draws"])
    if key not in _TOPICS:
        _TOPICS[key] = _read_topics(settings, few_labels, load_topics)
    return _TOPICS[key]


def _read_topics(settings, few_labels, load_topics) -> dict:
    try:
        docs = load_topics()
        draws = [few_labels(docs["train"], settings["per_class"], seed) for seed in range(settings["draws"])]
    except (FileNotFoundError, ValueError) as err:
        return {"missing": str(err)}
    return {"draws": [([d.text for d in draw], [d.label for d in draw]) for draw in draws],
            "test": ([d.text for d in docs["test"]], [d.label for d in docs["test"]])}


def topic_probe(model, tokenizer, data: dict, settings: dict, max_length: int) -> dict | None:
    """Test accuracy of the linear probe on frozen document features, for each labelled draw, and their mean."""
    if tokenizer is None or data is None or "missing" in data:
        return None
    encoder = _OnItsDevice(model)
    test_texts, test_y = data["test"]
    test_x = documents.document_features(encoder, tokenizer, test_texts, max_length, settings["max_chunks"])
    accuracies = []
    for texts, y in data["draws"]:
        train_x = documents.document_features(encoder, tokenizer, texts, max_length, settings["max_chunks"])
        accuracies.append(bow.linear_probe(train_x, y, test_x, test_y, classes=max(test_y) + 1))
    return {"accuracy": sum(accuracies) / len(accuracies), "draws": accuracies}


# ----------------------------------------------------------------------------- sentiment


def load_sentiment(sentiment_file: str | None, eval_examples: int | None) -> dict:
    from deberta_edu.data.sentiment import load_splits

    splits = load_splits(Path(sentiment_file) if sentiment_file else None)
    if eval_examples:
        splits = {**splits, "dev": splits["dev"][:eval_examples], "test": splits["test"][:eval_examples]}
    return splits


@torch.no_grad()
def _positive_share(model, examples, tokenizer, max_length: int) -> float:
    """The share of examples the classifier calls positive (0 or 1: a constant classifier)."""
    model.eval()
    device = next(model.parameters()).device
    rows, labels = encode(examples, tokenizer, max_length)
    positive = 0
    for s in range(0, len(rows), 256):
        batch = classification_batch(rows[s:s + 256], labels[s:s + 256])
        logits = model(batch.input_ids.to(device), batch.attention_mask.to(device)).logits
        positive += int((logits.argmax(-1) == 1).sum())
    return positive / max(1, len(rows))


def sentiment(model, tokenizer, splits: dict, settings: dict, seed: int, device: str) -> dict:
    """Fine-tune a copy of the model once (this seed); test and dev accuracy, and whether it is constant."""
    cfg = FinetuneConfig(**settings, seed=seed, device=device, progress=False)
    result = finetune(model, splits, tokenizer, cfg)
    share = _positive_share(result.model, splits["test"], tokenizer, cfg.max_length)
    return {"test": result.test_accuracy, "dev": result.dev_accuracy, "seed": seed, "positive_share": share,
            "constant": share in (0.0, 1.0)}


# ----------------------------------------------------------------------------- baselines


def _random_model(cfg: TrainConfig, vocab_size: int, seed: int, device: str):
    from deberta_edu.model.emd import DebertaForMaskedLM

    torch.manual_seed(seed)
    return DebertaForMaskedLM(cfg.model_config(vocab_size)).to(device).eval()


# long: one baseline after another, each a few lines; split, it would only hide the list
def baselines(configs: dict[str, TrainConfig], tokenizer, scale, splits: dict, topics: dict | None,
              device: str, log=print) -> dict:
    """What the pretrained numbers stand beside: constant answers, word counts, and random weights."""
    vocab = tokenizer.vocab_size if tokenizer is not None else configs["deberta"].vocab_size
    train = splits["train"][: scale.finetune.get("max_train_examples") or None]
    test_y = [e.label for e in splits["test"]]
    out = {"sentiment": {
        "majority": bow.majority(test_y),
        "bag_of_words": bow.naive_bayes([e.text for e in train], [e.label for e in train],
                                               [e.text for e in splits["test"]], test_y),
        "test_examples": len(test_y), "train_examples": len(train)}}
    log(f"[baselines] sentiment: majority {out['sentiment']['majority']:.3f}, bag of words from "
        f"{len(train)} training snippets {out['sentiment']['bag_of_words']:.3f}")  # few at smoke size: it may lose
    if topics is not None and "missing" not in topics:
        test_texts, topic_test_y = topics["test"]
        out["topics"] = {"majority": bow.majority(topic_test_y),
                         "bag_of_words": sum(bow.naive_bayes(t, y, test_texts, topic_test_y)
                                             for t, y in topics["draws"]) / len(topics["draws"]),
                         "test_documents": len(topic_test_y), "per_class": scale.topics["per_class"]}
    elif topics is not None:
        out["topics"] = {"missing": topics["missing"]}
    out["random_init"] = {}
    for v, cfg in configs.items():  # the same architecture from random weights (seed 0), frozen features
        model = _random_model(cfg, vocab, 0, device)
        out["random_init"][v] = {
            "position_probe": position_probe(model, tokenizer, scale.probe),
            "topic_probe": topic_probe(model, tokenizer, topics, scale.topics, cfg.seq_length)}
        shown = {k: "–" if r is None else f"{r['accuracy']:.1%}" for k, r in out["random_init"][v].items()}
        log(f"[baselines] {v} from random weights: position probe {shown['position_probe']}, "
            f"topic probe {shown['topic_probe']}")
    tuned = [sentiment(_random_model(configs["deberta"], vocab, seed, device), tokenizer, splits, scale.finetune,
                       seed, device) for seed in range(scale.random_init_finetunes)]
    out["sentiment"]["random_init"] = tuned
    log(f"[baselines] sentiment from random weights: {[round(t['test'], 3) for t in tuned]}")
    return out
