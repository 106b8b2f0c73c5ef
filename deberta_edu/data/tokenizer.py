"""A SentencePiece unigram tokenizer with DeBERTa's special tokens, trained on one of our corpora.

DeBERTa-v2 replaced v1's GPT-2 byte-level BPE with a SentencePiece model of 128K pieces, and v3 kept it;
we train a SentencePiece unigram model, smaller, on the course corpus. The first five ids are fixed:

    [PAD]=0  [CLS]=1  [SEP]=2  [UNK]=3  [MASK]=4

then come 256 byte pieces (``byte_fallback``: any character the vocabulary lacks, Korean for
instance, is spelled as its UTF-8 bytes instead of becoming [UNK]), then the learned pieces.
A piece that begins with "▁" starts a word; whole-word masking uses that.

Trained models are cached under <data root>/tokenizers/, keyed by corpus, vocabulary size and a
hash of the training text and options, so the same call never trains twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import sentencepiece as spm
import torch

from deberta_edu import files
from deberta_edu.data import corpus
from deberta_edu.facts import shown_path

SPECIAL_PIECES = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")
WORD_START = "▁"  # U+2581, SentencePiece's mark for "a space came before this piece"

# fmt: off
TRAINER_OPTIONS = dict(
    model_type="unigram",
    character_coverage=0.9995,  # rarer characters fall back to bytes
    byte_fallback=True,
    pad_id=0, pad_piece="[PAD]",
    bos_id=1, bos_piece="[CLS]",
    eos_id=2, eos_piece="[SEP]",
    unk_id=3, unk_piece="[UNK]",
    user_defined_symbols=["[MASK]"],  # next free id: 4; "[MASK]" typed in text encodes to it
    input_sentence_size=1_000_000,  # sample at most this many lines: bounds time and memory
    shuffle_input_sentence=True,
    max_sentence_length=8192,  # bytes; longer lines are skipped by the trainer
)
# fmt: on


class Tokenizer:
    """Text <-> ids with a trained SentencePiece model whose first five ids are DeBERTa's specials."""

    pad_id, cls_id, sep_id, unk_id, mask_id = range(5)
    special_ids = (0, 1, 2, 3, 4)

    def __init__(self, model_path: str | Path):
        self.path = Path(model_path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"No tokenizer model at {self.path}. Train one with train_tokenizer('bbc', vocab_size=8000)."
            )
        self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        pieces = tuple(self.sp.id_to_piece(i) for i in self.special_ids)
        if pieces != SPECIAL_PIECES:
            raise ValueError(
                f"{self.path} has special pieces {pieces} at ids 0-4, expected {SPECIAL_PIECES}. "
                "It was not trained by train_tokenizer(); train one with it."
            )
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer({self.path.name}, vocab_size={self.vocab_size})"

    def encode(self, text: str) -> list[int]:
        """Content ids only: [CLS] and [SEP] are added when sequences are packed."""
        return self.sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, num_threads=os.cpu_count() or 1)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids, without [PAD]/[CLS]/[SEP]/[UNK]; [MASK] shows as "[MASK]"."""
        hidden = (self.pad_id, self.cls_id, self.sep_id, self.unk_id)
        return self.sp.decode([int(i) for i in ids if int(i) not in hidden])

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def word_start_mask(self) -> torch.BoolTensor:
        """(vocab_size,) True where a piece begins a word ("▁..."); specials and bytes are False."""
        starts = [self.sp.id_to_piece(i).startswith(WORD_START) for i in range(self.vocab_size)]
        return torch.tensor(starts, dtype=torch.bool)


def load_tokenizer(path: str | Path) -> Tokenizer:
    return Tokenizer(path)


def training_lines(docs: Iterable[str], max_chars: int = 2000) -> Iterator[str]:
    """The trainer's 'sentences': paragraphs, with long ones (a whole speech) cut at sentence ends."""
    for doc in docs:
        for line in doc.split("\n"):
            if len(line) <= max_chars:
                yield line
                continue
            chunk = ""
            for sentence in re.split(r"(?<=[.!?])\s+", line):
                if chunk and len(chunk) + len(sentence) >= max_chars:
                    yield chunk
                    chunk = ""
                chunk = f"{chunk} {sentence}" if chunk else sentence
            if chunk:
                yield chunk


