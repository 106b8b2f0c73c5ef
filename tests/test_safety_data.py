"""Issue 14, the data / model / interop / explorer half: nothing lost, nothing hung, every mistake a clear error.

Each test reproduces one way a careless or hostile input used to lose data, hang, crash from deep inside or be
silently accepted, and checks that it now ends in an error that names the value, the limit and what to do.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

from deberta_edu import DebertaForMaskedLM, DebertaModel, facts, files, make_config
from deberta_edu.data import corpus, packing
from deberta_edu.data.packing import build_dataset, export_shard, import_shard, pack
from deberta_edu.data.tokenizer import train_tokenizer
from deberta_edu.lessons.explorer import explorer_html, maps_html
from deberta_edu.lessons.viz import AttentionMaps
from deberta_edu.model import encoder as encoder_module
from deberta_edu.model.config import ACTIVATION_NAMES, DebertaConfig
from deberta_edu.model.positions import relative_distance_matrix, relative_rows_and_index

ROOT = Path(__file__).resolve().parent.parent
WORDS = "the model learns to predict masked words from context while attention mixes content and position".split()


def write_corpus(folder: Path, n_docs: int = 120, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    docs = [" ".join(rng.choice(WORDS, size=int(rng.integers(20, 50)))).capitalize() + "." for _ in range(n_docs)]
    path = folder / "corpus.txt"
    path.write_text("\n\n".join(docs))
    return path


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv(facts.DATA_ENV, str(tmp_path / "data"))
    return tmp_path / "data"


shutil_usage = namedtuple("usage", "total used free")


def hidden_leftovers(folder: Path) -> list[str]:
    """Temporary files or staging folders a write or an import left behind (lock files are expected)."""
    return sorted(p.name for p in folder.rglob(".*") if not p.name.endswith(".lock"))


# ================================================================ shards: verify before anything lands
def shard(path: Path, manifest, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """A hand-made archive: MANIFEST.json first (as export_shard writes it), then the given members."""
    with tarfile.open(path, "w:xz") as tar:
        body = json.dumps(manifest).encode()
        info = tarfile.TarInfo("MANIFEST.json")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, kind=tarfile.REGTYPE, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A packed dataset and its shard, built once for the shard tests."""
    root = tmp_path_factory.mktemp("shards")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(facts.DATA_ENV, str(root / "data"))
        train, val, tok = build_dataset(write_corpus(root), vocab_size=300, max_seq_length=32)
        archive = export_shard([train.parent], root / "good.tar.xz")
    return train, archive, root / "data"


def test_a_damaged_file_in_a_shard_leaves_the_good_cached_one(built, tmp_path):
    train, archive, data = built
    name = train.relative_to(data).as_posix()
    good = train.read_bytes()
    damaged = bytearray(good)
    damaged[-10:] = b"\xff" * 10  # ids far beyond the vocabulary
    bad = shard(tmp_path / "bad.tar.xz", {name: {"sha256": sha(good), "size": len(good)}},
                [(member(name), bytes(damaged))])
    dest = tmp_path / "dest"
    import_shard(archive, dest)
    with pytest.raises(ValueError, match="does not match its checksum") as err:
        import_shard(bad, dest)
    assert (dest / name).read_bytes() == good, "the good cached file was replaced by the damaged one"
    assert "copy it again. Nothing was imported" in str(err.value)
    assert hidden_leftovers(dest) == []


def test_a_member_the_manifest_does_not_list_is_refused(tmp_path):
    listed = b"listed file"
    archive = shard(tmp_path / "extra.tar.xz", {"packed/a.txt": sha(listed)},
                    [(member("packed/a.txt"), listed), (member("checkpoints/run/model.safetensors"), b"not a model")])
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="'checkpoints/run/model.safetensors', which its MANIFEST.json does not list"):
        import_shard(archive, dest)
    assert not (dest / "checkpoints").exists() and not (dest / "packed").exists()


@pytest.mark.parametrize("name", ["/dev/zero", "../outside.txt", "packed/../../outside.txt", "a\\b", "./x", ""])
def test_manifest_names_are_checked_before_anything_is_opened(tmp_path, name):
    """A 200-byte archive naming /dev/zero used to read until MemoryError; '..' read files outside."""
    archive = shard(tmp_path / "evil.tar.xz", {name: "0" * 64}, [])
    assert archive.stat().st_size < 400
    start = time.time()
    with pytest.raises(ValueError, match="manifest names"):
        import_shard(archive, tmp_path / "dest" / "inner")
    assert time.time() - start < 5
    assert not (tmp_path / "dest" / "outside.txt").exists() and not (tmp_path / "outside.txt").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.DIRTYPE])
