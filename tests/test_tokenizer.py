"""The SentencePiece tokenizer: exact special ids, round trips, byte fallback, word starts, caching."""

import random

import pytest
import sentencepiece as spm
import torch

from deberta_edu import facts
from deberta_edu.data import tokenizer
from deberta_edu.data.tokenizer import Tokenizer, load_tokenizer, train_tokenizer

WORDS = (
    "the a model learns to predict masked words from their context while attention mixes content and "
    "position relative distance matters for every token in each sentence of news about markets sport "
    "music film politics technology people said year government company"
).split()
SYLLABLES = "ka lo mi ne ru sa ti vo ber tan gel pom rix dul sen"
RARE = ["".join(random.Random(i).choices(SYLLABLES.split(), k=3)) for i in range(300)]  # made-up words


def write_corpus(folder, n_docs=200, seed=0):
    rng = random.Random(seed)

    def sentence():
        words = [rng.choice(WORDS if rng.random() < 0.7 else RARE) for _ in range(rng.randint(6, 14))]
        return " ".join(words).capitalize() + "."

    docs = [" ".join(sentence() for _ in range(4)) for _ in range(n_docs)]
    path = folder / "corpus.txt"
    path.write_text("\n\n".join(docs))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(facts.DATA_ENV, str(folder / "data"))
        source = write_corpus(folder)
        yield source, train_tokenizer(source, vocab_size=400)


@pytest.fixture
def tok(trained):
    return trained[1]