MIN_VOCAB = len(SPECIAL_PIECES) + 256 + 1  # the specials, the 256 byte pieces, and at least one learned piece


def check_vocab_size(vocab_size) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB:
        raise ValueError(
            f"vocab_size must be a whole number >= {MIN_VOCAB} ({len(SPECIAL_PIECES)} special pieces, 256 byte "
            f"pieces and at least one learned piece), got {vocab_size!r}; the course uses 8000"
        )


def train_tokenizer(
    source: str | Path = "bbc", vocab_size: int = 8000, val_fraction: float = 0.05,
    train_docs: list[str] | None = None,
) -> Tokenizer:
    """Train (or load from the cache) a unigram tokenizer on the training split of a corpus.

    ``train_docs``: that split, when the caller has already loaded it (packing does), so it is read once.
    Two processes asking for the same tokenizer at once train it once: the second waits, then loads it.
    """
    check_vocab_size(vocab_size)
    if train_docs is None:
        train_docs, _ = corpus.load_split(source, val_fraction)
    lines = list(training_lines(train_docs))
    if not any(line.strip() for line in lines):
        raise ValueError(f"{source} has no training text: its training split holds {len(train_docs)} documents "
                         "and no non-empty line. Give a corpus with text in it.")
    options = dict(TRAINER_OPTIONS, vocab_size=vocab_size)
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for line in lines:
        digest.update(line.encode() + b"\n")
    name = f"{corpus.corpus_name(source)}-v{vocab_size}-{digest.hexdigest()[:12]}.model"
    path = corpus.data_root() / "tokenizers" / name
    with files.locked(path.with_name(f".{path.stem}.lock"), f"the tokenizer {name}"):
        if not path.exists():
            for stale in path.parent.glob(f".{path.stem}.*"):  # left by a killed trainer (we hold the lock)
                if not stale.name.endswith(".lock"):
                    stale.unlink(missing_ok=True)
            _train(lines, options, path, source)
    return Tokenizer(path)


def _train(lines: list[str], options: dict, path: Path, source) -> None:
    """SentencePiece writes <prefix>.model and .vocab; a hidden prefix, renamed once both are whole."""
    tmp_prefix = path.with_name(f".{path.stem}.{os.getpid()}")
    vocab_size = options["vocab_size"]
    print(
        f"training a {vocab_size}-piece unigram tokenizer on {len(lines):,} lines "
        f"of {corpus.corpus_name(source)}..."
    )
    start = time.time()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_prefix=str(tmp_prefix),
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
            **options,
        )
    except RuntimeError as err:
        for suffix in (".model", ".vocab"):
            Path(f"{tmp_prefix}{suffix}").unlink(missing_ok=True)
        raise _explained(err, vocab_size, source) from err
    os.replace(f"{tmp_prefix}.vocab", path.with_suffix(".vocab"))
    os.replace(f"{tmp_prefix}.model", path)  # last: the .model's existence means "trained"
    print(f"tokenizer trained in {time.time() - start:.1f} s: {shown_path(path)}")  # data/tokenizers/... on a page


def _explained(err: RuntimeError, vocab_size: int, source) -> ValueError:
    """SentencePiece's RuntimeError ('INTERNAL: src/...cc(638) [...]') as a sentence about this corpus."""
    text = str(err)
    if re.search(r"Vocabulary size (is )?too high", text):
        return ValueError(
            f"vocab_size={vocab_size} is more than this corpus can fill ({text.strip()}). "
            "Use a smaller vocab_size or more text."
        )
    needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", text)
    if needed:
        return ValueError(
            f"vocab_size={vocab_size} is too small for {source}: its characters, the byte pieces and the "
            f"specials alone need {needed[1]} pieces. Use vocab_size >= {needed[1]} (the course uses 8000)."
        )
    return ValueError(f"SentencePiece could not train a tokenizer on {source}: {text.strip()}")
