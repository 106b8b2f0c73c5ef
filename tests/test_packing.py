"""Packing into [CLS] ... [SEP] rows, the memory-mapped Dataset, the build cache and shards."""

import json
import pickle
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from deberta_edu import facts
from deberta_edu.data import corpus, packing
from deberta_edu.data.packing import PackedDataset, build_dataset, export_shard, import_shard, pack
from deberta_edu.data.tokenizer import train_tokenizer

WORDS = (
    "the model learns to predict masked words from context while attention mixes content and position".split()
)


def write_corpus(folder, n_docs=200, seed=0):
    rng = random.Random(seed)
    docs = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))).capitalize() + "."
        for _ in range(n_docs)
    ]
    path = folder / "corpus.txt"
    path.write_text("\n\n".join(docs))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pack")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(facts.DATA_ENV, str(folder / "data"))
        source = write_corpus(folder)
        yield source, train_tokenizer(source, vocab_size=320)


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv(facts.DATA_ENV, str(tmp_path / "data"))
    return tmp_path / "data"


def test_rows_are_cls_content_sep_and_memory_mapped(trained, tmp_path):
    source, tok = trained
    docs = corpus.load_documents(source)
    path = pack(docs, tok, 32, tmp_path / "train.npy", source="test")
    rows = np.load(path, mmap_mode="r")
    stream = np.concatenate([tok.encode(d) for d in docs])
    assert isinstance(rows, np.memmap) and rows.dtype == np.uint16
    assert rows.shape == (len(stream) // 30, 32)
    assert (rows[:, 0] == tok.cls_id).all() and (rows[:, -1] == tok.sep_id).all()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["rows"] == rows.shape[0] and meta["max_seq_length"] == 32 and meta["vocab_size"] == 320
    assert meta["tokenizer_sha256"] == tok.sha256 and meta["source"] == "test"
    assert meta["tokens"] == len(stream) and meta["dropped_tail_tokens"] == len(stream) % 30


def test_content_is_the_concatenated_token_stream(trained, tmp_path):
    source, tok = trained
    docs = corpus.load_documents(source)
    rows = np.load(pack(docs, tok, 17, tmp_path / "x"), mmap_mode="r")  # odd length; suffix added
    stream = np.concatenate([tok.encode(d) for d in docs])
    assert np.array_equal(rows[:, 1:-1].reshape(-1), stream[: rows.shape[0] * 15])
    assert not np.isin(rows[:, 1:-1], [tok.cls_id, tok.sep_id, tok.pad_id]).any()


class BigVocab:
    """A stand-in tokenizer whose ids do not fit in uint16."""

    vocab_size, cls_id, sep_id, sha256 = 70_000, 1, 2, "none"

    def encode_batch(self, texts):
        return [[69_999, 5, 6] * 10 for _ in texts]


def test_big_vocabularies_are_stored_as_int32(tmp_path):
    rows = np.load(pack(["a", "b"], BigVocab(), 8, tmp_path / "big.npy"))
    assert rows.dtype == np.int32 and rows.max() == 69_999


class OneIdPerDocument:
    """A stand-in tokenizer: document "i" is the single token 100 + i."""

    vocab_size, cls_id, sep_id, sha256 = 1000, 1, 2, "none"

    def encode_batch(self, texts):
        return [[100 + int(t)] for t in texts]


def test_no_document_is_lost_between_encoding_batches(tmp_path):
    """600 documents span three batches of 256 into SentencePiece: every one must reach the stream, in order."""
    rows = np.load(pack([str(i) for i in range(600)], OneIdPerDocument(), 12, tmp_path / "many.npy"))
    assert rows.shape == (60, 12)  # 600 tokens, 10 per row
    assert np.array_equal(rows[:, 1:-1].reshape(-1), np.arange(100, 700))


def test_too_little_text_says_how_much_is_needed(trained, tmp_path):
    with pytest.raises(ValueError, match="max_seq_length - 2 = 510"):
        pack(["the model learns"], trained[1], 512, tmp_path / "short.npy")
    with pytest.raises(ValueError, match="at least 3"):
        pack(["the model learns"], trained[1], 2, tmp_path / "short.npy")


def test_dataset_works_with_a_dataloader_and_pickles(trained, tmp_path):
    source, tok = trained
    ds = PackedDataset(pack(corpus.load_documents(source), tok, 32, tmp_path / "train.npy"))
    assert len(ds) == ds.meta["rows"] and ds.max_seq_length == 32
    row = ds[0]
    assert row.dtype == torch.long and row.shape == (32,) and row[0] == tok.cls_id
    batches = list(DataLoader(ds, batch_size=4, shuffle=True, drop_last=True))
    assert len(batches) == len(ds) // 4 and batches[0].shape == (4, 32) and batches[0].dtype == torch.long
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._rows is None and torch.equal(clone[3], ds[3])


def test_missing_array_names_the_build_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="deberta_edu.packing build"):
        PackedDataset(tmp_path / "none.npy")