def test_links_devices_and_folders_are_refused(tmp_path, kind):
    target = tmp_path / "secret.txt"
    target.write_text("outside")
    info = member("packed/x", kind, linkname=str(target), devmajor=1, devminor=5)
    archive = shard(tmp_path / "link.tar.xz", {"packed/x": sha(b"")}, [(info, None)])
    with pytest.raises(ValueError, match="link, device or folder"):
        import_shard(archive, tmp_path / "dest")
    assert not (tmp_path / "dest" / "packed").exists() and target.read_text() == "outside"


def test_sizes_missing_files_and_broken_archives_say_what_is_wrong(tmp_path):
    data = b"0123456789"
    wrong_size = shard(tmp_path / "size.tar.xz", {"a": {"sha256": sha(data), "size": 3}}, [(member("a"), data)])
    with pytest.raises(ValueError, match="'a' is 10 bytes, its MANIFEST.json says 3"):
        import_shard(wrong_size, tmp_path / "dest")
    missing = shard(tmp_path / "missing.tar.xz", {"a": sha(data), "b": sha(data)}, [(member("a"), data)])
    with pytest.raises(ValueError, match="lacks b, which its MANIFEST.json lists"):
        import_shard(missing, tmp_path / "dest")
    garbage = tmp_path / "garbage.tar.xz"
    garbage.write_bytes(os.urandom(300))
    with pytest.raises(ValueError, match="is not a readable .tar.xz shard"):
        import_shard(garbage, tmp_path / "dest")
    truncated = tmp_path / "truncated.tar.xz"
    truncated.write_bytes(wrong_size.read_bytes()[:60])
    with pytest.raises(ValueError, match="is not a readable .tar.xz shard"):
        import_shard(truncated, tmp_path / "dest")
    with pytest.raises(FileNotFoundError, match="No archive at"):
        import_shard(tmp_path / "nothing.tar.xz", tmp_path / "dest")
    assert not (tmp_path / "dest" / "a").exists()


def test_an_import_never_writes_through_a_link(built, tmp_path):
    _, archive, _ = built
    dest, elsewhere = tmp_path / "dest", tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest.mkdir()
    (dest / "packed").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="is a link; an import never writes through links"):
        import_shard(archive, dest)
    assert list(elsewhere.iterdir()) == []


def test_a_shard_lands_whole_or_not_at_all(tmp_path):
    """Every file is checked before any lands: a good first file must not replace the cached one when a later
    file of the same archive is damaged."""
    dest = tmp_path / "dest"
    (dest / "packed").mkdir(parents=True)
    (dest / "packed" / "a.bin").write_bytes(b"old a")
    (dest / "packed" / "b.bin").write_bytes(b"old b")
    new_a, new_b = b"new a", b"new b"
    archive = shard(tmp_path / "half.tar.xz", {"packed/a.bin": sha(new_a), "packed/b.bin": sha(new_b)},
                    [(member("packed/a.bin"), new_a), (member("packed/b.bin"), b"new B")])
    with pytest.raises(ValueError, match="packed/b.bin does not match its checksum"):
        import_shard(archive, dest)
    assert (dest / "packed" / "a.bin").read_bytes() == b"old a", "a file landed before the archive was checked"
    assert (dest / "packed" / "b.bin").read_bytes() == b"old b"
    assert hidden_leftovers(dest) == []


def test_a_manifest_over_1_mb_is_refused_unread(tmp_path):
    archive = shard(tmp_path / "big.tar.xz", {"a": "0" * 64, "padding": "x" * (1 << 20)}, [])
    with pytest.raises(ValueError, match="does not start with a MANIFEST.json of at most 1 MB"):
        import_shard(archive, tmp_path / "dest")


def test_a_member_twice_is_refused(tmp_path):
    data = b"same bytes"
    archive = shard(tmp_path / "twice.tar.xz", {"a": sha(data)}, [(member("a"), data), (member("a"), data)])
    with pytest.raises(ValueError, match="holds 'a' twice"):
        import_shard(archive, tmp_path / "dest")
    assert not (tmp_path / "dest" / "a").exists()


def test_a_shard_bigger_than_the_free_space_is_refused(tmp_path, monkeypatch):
    from deberta_edu.data import shards

    data = b"x" * 3000
    archive = shard(tmp_path / "fits.tar.xz", {"a": sha(data)}, [(member("a"), data)])
    full = shutil_usage(total=10**9, used=10**9 - 100, free=100)  # 100 bytes free
    monkeypatch.setattr(shards.shutil, "disk_usage", lambda path: full)
    with pytest.raises(ValueError, match="unpacks to 0.0 MB, but .* has 0.0 MB free"):
        import_shard(archive, tmp_path / "dest")
    assert not (tmp_path / "dest" / "a").exists()