def test_special_ids_are_exact(tok):
    assert [tok.id_to_piece(i) for i in range(5)] == ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    assert (tok.pad_id, tok.cls_id, tok.sep_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tuple(tok.special_ids) == (0, 1, 2, 3, 4)
    assert tok.vocab_size == len(tok) == 400


def test_english_round_trip(tok):
    text = "The model said every token matters for attention."
    ids = tok.encode(text)
    assert all(isinstance(i, int) for i in ids) and tok.unk_id not in ids
    assert not set(ids) & {tok.cls_id, tok.sep_id, tok.pad_id}
    assert tok.decode(ids) == text


def test_korean_falls_back_to_bytes_without_unk(tok):
    text = "안녕하세요, 세계! 디버타는 재미있어요."
    ids = tok.encode(text)
    assert tok.unk_id not in ids
    assert any(tok.id_to_piece(i).startswith("<0x") for i in ids)
    assert tok.decode(ids) == text


def test_decode_hides_specials_but_shows_mask(tok):
    ids = [tok.cls_id] + tok.encode("the model") + [tok.mask_id] + [tok.sep_id, tok.pad_id, tok.pad_id]
    assert tok.decode(ids) == "the model[MASK]"
    assert tok.decode(torch.tensor(ids)) == "the model[MASK]"


def test_decode_hides_unk(tok):
    ids = tok.encode("the model") + [tok.unk_id] + tok.encode(" learns")
    assert tok.decode(ids) == tok.decode(tok.encode("the model") + tok.encode(" learns"))
    assert "model" in tok.decode(ids) and "learns" in tok.decode(ids)  # the words stay; only [UNK] is hidden
    assert "\u2047" not in tok.decode(ids)  # SentencePiece would show [UNK] as " ⁇ "


def test_mask_typed_in_text_is_the_mask_id(tok):
    assert tok.mask_id in tok.encode("the [MASK] learns")


def test_word_start_mask(tok):
    mask = tok.word_start_mask()
    assert mask.dtype == torch.bool and mask.shape == (tok.vocab_size,)
    assert not mask[list(tok.special_ids)].any()
    assert all(bool(mask[i]) == tok.id_to_piece(i).startswith("▁") for i in range(tok.vocab_size))
    ids = tok.encode("attention mixes content and position")
    assert int(mask[ids].sum()) == 5  # one start per word


def test_training_is_cached(trained, monkeypatch):
    source, tok = trained
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(facts.DATA_ENV, str(tok.path.parent.parent))

        def no_training(**kwargs):
            raise AssertionError("trained again")

        mp.setattr(spm.SentencePieceTrainer, "train", no_training)
        again = train_tokenizer(source, vocab_size=400)
    assert again.path == tok.path and again.sha256 == tok.sha256
    assert load_tokenizer(tok.path).encode("the model") == tok.encode("the model")


def test_a_changed_corpus_at_the_same_path_trains_a_new_tokenizer(tmp_path, monkeypatch):
    """The cache key holds the training text: editing a local corpus in place must not reuse the old model."""
    monkeypatch.setenv(facts.DATA_ENV, str(tmp_path / "data"))
    source = write_corpus(tmp_path, n_docs=120, seed=1)
    first = train_tokenizer(source, vocab_size=400)
    source.write_text(source.read_text().replace("model", "network").replace("attention", "gating"))
    second = train_tokenizer(source, vocab_size=400)
    assert second.path != first.path and second.sha256 != first.sha256
    assert first.path.exists()  # the old model stays: it may be what a packed folder was built with


def test_too_large_vocab_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(facts.DATA_ENV, str(tmp_path / "data"))
    source = write_corpus(tmp_path, n_docs=20)
    with pytest.raises(ValueError, match="smaller vocab_size"):
        train_tokenizer(source, vocab_size=50_000)


def test_foreign_model_is_rejected(tmp_path):
    prefix = tmp_path / "plain"
    lines = (" ".join(random.Random(i).choices(WORDS, k=10)) for i in range(200))
    spm.SentencePieceTrainer.train(
        sentence_iterator=lines, model_prefix=str(prefix), vocab_size=40, minloglevel=2
    )
    with pytest.raises(ValueError, match="expected"):
        Tokenizer(f"{prefix}.model")


def test_missing_model_names_the_training_call(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_tokenizer"):
        load_tokenizer(tmp_path / "none.model")


def test_long_lines_are_cut_at_sentence_ends():
    speech = " ".join(["This is one sentence of a long speech."] * 200)  # about 7,800 characters
    lines = list(tokenizer.training_lines([speech], max_chars=1000))
    assert len(lines) > 7 and all(len(line) <= 1000 for line in lines)
    assert " ".join(lines) == speech


def test_a_chunk_that_would_pass_max_chars_by_its_joining_space_is_cut():
    """Three 5-character sentences at max_chars=10: two joined would be 11 characters, so each stands alone."""
    assert list(tokenizer.training_lines(["abcd. efgh. ijkl."], max_chars=10)) == ["abcd.", "efgh.", "ijkl."]
    assert list(tokenizer.training_lines(["abc. efg. ijk."], max_chars=9)) == ["abc. efg.", "ijk."]  # exactly 9


def test_changed_trainer_options_train_a_new_tokenizer(tmp_path, monkeypatch):
    """The cache key holds the trainer's options: a changed option must not reuse the old model."""
    monkeypatch.setenv(facts.DATA_ENV, str(tmp_path / "data"))
    source = write_corpus(tmp_path, n_docs=120, seed=2)
    first = train_tokenizer(source, vocab_size=400)
    monkeypatch.setattr(tokenizer, "TRAINER_OPTIONS", {**tokenizer.TRAINER_OPTIONS, "character_coverage": 0.999})
    assert train_tokenizer(source, vocab_size=400).path != first.path


def test_training_prints_where_the_tokenizer_went_relative_to_the_project(tmp_path, monkeypatch, capsys):
    """A page that trains a tokenizer printed the building machine's folder (a CI clone under /tmp); a data root
    inside the project is printed from the project: data/tokenizers/..."""
    monkeypatch.setattr(facts, "PROJECT_ROOT", tmp_path)
    monkeypatch.setenv(facts.DATA_ENV, str(tmp_path / "data"))
    train_tokenizer(write_corpus(tmp_path), vocab_size=400)
    printed = capsys.readouterr().out
    assert ": data/tokenizers/" in printed and str(tmp_path) not in printed, printed