def test_build_dataset_packs_once_then_reuses(data_root, tmp_path, monkeypatch):
    source = write_corpus(tmp_path)
    train, val, tok = build_dataset(source, vocab_size=320, max_seq_length=32)
    assert train.parent == val.parent == tok.path.parent == packing.dataset_dir(source, 320, 32)
    assert len(PackedDataset(train)) > len(PackedDataset(val)) > 0

    def no_packing(*args, **kwargs):
        raise AssertionError("packed again")

    monkeypatch.setattr(packing, "pack", no_packing)
    assert build_dataset(source, vocab_size=320, max_seq_length=32)[:2] == (train, val)


def test_a_folder_whose_arrays_do_not_match_their_sidecars_or_tokenizer_is_not_complete(trained, tmp_path):
    """build_dataset reuses a folder only when both arrays were packed with its tokenizer.model at this length."""
    source, tok = trained
    folder = tmp_path / "packed"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(tok.path.read_bytes())
    docs = corpus.load_documents(source)
    for split in ("train", "val"):
        pack(docs, tok, 32, folder / f"{split}.npy")
    assert packing._is_complete(folder, 32)
    assert not packing._is_complete(folder, 64)  # another length
    sidecar = folder / "val.json"
    good = sidecar.read_text()
    changes = (("tokenizer_sha256", "0" * 64), ("rows", json.loads(good)["rows"] + 1), ("dtype", "int32"))
    for key, value in changes:
        sidecar.write_text(json.dumps({**json.loads(good), key: value}))
        assert not packing._is_complete(folder, 32), f"a sidecar with another {key} passed as complete"
    sidecar.write_text(good)
    (folder / "tokenizer.model").write_bytes(tok.path.read_bytes() + b"\0")  # another tokenizer in the folder
    assert not packing._is_complete(folder, 32)


def test_rebuild_packs_again(data_root, tmp_path, monkeypatch):
    source = write_corpus(tmp_path)
    build_dataset(source, vocab_size=320, max_seq_length=32)
    packed, real = [], packing.pack
    monkeypatch.setattr(packing, "pack", lambda docs, tok, length, path, **kw: packed.append(path.name) or real(
        docs, tok, length, path, **kw))
    build_dataset(source, vocab_size=320, max_seq_length=32)
    assert packed == []
    build_dataset(source, vocab_size=320, max_seq_length=32, rebuild=True)
    assert packed == ["train.npy", "val.npy"]


def test_a_rebuild_removes_the_temporary_files_a_killed_build_left(data_root, tmp_path):
    """A build killed half-way leaves .train.npy.<pid>.<hex>.tmp behind; the next build clears it (the lock is
    held, and its writer is gone), so a folder does not fill with dead arrays."""
    source = write_corpus(tmp_path)
    train, _, _ = build_dataset(source, vocab_size=320, max_seq_length=32)
    leftover = train.parent / ".train.npy.99999999.abcd1234.tmp"  # no process has that pid
    leftover.write_bytes(b"half an array")
    build_dataset(source, vocab_size=320, max_seq_length=32, rebuild=True)
    assert not leftover.exists()


