"""Pack tokenized documents into fixed-length rows, as DeBERTa's own data preparation does.

The official ``prepare_data.py`` tokenizes its input file line by line, concatenates all the tokens
into one stream (no separator between documents) and cuts it into lines of ``max_seq_length - 2`` tokens;
each line becomes ``[CLS] tokens [SEP]``. The official script keeps the last, shorter line; we drop it,
so every row is full and pretraining needs no padding and no attention mask. We keep the rows in a
``.npy`` array opened memory-mapped: a 100 MB corpus is about 25 M tokens, 50 MB as uint16, and a
Dataset reads only the rows a batch asks for.

Masking is not done here: the trainer draws fresh masks every epoch (``deberta_edu.training.masking``).

    python -m deberta_edu.packing build bbc --vocab-size 8000 --max-seq-length 128
    python -m deberta_edu.packing export bbc.tar.xz data/packed/bbc-v8000-L128
    python -m deberta_edu.packing import bbc.tar.xz          # on the offline GPU machine
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from deberta_edu import files
from deberta_edu.data import corpus

from .shards import export_shard, import_shard
from .tokenizer import Tokenizer, check_vocab_size, train_tokenizer

ENCODE_BATCH = 256  # documents per call into SentencePiece


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 holds ids up to 65535, halving the file; bigger vocabularies need int32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def pack(
    documents: Iterable[str],
    tokenizer: Tokenizer,
    max_seq_length: int,
    out_path: str | Path,
    source: str = "",
    progress: bool = True,
) -> Path:
    """Tokenize, concatenate and cut into rows of [CLS] + (max_seq_length - 2) tokens + [SEP].

    Writes ``out_path`` (.npy, shape (rows, max_seq_length)) and a JSON sidecar beside it. The last
    incomplete row's tokens (fewer than max_seq_length - 2) are dropped so that every row is full.
    ``progress=False`` hides the bar (a command's ``--no-progress``).
    """
    check_max_seq_length(max_seq_length)
    out_path = Path(out_path)
    if out_path.suffix != ".npy":
        out_path = out_path.with_name(out_path.name + ".npy")
    docs = list(documents)
    dtype = token_dtype(tokenizer.vocab_size)
    content = max_seq_length - 2

    chunks = []
    with tqdm(total=len(docs), desc=f"tokenizing {out_path.stem}", unit="doc", disable=not progress) as bar:
        for start in range(0, len(docs), ENCODE_BATCH):
            batch = docs[start : start + ENCODE_BATCH]
            chunks += [np.asarray(ids, dtype=dtype) for ids in tokenizer.encode_batch(batch)]
            bar.update(len(batch))
    stream = np.concatenate(chunks) if chunks else np.zeros(0, dtype)  # (tokens,)
    rows = len(stream) // content
    if rows == 0:
        raise ValueError(
            f"{len(docs)} documents give only {len(stream)} tokens, fewer than one row needs "
            f"(max_seq_length - 2 = {content}). Give more text or a smaller max_seq_length."
        )

    packed = np.empty((rows, max_seq_length), dtype=dtype)  # (rows, L)
    packed[:, 0] = tokenizer.cls_id
    packed[:, 1:-1] = stream[: rows * content].reshape(rows, content)  # (rows, L - 2)
    packed[:, -1] = tokenizer.sep_id
    files.save_npy(out_path, packed)  # temp file + rename: never seen half-written
    meta = {
        "source": source,
        "rows": rows,
        "max_seq_length": max_seq_length,
        "vocab_size": tokenizer.vocab_size,
        "dtype": dtype.name,
        "documents": len(docs),
        "tokens": int(len(stream)),
        "dropped_tail_tokens": int(len(stream) - rows * content),
        "tokenizer_sha256": tokenizer.sha256,
    }
    files.write_text(out_path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return out_path


def check_max_seq_length(max_seq_length) -> None:
    if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < 3:
        raise ValueError(
            f"max_seq_length must be at least 3 ([CLS], one token, [SEP]), got {max_seq_length!r}. "
            "DeBERTa pretrains with 512; the course uses 128."
        )


class PackedDataset(Dataset):
    """Rows of a packed .npy file as LongTensors of shape (max_seq_length,), read memory-mapped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"No packed array at {self.path}. Build one with "
                "`python -m deberta_edu.packing build bbc` or build_dataset('bbc')."
            )
        sidecar = self.path.with_suffix(".json")
        self.meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        self._rows: np.ndarray | None = None
        self.shape = self.rows().shape  # (rows, L)

    def rows(self) -> np.ndarray:
        """The memory map, opened lazily so that each DataLoader worker opens its own."""
        if self._rows is None:
            self._rows = np.load(self.path, mmap_mode="r")
        return self._rows

    @property
    def max_seq_length(self) -> int:
        return self.shape[1]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.rows()[i].astype(np.int64))  # (L,)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_rows": None}  # a memory map is reopened, not pickled


def dataset_dir(source: str | Path, vocab_size: int, max_seq_length: int) -> Path:
    return corpus.data_root() / "packed" / f"{corpus.corpus_name(source)}-v{vocab_size}-L{max_seq_length}"