def test_export_leaves_hidden_temporary_files_of_a_folder_behind(tmp_path):
    """A killed build leaves `.train.npy.<pid>.<hex>.tmp` inside the folder: it must not travel in a shard."""
    folder = tmp_path / "packed"
    folder.mkdir()
    (folder / "train.npy").write_bytes(b"rows")
    (folder / ".train.npy.12345.abcd1234.tmp").write_bytes(b"half")
    (folder / ".notes").write_text("hidden")
    with tarfile.open(export_shard([folder], tmp_path / "s.tar.xz")) as tar:
        assert tar.getnames() == ["MANIFEST.json", "train.npy"]


def test_export_skips_locks_and_temporary_files(built, tmp_path, monkeypatch):
    """Exporting the packed/ folder of a data root: the build's lock beside each dataset folder, and a killed
    build's temporary inside one, stay behind (the fixture's own archive holds none to skip: its folder has none)."""
    train, archive, data = built
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    monkeypatch.setenv(facts.DATA_ENV, str(copy))
    folder = copy / train.parent.relative_to(data)
    (folder / ".train.npy.99999999.abcd1234.tmp").write_bytes(b"half")
    hidden = [p.name for p in folder.parent.rglob(".*")]  # what there is to skip
    assert any(h.endswith(".lock") for h in hidden) and any(h.endswith(".tmp") for h in hidden), hidden
    with tarfile.open(export_shard([folder.parent], tmp_path / "packed.tar.xz")) as tar:
        names = tar.getnames()
    visible = sorted(p.relative_to(copy).as_posix() for p in folder.parent.rglob("*")
                     if p.is_file() and not p.name.startswith("."))
    assert names[0] == "MANIFEST.json" and sorted(names[1:]) == visible
    assert not any(part.startswith(".") for n in names for part in Path(n).parts)
    manifest = json.loads(tarfile.open(archive).extractfile("MANIFEST.json").read())
    assert manifest[train.relative_to(data).as_posix()] == {"sha256": sha(train.read_bytes()),
                                                             "size": train.stat().st_size}