def test_pack_validation_packs_again_for_another_tokenizer_or_length(data_root, tmp_path, monkeypatch):
    """val-<source>.npy beside a dataset is reused only while it was packed with the same tokenizer and length:
    after a rebuild with a new tokenizer, the held-out ids would otherwise be the old tokenizer's."""
    source = write_corpus(tmp_path)
    train, _, tok = build_dataset(source, vocab_size=320, max_seq_length=32)
    (tmp_path / "b").mkdir()
    other = train_tokenizer(write_corpus(tmp_path / "b", seed=1), vocab_size=300)
    packed, real = [], packing.pack
    monkeypatch.setattr(packing, "pack", lambda docs, t, length, path, **kw: packed.append((t.sha256, length))
                        or real(docs, t, length, path, **kw))
    path = packing.pack_validation(source, tok, 32, train.parent)
    assert packing.pack_validation(source, tok, 32, train.parent) == path and len(packed) == 1  # reused
    packing.pack_validation(source, other, 32, train.parent)
    packing.pack_validation(source, other, 16, train.parent)
    assert packed == [(tok.sha256, 32), (other.sha256, 32), (other.sha256, 16)]
    assert json.loads(path.with_suffix(".json").read_text())["tokenizer_sha256"] == other.sha256


def test_a_weighted_mixture_shares_the_tokenizer_of_the_unweighted_one(data_root, tmp_path):
    """'bbc*3+large' repeats BBC's training rows, not its tokenizer's text: both use the 'bbc+large' tokenizer."""
    docs = write_corpus(tmp_path).read_text().split("\n\n")
    raw = data_root / "bbc" / "raw" / "tech"
    raw.mkdir(parents=True)
    for i, doc in enumerate(docs[:100]):
        (raw / f"{i:03d}.txt").write_text(doc)
    (data_root / "large" / "text").mkdir(parents=True)
    (data_root / "large" / "text" / "part.txt").write_text("\n\n".join(docs[100:]))
    weighted_train, _, weighted_tok = build_dataset("bbc*3+large", vocab_size=320, max_seq_length=32)
    plain_train, _, plain_tok = build_dataset("bbc+large", vocab_size=320, max_seq_length=32)
    assert weighted_tok.sha256 == plain_tok.sha256
    assert len(PackedDataset(weighted_train)) > len(PackedDataset(plain_train))


def test_shard_round_trip(data_root, tmp_path):
    source = write_corpus(tmp_path)
    train, val, tok = build_dataset(source, vocab_size=320, max_seq_length=32)
    shard = export_shard([train, val, tok.path], tmp_path / "shard.tar.xz")
    assert shard.stat().st_size < sum(p.stat().st_size for p in (train, val, tok.path))

    offline = tmp_path / "offline"
    restored = import_shard(shard, offline)
    names = {p.relative_to(offline).as_posix() for p in restored}
    folder = train.parent.relative_to(data_root).as_posix()
    assert names == {
        f"{folder}/{n}" for n in ("train.npy", "train.json", "val.npy", "val.json", "tokenizer.model")
    }
    for p in (train, val, tok.path):
        assert (offline / folder / p.name).read_bytes() == p.read_bytes()

    # on the offline machine the cache is complete: no corpus is needed
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(facts.DATA_ENV, str(offline))
        train2, _, tok2 = build_dataset(source, vocab_size=320, max_seq_length=32)
    assert torch.equal(PackedDataset(train2)[0], PackedDataset(train)[0]) and tok2.sha256 == tok.sha256


def test_export_of_nothing_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="Nothing to export"):
        export_shard([tmp_path / "missing.npy"], tmp_path / "s.tar.xz")