def _is_complete(folder: Path, max_seq_length: int) -> bool:
    """tokenizer.model, and train/val arrays whose sidecars name it and whose headers match the sidecars."""
    model = folder / "tokenizer.model"
    if not model.exists():
        return False
    model_sha = hashlib.sha256(model.read_bytes()).hexdigest()
    return all(_packed_with(folder / f"{split}.npy", model_sha, max_seq_length) for split in ("train", "val"))


def _packed_with(path: Path, tokenizer_sha: str, max_seq_length: int) -> bool:
    """An array and its sidecar, packed by this tokenizer at this length, whose header matches the sidecar."""
    sidecar = path.with_suffix(".json")
    if not path.exists() or not sidecar.exists():
        return False
    try:
        meta = json.loads(sidecar.read_text())
        rows = np.load(path, mmap_mode="r")  # reads the header only
        return meta["tokenizer_sha256"] == tokenizer_sha and meta["max_seq_length"] == max_seq_length and (
            rows.shape == (meta["rows"], max_seq_length) and rows.dtype.name == meta["dtype"])
    except (ValueError, KeyError, TypeError, OSError):  # a damaged sidecar or array: build again
        return False


def build_dataset(
    source: str | Path = "bbc", vocab_size: int = 8000, max_seq_length: int = 128, rebuild: bool = False,
    progress: bool = True,
) -> tuple[Path, Path, Tokenizer]:
    """Train (or reuse) the tokenizer and pack train/val once; later calls return the cached files.

    Everything lands in <data root>/packed/<corpus>-v<vocab>-L<length>/: train.npy, val.npy, their
    sidecars and a copy of tokenizer.model. A complete folder is used as it is, even without the
    corpus (an imported shard on an offline machine); pass rebuild=True after changing the corpus.
    """
    check_vocab_size(vocab_size)
    check_max_seq_length(max_seq_length)
    folder = dataset_dir(source, vocab_size, max_seq_length)
    # One builder per folder: a second process waits, then finds the folder complete and reuses it.
    with files.locked(files.lock_file(folder), f"the dataset {folder.name}"):
        if rebuild or not _is_complete(folder, max_seq_length):
            files.remove_stale_temps(folder)  # left by a killed build; we hold the lock, so no one is writing
            train_docs, val_docs = corpus.load_split(source)
            base = corpus.unweighted(source)  # the tokenizer of 'bbc*8+large' is the one of 'bbc+large'
            tokenizer = train_tokenizer(base, vocab_size, train_docs=train_docs if base == source else None)
            files.copy(tokenizer.path, folder / "tokenizer.model")
            for split, docs in (("train", train_docs), ("val", val_docs)):
                pack(docs, tokenizer, max_seq_length, folder / f"{split}.npy", source=corpus.corpus_name(source),
                     progress=progress)
    return folder / "train.npy", folder / "val.npy", Tokenizer(folder / "tokenizer.model")


def pack_validation(source: str | Path, tokenizer: Tokenizer, max_seq_length: int, folder: Path,
                    progress: bool = True) -> Path:
    """The held-out documents of ``source`` packed with another corpus's tokenizer, beside its arrays.

    A model trained on 'bbc*8+large' is scored on BBC's own held-out documents: ``val-bbc.npy``. The file is
    reused only while its sidecar names this tokenizer and length (a rebuilt tokenizer packs it again).
    """
    path = Path(folder) / f"val-{corpus.corpus_name(source)}.npy"
    with files.locked(files.lock_file(Path(folder)), f"the dataset {Path(folder).name}"):
        if not _packed_with(path, tokenizer.sha256, max_seq_length):
            _, val_docs = corpus.load_split(source)
            pack(val_docs, tokenizer, max_seq_length, path, source=corpus.corpus_name(source), progress=progress)
    return path


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deberta_edu.packing", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="train the tokenizer and pack train/val (cached)")
    p_build.add_argument("source", help="bbc, large, or a .txt/.md file or folder")
    p_build.add_argument("--vocab-size", type=int, default=8000)
    p_build.add_argument("--max-seq-length", type=int, default=128)
    p_build.add_argument("--rebuild", action="store_true")
    p_export = sub.add_parser("export", help="compress packed arrays and tokenizer into one archive")
    p_export.add_argument("out_file")
    p_export.add_argument("paths", nargs="+")
    p_import = sub.add_parser("import", help="unpack an archive (default: into the data root)")
    p_import.add_argument("file")
    p_import.add_argument("dest", nargs="?")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            train, val, tok = build_dataset(args.source, args.vocab_size, args.max_seq_length, args.rebuild)
            for path in (train, val):
                meta = PackedDataset(path).meta
                print(f"{path}: {meta['rows']:,} rows x {meta['max_seq_length']} ({meta['tokens']:,} tokens)")
            print(f"tokenizer: {tok.path} ({tok.vocab_size} pieces)")
        elif args.command == "export":
            export_shard(args.paths, args.out_file)
        else:
            for path in import_shard(args.file, args.dest):
                print(path)
    except (OSError, ValueError) as err:  # OSError: a file that cannot be read or written, named in err
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