# ================================================================ atomic writes and locks
def test_a_write_that_fails_halfway_leaves_the_old_file(tmp_path, monkeypatch):
    class Stub:
        vocab_size, cls_id, sep_id, sha256 = 50, 1, 2, "stub"

        def encode_batch(self, texts):
            return [[5, 6, 7, 8] * 10 for _ in texts]

    path = pack(["a", "b"], Stub(), 8, tmp_path / "train.npy")
    good = path.read_bytes()
    real = np.lib.format.write_array

    def torn(fp, array, *args, **kwargs):  # writes half the array, then the process "dies"
        fp.write(array.tobytes()[: array.nbytes // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", torn)
    with pytest.raises(KeyboardInterrupt):
        pack(["a", "b", "c"], Stub(), 8, path)
    monkeypatch.setattr(np.lib.format, "write_array", real)
    assert path.read_bytes() == good, "a half-written array replaced the good one"
    assert hidden_leftovers(tmp_path) == []


def test_stale_temporary_files_of_dead_processes_go_and_live_ones_stay(tmp_path):
    """remove_stale_temps runs without a lock: a temporary file whose writer is still running must survive."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = os.getppid()  # another process that is running now
    live_tmp = tmp_path / f".train.npy.{alive}.abcd1234.tmp"
    dead_tmp = tmp_path / f".train.npy.{dead.pid}.abcd1234.tmp"
    for path in (live_tmp, dead_tmp):
        path.write_bytes(b"half")
    (tmp_path / "train.npy").write_bytes(b"kept")
    assert files.remove_stale_temps(tmp_path) == 1
    assert live_tmp.exists() and not dead_tmp.exists() and (tmp_path / "train.npy").exists()


def test_a_write_that_fails_leaves_neither_the_file_nor_its_temporary(tmp_path):
    """An error inside atomic_write's block: the target is not created (or keeps its old bytes) and the
    temporary file goes too, so a failed write leaves nothing behind to mistake for data."""
    for before in (None, b"old"):
        path = tmp_path / f"x-{before}.bin"
        if before:
            path.write_bytes(before)
        with pytest.raises(RuntimeError, match="half way"):
            with files.atomic_write(path) as f:
                f.write(b"half")
                raise RuntimeError("half way")
        assert (path.read_bytes() if path.exists() else None) == before
        assert not list(tmp_path.glob(f".{path.name}*"))


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        files.write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640


BUILD = """
import sys
from deberta_edu.data.packing import PackedDataset, build_dataset
train, val, tok = build_dataset(sys.argv[1], vocab_size=300, max_seq_length=32)
print("rows", len(PackedDataset(train)), len(PackedDataset(val)), tok.sha256)
"""


def _builder(source: Path, root: Path) -> subprocess.Popen:
    env = {**os.environ, facts.DATA_ENV: str(root), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", BUILD, str(source)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_builds_at_once_on_a_fresh_data_root(tmp_path):
    """Two `packing build` at once used to crash on a half-copied tokenizer.model or a half-written .npy."""
    source, root = write_corpus(tmp_path, n_docs=300), tmp_path / "data"
    procs = [_builder(source, root) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    assert outs[0][0].splitlines()[-1] == outs[1][0].splitlines()[-1]  # the same rows, the same tokenizer
    trained = sum(out.count("training a 300-piece") for out, _ in outs)
    assert trained == 1, f"the tokenizer was trained {trained} times: the second build did not wait for the first"
    assert hidden_leftovers(root) == []


def test_a_build_waits_for_the_lock_holder(tmp_path, monkeypatch):
    source, root = write_corpus(tmp_path), tmp_path / "data"
    monkeypatch.setenv(facts.DATA_ENV, str(root))
    folder = packing.dataset_dir(source, 300, 32)
    with files.locked(files.lock_file(folder), "a test"):
        proc = _builder(source, root)
        said = proc.stderr.readline()  # the first thing the build says: that it waits (it blocks until we let go)
        assert "waiting for another process that is building the dataset" in said, said
        time.sleep(1)
        assert proc.poll() is None and not (folder / "train.npy").exists(), "the build did not wait for the lock"
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0 and out.splitlines()[-1].startswith("rows"), err[-2000:]


# ================================================================ data CLIs: one line, the value, what to do
def _cli_error(main, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    message = str(exc.value.code)
    assert exc.value.code not in (0, None) and message.startswith("error: ")
    assert "Traceback" not in message
    return message


def test_an_empty_file_is_an_error_not_zero_documents(data_root, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    message = _cli_error(corpus.main, ["prepare", str(empty), "--out", str(tmp_path / "out")])
    assert "gives 0 documents" in message and "at least 20 characters" in message
    assert not (tmp_path / "out" / "info.json").exists()
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hi\n\nok\n")  # documents, all below the minimum
    assert "gives 0 documents" in _cli_error(packing.main, ["build", str(tiny), "--vocab-size", "300"])


@pytest.mark.parametrize("blob", [bytes(range(256)) * 40, b"\x1f\x8b\x08\x00" + bytes(4000), b"%PDF\x00\x01" * 500])
def test_a_binary_file_is_not_text(data_root, tmp_path, blob):
    binary = tmp_path / "model.bin"
    binary.write_bytes(blob)
    for main, argv in ((corpus.main, ["prepare", str(binary)]), (corpus.main, ["info", str(binary)]),
                       (packing.main, ["build", str(binary), "--vocab-size", "300"])):
        assert "does not look like text" in _cli_error(main, argv)
    assert not (data_root / "tokenizers").exists(), "a tokenizer was trained on noise"


def test_one_nul_byte_makes_a_file_binary(tmp_path):
    path = tmp_path / "almost.txt"
    path.write_bytes(b"A long line of perfectly ordinary English text. " * 40 + b"\x00" + b"More text here.\n")
    with pytest.raises(ValueError, match="does not look like text"):
        corpus.load_documents(path)


def test_a_large_utf8_file_cut_inside_a_character_is_still_text(tmp_path):
    """Only the first 64 KiB are looked at; the cut may fall inside a three-byte Japanese character."""
    raw = ("日本語の文章です。モデルは文脈から隠された単語を予測します。" * 3000).encode()
    with pytest.raises(UnicodeDecodeError):
        raw[:65536].decode("utf-8")  # the sample ends mid-character
    path = tmp_path / "japanese.txt"
    path.write_bytes(raw)
    assert corpus.load_documents(path) == [raw.decode()]


def test_text_with_a_stray_byte_is_still_text(tmp_path):
    path = tmp_path / "bbc.txt"
    path.write_bytes(b"Prices rose by \xa35 in the shops of the town.\n\nAnother document, long enough.\n")
    assert len(corpus.load_documents(path)) == 2  # one BBC article has a bare 0xA3 (cp1252 pound sign)


@pytest.mark.parametrize("vocab,match", [("0", "vocab_size must be a whole number >= 262"),
                                         ("-5", "got -5"), ("100", "got 100; the course uses 8000")])
def test_a_vocabulary_size_out_of_range(data_root, tmp_path, monkeypatch, vocab, match):
    monkeypatch.setattr(corpus, "load_split", lambda *a, **k: pytest.fail("read the corpus before checking"))
    assert match in _cli_error(packing.main, ["build", str(write_corpus(tmp_path)), "--vocab-size", vocab])


def test_a_vocabulary_smaller_than_the_characters_says_how_many(data_root, tmp_path):
    with pytest.raises(ValueError, match=r"vocab_size=270 is too small .* Use vocab_size >= \d+"):
        train_tokenizer(write_corpus(tmp_path), vocab_size=270)
    with pytest.raises(ValueError, match="no training text"):
        train_tokenizer("empty", vocab_size=300, train_docs=[])
    assert hidden_leftovers(data_root) == []


@pytest.mark.parametrize("length", ["0", "2", "-1"])
def test_a_sequence_length_out_of_range_is_caught_before_any_work(data_root, tmp_path, monkeypatch, length):
    monkeypatch.setattr(corpus, "load_split", lambda *a, **k: pytest.fail("read the corpus before checking"))
    message = _cli_error(packing.main, ["build", str(write_corpus(tmp_path)), "--max-seq-length", length])
    assert f"max_seq_length must be at least 3 ([CLS], one token, [SEP]), got {length}" in message


# ================================================================ model inputs
V = 60


def tiny(**kw):
    torch.manual_seed(0)
    config = make_config("tiny", vocab_size=V, max_position_embeddings=64, position_buckets=-1,
                         max_relative_positions=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw)
    return DebertaForMaskedLM(config).eval()


IDS = torch.randint(5, V, (2, 10), generator=torch.Generator().manual_seed(0))


def _mask(value):
    mask = torch.ones(2, 10)
    mask[0, 3] = value
    return mask


BAD_INPUTS = {
    "length 0": (dict(input_ids=torch.zeros(2, 0, dtype=torch.long)), ValueError, "length 0"),
    "a list": (dict(input_ids=[[5, 6, 7]]), TypeError, "must be a torch tensor.*got an object of type list"),
    "a numpy array": (dict(input_ids=np.array([[5, 6, 7]])), TypeError, "type ndarray.*torch.as_tensor"),
    "a list with labels": (dict(input_ids=[[5, 6]], labels=[[5, 6]]), TypeError, "input_ids must be a torch"),
    "mask -1": (dict(input_ids=IDS, attention_mask=_mask(-1)), ValueError, "attention_mask contains -1.0.*only 1"),
    "mask 0.5": (dict(input_ids=IDS, attention_mask=_mask(0.5)), ValueError, "contains 0.5.*not a weight"),
    "mask NaN": (dict(input_ids=IDS, attention_mask=_mask(float("nan"))), ValueError, "contains nan"),
    "mask 2": (dict(input_ids=IDS, attention_mask=_mask(2).long()), ValueError, "contains 2"),
    "mask as a list": (dict(input_ids=IDS, attention_mask=[[1] * 10] * 2), TypeError, "attention_mask must be"),
    "token type 5 of 0": (dict(input_ids=IDS, token_type_ids=torch.full_like(IDS, 5)), ValueError,
                          r"token_type_ids contains 5.*\[0, 0\] \(type_vocab_size=0\)"),
    "token types shape": (dict(input_ids=IDS, token_type_ids=torch.zeros(2, 3, dtype=torch.long)), ValueError,
                          r"token_type_ids has shape \(2, 3\)"),
    "labels out of range": (dict(input_ids=IDS, labels=torch.full_like(IDS, V)), ValueError,
                            rf"labels contains {V}.*\[0, {V - 1}\], or -100"),
    "labels as floats": (dict(input_ids=IDS, labels=IDS.float()), ValueError, "labels must be an integer tensor"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_model_inputs_are_refused_clearly(case):
    kwargs, error, match = BAD_INPUTS[case]
    with pytest.raises(error, match=match):
        tiny()(**kwargs)


def test_token_types_are_checked_against_the_model_table():
    with pytest.raises(ValueError, match=r"token_type_ids contains 2.*\[0, 1\] \(type_vocab_size=2\)"):
        tiny(type_vocab_size=2)(IDS, token_type_ids=torch.full_like(IDS, 2))
    zeros = torch.zeros_like(IDS)
    with torch.no_grad():  # zeros, as tokenizers hand them out, are fine without a type table
        assert torch.equal(tiny()(IDS, token_type_ids=zeros).logits, tiny()(IDS).logits)


@pytest.mark.parametrize("variant,kw", [("deberta", {}), ("bert", {}), ("deberta", {"conv_kernel_size": 3}),
                                        ("no_emd", {})])
def test_a_nan_at_a_padded_position_cannot_reach_the_real_tokens(variant, kw):
    model = tiny(variant=variant, **kw)
    ids = torch.randint(8, V, (2, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[:, 7:] = 0
    padded = ids.clone()
    padded[:, 7:] = 0
    with torch.no_grad():
        reference = model(padded, mask)
        model.deberta.embeddings.word_embeddings.weight[7] = float("nan")  # a token used only at padding
        ids[:, 7:] = 7
        out = model(ids, mask)
    real = out.last_hidden_state[:, :7]
    assert torch.isfinite(real).all(), "a NaN in a padded token's embedding reached the real tokens"
    assert torch.equal(real, reference.last_hidden_state[:, :7])
    assert torch.equal(out.logits[:, :7, 8:], reference.logits[:, :7, 8:])  # column 7 reads the NaN row itself


def test_valid_inputs_give_the_same_numbers_as_a_product_with_the_mask():
    """The padded embedding is now where(keep, x, 0) instead of x * keep: identical for finite x."""
    model = tiny()
    mask = torch.ones_like(IDS)
    mask[1, 6:] = 0
    emb = model.deberta.embeddings
    with torch.no_grad():
        x, _ = emb(IDS, mask.bool())
        product = emb.norm(emb.word_embeddings(IDS)) * mask.unsqueeze(-1)
    assert torch.equal(x, product)


# ================================================================ configs
BAD_CONFIGS = {
    "heads 0": (dict(num_attention_heads=0), ValueError, "num_attention_heads must be >= 1, got 0"),
    "heads -2": (dict(num_attention_heads=-2), ValueError, "num_attention_heads must be >= 1, got -2"),
    "hidden 0": (dict(hidden_size=0), ValueError, "hidden_size must be >= 1, got 0"),
    "layers 0 (EMD)": (dict(num_hidden_layers=0), ValueError, "num_hidden_layers must be >= 1.*EMD re-applies"),
    "layers 0 (no EMD)": (dict(num_hidden_layers=0, emd=False), ValueError, "num_hidden_layers must be >= 1"),
    "vocab 0": (dict(vocab_size=0), ValueError, "vocab_size must be >= 1, got 0"),
    "size as a string": (dict(hidden_size="128"), TypeError, "hidden_size must be a whole number, got '128'.*=256"),
    "size as a float": (dict(intermediate_size=512.0), TypeError, "intermediate_size must be a whole number"),
    "size as a bool": (dict(num_hidden_layers=True), TypeError, "num_hidden_layers must be a whole number"),
    "even conv kernel": (dict(conv_kernel_size=2), ValueError, "conv_kernel_size must be odd.*use 3"),
    "conv groups": (dict(conv_kernel_size=3, conv_groups=3), ValueError, "multiple of conv_groups"),
    "no absolute table": (dict(max_position_embeddings=0), ValueError, "max_position_embeddings must be >= 1, got 0"),
    "pad beyond vocab": (dict(pad_token_id=60), ValueError, "pad_token_id=60 must be a token id, below vocab_size"),
    "negative types": (dict(type_vocab_size=-1), ValueError, "type_vocab_size must be >= 0"),
    "dropout 1.5": (dict(hidden_dropout_prob=1.5), ValueError, "hidden_dropout_prob must be a probability"),
    "one bucket": (dict(position_buckets=1), ValueError, "position_buckets must be >= 2"),
    "unknown activation": (dict(hidden_act="swish"), ValueError, "unknown hidden_act 'swish'"),
    "zero epsilon": (dict(layer_norm_eps=0), ValueError, "layer_norm_eps must be a positive number"),
    "dropout 1": (dict(attention_probs_dropout_prob=1.0), ValueError, "attention_probs_dropout_prob must be a prob"),
    "heads do not divide": (dict(hidden_size=30, num_attention_heads=4), ValueError,
                            r"hidden_size \(30\) must be a multiple of num_attention_heads \(4\)"),
    "unknown term": (dict(terms=("c2c", "p2q")), ValueError, r"unknown attention term\(s\) \['p2q'\]"),
    "no term": (dict(terms=()), ValueError, "at least one attention term"),
    "positions without the table": (dict(relative_attention=False), ValueError, "need relative_attention=True"),
    "v1 with shared keys": (dict(layout="v1", share_att_key=True), ValueError, "share_att_key is a v2/v3 feature"),
    "unknown layout": (dict(layout="v3"), ValueError, "layout must be 'v1' or 'v2', got 'v3'"),
    "unknown head layout": (dict(head_layout="cls"), ValueError, "head_layout must be 'official' or 'legacy'"),
    "buckets at the edge": (dict(position_buckets=14, max_relative_positions=8), ValueError,
                            r"max_relative_positions \(here 8\) must exceed 8"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_configs_are_refused_when_made(case):
    kwargs, error, match = BAD_CONFIGS[case]
    base = dict(vocab_size=V, position_buckets=-1, max_relative_positions=8)
    with pytest.raises(error, match=match):
        DebertaConfig(**{**base, **kwargs})


@pytest.mark.parametrize("k", [0, -1])
def test_a_maximum_distance_below_one_means_the_absolute_table(k):
    """As in transformers (max_relative_positions < 1): k is then max_position_embeddings."""
    config = DebertaConfig(vocab_size=V, max_position_embeddings=64, position_buckets=-1, max_relative_positions=k)
    assert config.max_relative_positions == 64


def test_an_unknown_size_or_variant_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown variant 'deberta-v3'; choose from \['bert', 'deberta'"):
        make_config("tiny", variant="deberta-v3")
    with pytest.raises(ValueError, match=r"unknown size 'huge'; choose from \['base', 'mini', 'small', 'tiny'\]"):
        make_config("huge")


def test_the_config_knows_the_encoders_activations():
    assert set(ACTIVATION_NAMES) == set(encoder_module.ACTIVATIONS)


@pytest.mark.parametrize("k", [0, -1, -5])
def test_the_vectorised_delta_rejects_k_like_the_scalar_one(k):
    with pytest.raises(ValueError, match=f"k must be >= 1, got k={k}"):
        relative_distance_matrix(4, k=k)
    with pytest.raises(ValueError, match=f"got k={k}"):
        relative_rows_and_index(4, k=k)
    with pytest.raises(ValueError, match="at least one token"):
        relative_rows_and_index(0, k=4)


# ================================================================ interop
try:
    import transformers
except ImportError:  # the interop tests need transformers; the rest of this file does not
    transformers = None
needs_transformers = pytest.mark.skipif(transformers is None, reason="transformers is not installed")

HF_V2 = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             relative_attention=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
             max_relative_positions=-1, max_position_embeddings=128, position_buckets=32)


def _bert():
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64)
    return transformers.BertModel(config)


@needs_transformers
def test_from_hf_of_something_that_is_not_a_deberta(tmp_path):
    from deberta_edu import from_hf

    with pytest.raises(ValueError, match="describes a 'bert' model, not a DeBERTa"):
        from_hf(_bert())
    _bert().save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="config.json describes a 'bert' model"):
        from_hf(tmp_path / "bert")
    with pytest.raises(TypeError, match="takes a transformers DeBERTa model or the directory"):
        from_hf(42)


def _saved(model, folder: Path, **config_changes) -> Path:
    model.save_pretrained(folder)
    if config_changes:
        config = json.loads((folder / "config.json").read_text())
        for key, value in config_changes.items():
            if value is None:
                del config[key]
            else:
                config[key] = value
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@needs_transformers
def test_a_config_json_missing_keys_or_not_json(tmp_path):
    from deberta_edu import from_hf

    model = transformers.DebertaV2Model(transformers.DebertaV2Config(**HF_V2))
    with pytest.raises(ValueError, match="config.json lacks vocab_size, hidden_size; a DeBERTa config needs"):
        from_hf(_saved(model, tmp_path / "a", vocab_size=None, hidden_size=None))
    folder = _saved(model, tmp_path / "b")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        from_hf(folder)


@needs_transformers
def test_a_config_claiming_many_layers_is_refused_before_any_is_built(tmp_path):
    from deberta_edu import from_hf

    model = transformers.DebertaV2Model(transformers.DebertaV2Config(**HF_V2))
    start = time.time()
    with pytest.raises(ValueError, match="num_hidden_layers=100000, but its weights hold 2 layers"):
        from_hf(_saved(model, tmp_path / "a", num_hidden_layers=100_000))
    with pytest.raises(ValueError, match=r"intermediate.dense.weight: shape \(64, 32\), expected \(1000000000, 32\)"):
        from_hf(_saved(model, tmp_path / "b", intermediate_size=10**9))
    assert time.time() - start < 20


@needs_transformers
def test_a_config_claiming_fewer_layers_than_its_weights_is_refused(tmp_path):
    """Not silently the first layers only: the config and the weights do not belong together."""
    from deberta_edu import from_hf

    model = transformers.DebertaV2Model(transformers.DebertaV2Config(**HF_V2))
    with pytest.raises(ValueError, match="num_hidden_layers=1, but its weights hold 2 layers"):
        from_hf(_saved(model, tmp_path / "a", num_hidden_layers=1))


@needs_transformers
def test_the_emd_is_refused_where_the_checkpoint_cannot_feed_it():
    from deberta_edu import from_hf

    mlm = transformers.DebertaV2ForMaskedLM(transformers.DebertaV2Config(**HF_V2))  # no absolute table
    with pytest.raises(ValueError, match="emd=True needs the absolute position table"):
        from_hf(mlm, emd=True)
    with pytest.raises(ValueError, match="the EMD belongs to a masked-LM model"):
        from_hf(transformers.DebertaV2Model(transformers.DebertaV2Config(**HF_V2)), emd=True)


@needs_transformers
@pytest.mark.parametrize("change,match", [
    (dict(talking_head=True), "talking-head attention"),
    (dict(embedding_size=16), "embedding_size 16 != hidden_size 32"),
])
def test_a_transformers_option_we_do_not_implement_is_refused(change, match):
    from deberta_edu.model.interop import config_from_hf

    with pytest.raises(ValueError, match=match):
        config_from_hf({**HF_V2, "model_type": "deberta-v2", **change})


@needs_transformers
@pytest.mark.parametrize("terms,match", [(("c2c", "c2p", "p2c", "p2p"), "transformers has no p2p term"),
                                         (("c2p", "p2c"), "transformers always computes c2c")])
def test_export_refuses_terms_transformers_would_not_compute(terms, match):
    from deberta_edu import to_hf

    model = DebertaModel(make_config("tiny", vocab_size=V, max_position_embeddings=64, position_buckets=-1,
                                     max_relative_positions=8, terms=terms, emd=False))
    with pytest.raises(ValueError, match=match):
        to_hf(model)


@needs_transformers
@pytest.mark.parametrize("head", ["DebertaV2ForSequenceClassification", "DebertaV2ForTokenClassification"])
@pytest.mark.parametrize("saved", [True, False], ids=["directory", "object"])
def test_a_checkpoint_with_another_head_gives_its_encoder_and_says_so(tmp_path, head, saved):
    """A sequence-classification or replaced-token-detection save used to fail with "no 'embeddings...'"."""
    from deberta_edu import from_hf

    torch.manual_seed(0)
    hf = getattr(transformers, head)(transformers.DebertaV2Config(**HF_V2)).eval()
    source = _saved(hf, tmp_path / "ckpt") if saved else hf
    with pytest.warns(UserWarning, match=f"{head}.*has no MLM head: loaded its encoder .* left out classifier"):
        ours = from_hf(source)
    assert type(ours) is DebertaModel
    ids = torch.randint(5, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(ids).last_hidden_state, hf.deberta(ids).last_hidden_state,
                                   atol=1e-5, rtol=0)


@needs_transformers
def test_a_directory_without_encoder_weights_names_what_it_holds(tmp_path):
    from deberta_edu import from_hf

    folder = _saved(transformers.DebertaV2Model(transformers.DebertaV2Config(**HF_V2)), tmp_path / "a")
    from safetensors.torch import save_file

    save_file({"classifier.weight": torch.zeros(2, 32)}, folder / "model.safetensors")
    with pytest.raises(ValueError, match="holds no DeBERTa encoder.*groups: classifier"):
        from_hf(folder)


# ================================================================ the explorer
def _explorer_model(vocab_size=40):
    torch.manual_seed(0)
    return DebertaModel(make_config("tiny", vocab_size=vocab_size, position_buckets=-1, max_relative_positions=4))


def _data(page: str) -> str:
    return page.split('type="application/json">', 1)[1].split("</script>", 1)[0]


def test_an_html_comment_opener_in_the_text_cannot_blank_the_page():
    """'<!--' then '<script' inside a <script> element keeps the parser from seeing its '</script>'."""
    tokens = ["<!--", "<script>", "a", "</script>", "&amp;", "\u2028"]
    page = explorer_html(_explorer_model(), torch.randint(5, 40, (6,)), tokens, title="<!-- <script",
                         note="x <!-- y <script> z")
    data = _data(page)
    assert "<" not in data and ">" not in data and "&" not in data
    loaded = json.loads(data)
    assert loaded["tokens"] == tokens and loaded["title"] == "<!-- <script" and loaded["note"] == "x <!-- y <script> z"


def test_non_finite_weights_or_maps_are_refused_with_a_reason():
    model = _explorer_model()
    with torch.no_grad():
        model.encoder.layers[1].attention.query_proj.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite weights .* 'encoder.layers.1.attention.query_proj.weight'"):
        explorer_html(model, torch.randint(5, 40, (5,)))
    maps = np.zeros((2, 3, 2, 4, 4))
    maps[1, 2, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="hold NaN or inf .*layer 1, probs, head 0"):
        maps_html(AttentionMaps(list("abcd"), ("c2c", "sum", "probs"), maps))



def test_config_from_hf_keeps_the_checkpoints_pad_token_id():
    """A checkpoint's pad_token_id carries over: it is the word embedding's padding_idx (a row training leaves
    alone) and goes back out with to_hf, so a model padding with 3 would otherwise train and export id 0 instead."""
    from deberta_edu.model.interop import config_from_hf

    assert config_from_hf({**HF_V2, "model_type": "deberta-v2", "pad_token_id": 3}).pad_token_id == 3
    assert config_from_hf({**HF_V2, "model_type": "deberta-v2"}).pad_token_id == 0  # the default when absent
