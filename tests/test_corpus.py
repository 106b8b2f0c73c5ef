"""Corpus cleaning, de-duplication, the document-level split, local files and the large-corpus builder."""

import itertools
import json
import os
import random
import time

import pytest

from deberta_edu import facts
from deberta_edu.data import corpus, large_corpus, text


@pytest.fixture(autouse=True)
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv(facts.DATA_ENV, str(root))
    return root


def docs_of(n, seed=0):
    rng = random.Random(seed)
    words = "news market team film vote phone game price court music player bank".split()
    return [f"Document {i}: " + " ".join(rng.choice(words) for _ in range(12)) for i in range(n)]


def write_bbc_topics(data_root, per_topic, dress=lambda doc: doc):
    """BBC's raw layout: ``per_topic`` articles in each topic's folder, each starting with its topic's name
    (``dress`` writes the rest of the article as the raw file holds it)."""
    from deberta_edu.data.topics import TOPICS

    for n, topic in enumerate(TOPICS):
        folder = data_root / "bbc" / "raw" / topic
        folder.mkdir(parents=True)
        for i, doc in enumerate(docs_of(per_topic, seed=n)):
            (folder / f"{i:03d}.txt").write_bytes(f"{topic} {dress(doc)}".encode())


def test_data_root_follows_env(data_root):
    assert facts.data_root() == data_root


def test_an_empty_data_env_means_the_project_data_folder(monkeypatch):
    monkeypatch.setenv(facts.DATA_ENV, "")  # `export DEBERTA_EDU_DATA=` must not scatter data into the cwd
    assert facts.data_root() == facts.PROJECT_ROOT / "data"


@pytest.mark.parametrize("value,expected", [("1", True), ("yes", True), ("True", True), ("on", True),
                                            ("0", False), ("", False), (" 0 ", False), ("false", False),
                                            ("NO", False), ("off", False)])
def test_smoke_reads_yes_and_no_words(monkeypatch, value, expected):
    monkeypatch.setenv(facts.SMOKE_ENV, value)
    assert facts.smoke() is expected


@pytest.mark.parametrize("value", ["maybe", "2", "full"])
def test_smoke_refuses_a_value_it_cannot_read(monkeypatch, value):
    monkeypatch.setenv(facts.SMOKE_ENV, value)
    with pytest.raises(ValueError, match="set it to 1 for the smoke size, 0 for the full size"):
        facts.smoke()


def test_encode_pair_wraps_in_cls_sep_and_fits_max_length():
    assert facts.encode_pair([7, 8, 9]) == [1, 7, 8, 9, 2]
    assert facts.encode_pair(iter([7, 8, 9, 10, 11]), max_length=5) == [1, 7, 8, 9, 2]  # 5 ids in all
    assert facts.encode_pair([7, 8], max_length=2) == [1, 2]
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        facts.encode_pair([7], max_length=1)


def test_clean_normalizes_unicode_and_whitespace():
    raw = "  Cafe\u0301\tau\u00a0lait  \r\n\n\n second\x07 line \u2009 here \n"
    assert text.clean(raw) == "Caf\u00e9 au lait\nsecond line here"


def test_min_chars_keeps_a_document_of_exactly_that_length():
    assert text.MIN_CHARS == 20
    exactly, short = "x" * 19 + ".", "y" * 18 + "."  # 20 and 19 characters
    assert text.clean_documents([exactly, short]) == [exactly]  # "at least 20 characters", as the error says


def test_cp1252_bytes_decode_to_their_characters_not_to_control_codes():
    """A bare 0x92 (right quote) or 0x80 (euro) is Windows-1252; read as Latin-1 it is a C1 control that
    cleaning deletes, and "It's" becomes "Its"."""
    assert text.decode_bytes(b"It\x92s \x80 5, or \xa35") == "It\u2019s \u20ac 5, or \u00a35"
    assert text.clean(text.decode_bytes(b"It\x92s")) == "It\u2019s"


def test_a_line_of_spaces_separates_documents(tmp_path):
    path = tmp_path / "spaces.txt"
    path.write_text("First document, long enough to keep.\n   \t \nSecond document, long enough too.\n")
    assert corpus.load_documents(path) == [
        "First document, long enough to keep.",
        "Second document, long enough too.",
    ]


def test_clean_documents_drops_tiny_empty_and_duplicate_docs():
    docs = [
        "A long enough first document.",
        "tiny",
        "   ",
        "A long  enough first document. ",
        "Another document here.",
    ]
    assert text.clean_documents(docs) == ["A long enough first document.", "Another document here."]


def test_split_is_stable_under_reordering_and_disjoint():
    docs = docs_of(2000)
    train, val = corpus.train_val_split(docs, 0.05)
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    train2, val2 = corpus.train_val_split(shuffled, 0.05)
    assert set(train) == set(train2) and set(val) == set(val2)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(docs)
    assert 0.03 < len(val) / len(docs) < 0.07


def test_split_keeps_input_order_within_each_side():
    docs = docs_of(300)
    train, val = corpus.train_val_split(docs, 0.1)
    assert train == [d for d in docs if d in set(train)]
    assert val == [d for d in docs if d in set(val)]


def test_split_of_a_tiny_corpus_still_has_a_validation_document():
    train, val = corpus.train_val_split(docs_of(3), 0.05)
    assert len(val) == 1 and len(train) == 2
    assert corpus.train_val_split(docs_of(3), 0.0) == (docs_of(3), [])


def test_the_validation_document_of_a_tiny_corpus_does_not_depend_on_order():
    held = {tuple(corpus.train_val_split(list(order), 0.05)[1]) for order in itertools.permutations(docs_of(3))}
    assert held == {(docs_of(3)[0],)}  # the smallest hash (0.526; the others 0.912, 0.711), in every order


def test_a_single_document_stays_in_training():
    assert corpus.train_val_split(docs_of(1), 0.05) == (docs_of(1), [])  # its hash is 0.526: not held out


def test_the_split_is_pinned_across_processes_and_versions():
    """Which documents are held out must not change from one process (or release) to the next: the committed
    course model was pretrained on one side of this split and is tested on the other. Held out at 10%: the
    documents whose SHA-256 (first 8 bytes, big-endian, / 2**64) is below 0.1, computed once by hand."""
    docs = docs_of(60)
    _, val = corpus.train_val_split(docs, 0.1)
    assert val == [docs[i] for i in (4, 13, 14, 18, 32, 44, 49, 53)]


def test_split_rejects_a_bad_fraction():
    with pytest.raises(ValueError, match="got 1.5"):
        corpus.train_val_split(docs_of(3), 1.5)


@pytest.mark.parametrize("fraction", [1.0, -0.1])
def test_split_rejects_holding_out_everything_or_a_negative_share(fraction):
    with pytest.raises(ValueError, match=f"got {fraction}"):
        corpus.train_val_split(docs_of(3), fraction)


@pytest.mark.parametrize("source", ["bbc", "large"])
def test_missing_source_names_the_fetch_command(source):
    with pytest.raises(FileNotFoundError, match=f"python -m deberta_edu.corpus fetch {source}"):
        corpus.load_documents(source)


def test_unknown_source_says_what_is_accepted(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither one of bbc, large"):
        corpus.load_documents(tmp_path / "nope")


def test_local_file_and_folder(tmp_path):
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("First document, line one.\nLine two.\n\nSecond document is here.\n")
    (folder / "sub" / "b.md").write_text("# A markdown document with a long title\n")
    (folder / "ignored.csv").write_text("a,b,c,d,e,f,g,h,i,j,k,l,m,n\n")
    assert corpus.load_documents(folder / "a.txt") == [
        "First document, line one.\nLine two.",
        "Second document is here.",
    ]
    assert len(corpus.load_documents(folder)) == 3
    assert corpus.corpus_name(folder).startswith("local-mine-")


def test_two_local_corpora_with_the_same_name_get_their_own_caches(tmp_path):
    """Caches (tokenizer, packed rows) are keyed by corpus_name: two 'notes.txt' in different folders must not
    share one."""
    a, b = tmp_path / "a" / "notes.txt", tmp_path / "b" / "notes.txt"
    assert corpus.corpus_name(a).startswith("local-notes-") and corpus.corpus_name(b).startswith("local-notes-")
    assert corpus.corpus_name(a) != corpus.corpus_name(b)
    same = tmp_path / "a" / ".." / "a" / "notes.txt"  # the same file, spelled another way
    assert corpus.corpus_name(a) == corpus.corpus_name(same)


def test_empty_folder_says_which_files_it_reads(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"\.txt or \.md"):
        corpus.load_documents(tmp_path)


def test_prepare_writes_splits_that_read_back(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("\n\n".join(docs_of(200)))
    out = corpus.prepare(src, tmp_path / "out")
    train = corpus.load_documents(out / "train.txt")
    val = corpus.load_documents(out / "val.txt")
    assert (train, val) == corpus.train_val_split(docs_of(200))
    info = json.loads((out / "info.json").read_text())
    assert info["train_documents"] == len(train) and info["val_documents"] == len(val)


def test_bbc_layout_loads_and_splits_once(data_root):
    raw = data_root / "bbc" / "raw" / "tech"
    raw.mkdir(parents=True)
    for i, doc in enumerate(docs_of(50)):
        (raw / f"{i:03d}.txt").write_bytes(doc.encode("cp1252") + b" costs \xa35")  # like sports/199.txt
    docs = corpus.load_documents("bbc")
    assert len(docs) == 50 and docs[0].endswith("costs \u00a35")
    train, val = corpus.load_split("bbc")
    assert (data_root / "bbc" / "info.json").exists()
    assert sorted(train + val) == sorted(docs)

    new = raw / "999.txt"  # a changed corpus is prepared again
    new.write_text("A new article arrived after the first prepare.")
    os.utime(new, (time.time() + 10, time.time() + 10))
    train, val = corpus.load_split("bbc")
    assert len(train + val) == 51


def test_the_split_is_prepared_again_exactly_when_its_files_change(data_root, monkeypatch):
    """Not only a newer file: one deleted, or one copied in keeping an old time stamp (cp -p, tar -x)."""
    raw = data_root / "bbc" / "raw" / "tech"
    raw.mkdir(parents=True)
    for i, doc in enumerate(docs_of(30)):
        (raw / f"{i:03d}.txt").write_text(doc)
    prepared, real = [], corpus.prepare
    monkeypatch.setattr(corpus, "prepare", lambda *a, **kw: prepared.append(a[0]) or real(*a, **kw))

    def documents():
        train, val = corpus.load_split("bbc")
        return len(train + val)

    assert (documents(), documents(), len(prepared)) == (30, 30, 1)  # prepared once, then read
    (raw / "005.txt").unlink()
    assert (documents(), len(prepared)) == (29, 2)
    old = raw / "old.txt"
    old.write_text("An old article, copied in with its time stamp kept.")
    os.utime(old, (1_000_000_000, 1_000_000_000))  # 2001: older than info.json
    assert (documents(), len(prepared)) == (30, 3)


def test_a_new_val_fraction_prepares_the_split_again(data_root):
    raw = data_root / "bbc" / "raw" / "tech"
    raw.mkdir(parents=True)
    for i, doc in enumerate(docs_of(60)):
        (raw / f"{i:03d}.txt").write_text(doc)
    _, val_small = corpus.load_split("bbc", 0.05)
    train, val = corpus.load_split("bbc", 0.5)
    assert len(val) > len(val_small)
    assert (train, val) == corpus.train_val_split(docs_of(60), 0.5)
    assert json.loads((data_root / "bbc" / "info.json").read_text())["val_fraction"] == 0.5


def test_topic_test_documents_are_exactly_the_held_out_pretraining_documents(data_root):
    """Lesson 6's promise: the topic test set is what pretraining never saw. The raw articles are messy
    (double spaces, CRLF, trailing blanks), so the two splits agree only if both hash the cleaned text."""
    from deberta_edu.data import topics

    write_bbc_topics(data_root, 40, lambda doc: doc.replace(" ", "  ", 2).replace(": ", ":\r\n") + "  \r\n")
    pre_train, pre_val = corpus.load_split("bbc")
    split = topics.load_topics()
    test, train = {d.text for d in split["test"]}, {d.text for d in split["train"]}
    assert len(pre_val) > 0 and test == set(pre_val)
    assert not train & set(pre_val) and train == set(pre_train)
    assert all(d.text.startswith(topics.TOPICS[d.label]) for d in split["test"] + split["train"])


def test_a_duplicate_article_keeps_the_label_of_its_first_topic(data_root):
    """The same article in two topic folders is one document, labelled with the first topic of TOPICS."""
    from deberta_edu.data import topics

    write_bbc_topics(data_root, 20)
    shared = "An article filed under two topics. " * 5
    for topic in topics.TOPICS[1:3]:
        (data_root / "bbc" / "raw" / topic / "shared.txt").write_text(shared)
    split = topics.load_topics(val_fraction=0.5)
    copies = [d for d in split["train"] + split["test"] if d.text == text.clean(shared)]
    assert [d.label for d in copies] == [1]


def test_few_labels_draws_per_class_documents_afresh_for_each_seed():
    """One draw is one seed of the downstream experiments: another seed must draw other documents (else the
    spread over draws is not a spread), the same seed the same ones, and every class exactly per_class times."""
    from deberta_edu.data.topics import TOPICS, Document, few_labels

    docs = [Document(f"{topic} {i}", label) for label, topic in enumerate(TOPICS) for i in range(30)]
    draws = {seed: few_labels(docs, 4, seed) for seed in range(3)}
    for chosen in draws.values():
        assert sorted(d.label for d in chosen) == sorted(list(range(len(TOPICS))) * 4)
        assert len(set(chosen)) == len(chosen) and set(chosen) <= set(docs)
    assert few_labels(docs, 4, 0) == draws[0]
    assert len({frozenset(d.text for d in chosen) for chosen in draws.values()}) == 3
    assert any([d.label for d in chosen] != sorted(d.label for d in chosen) for chosen in draws.values())  # mixed
    with pytest.raises(ValueError, match="fewer than per_class=31"):
        few_labels(docs, 31, 0)


def test_html_to_text_keeps_only_the_main_article():
    html = (
        "<html><body><div class='nav'>Navigation</div><div role='main'><h1>Title<a>¶</a></h1>"
        "<div><p>First &amp; <b>bold</b> paragraph.</p><script>var x;</script></div></div>"
        "<footer>Copyright</footer></body></html>"
    )
    assert text.clean(large_corpus.html_to_text(html)) == "Title\nFirst & bold paragraph."


def test_build_large_reports_and_skips_a_failing_part(monkeypatch, data_root, capsys):
    good = large_corpus.Part("good", ("good-pkg",), "apt", lambda root: docs_of(10))
    bad = large_corpus.Part("bad", ("bad-pkg",), "apt", lambda root: docs_of(10))

    def fake_unpack(part, downloads, root):
        if part.name == "bad":
            raise RuntimeError("`apt-get download bad-pkg` failed: E: Unable to locate package bad-pkg")
        (root / "copyright").write_text("Public domain.")
        return {"good-pkg": root / "copyright"}

    monkeypatch.setattr(large_corpus, "_unpack_part", fake_unpack)
    monkeypatch.setattr(large_corpus, "LARGE_PARTS", {"good": good, "bad": bad})
    monkeypatch.setitem(corpus.LICENSES, "good", "test license")
    corpus.fetch("large")
    out = capsys.readouterr().out
    assert "bad" in out and "SKIPPED" in out and "Unable to locate package" in out
    assert "1/2 parts" in out
    manifest = json.loads((data_root / "large" / "manifest.json").read_text())
    assert manifest["good"]["status"] == "ok" and manifest["bad"]["status"] == "skipped"
    assert (data_root / "large" / "licenses" / "good-pkg.txt").read_text() == "Public domain."
    assert corpus.load_documents("large") == docs_of(10)
    with pytest.raises(SystemExit, match="no part of the large corpus could be fetched \\(bad\\)"):
        corpus.main(["fetch", "large", "--only", "bad"])  # every part asked for failed: not a success
    with pytest.raises(SystemExit, match="--only picks parts of the large corpus"):
        corpus.main(["fetch", "bbc", "--only", "bad"])


def test_cli_info_prints_counts(tmp_path, capsys):
    src = tmp_path / "src.txt"
    src.write_text("\n\n".join(docs_of(40)))
    corpus.main(["info", str(src)])
    info = json.loads(capsys.readouterr().out)
    assert info["documents"] == 40
    assert info["train"]["documents"] + info["val"]["documents"] == 40


def test_cli_error_is_one_readable_line():
    with pytest.raises(SystemExit, match="fetch bbc"):
        corpus.main(["info", "bbc"])


def test_every_source_has_a_license():
    assert set(large_corpus.LARGE_PARTS) | {"bbc"} <= set(corpus.LICENSES)


@pytest.mark.skipif(
    not (facts.PROJECT_ROOT / "data" / "bbc" / "raw").is_dir(), reason="bbc not fetched (fetch bbc)"
)
def test_real_bbc_corpus(monkeypatch):
    monkeypatch.setenv(facts.DATA_ENV, str(facts.PROJECT_ROOT / "data"))
    assert len(list((facts.PROJECT_ROOT / "data" / "bbc" / "raw").rglob("*.txt"))) == 2225
    docs = corpus.load_documents("bbc")
    assert 2000 < len(docs) <= 2225  # the dataset has some exact duplicate articles


def test_a_mixture_is_the_union_of_its_parts_splits(monkeypatch):
    assert corpus.mixture("bbc+large") == [("bbc", 1), ("large", 1)] and corpus.mixture("bbc") is None
    assert corpus.mixture("bbc*3+large") == [("bbc", 3), ("large", 1)]
    assert corpus.unweighted("bbc*3+large") == "bbc+large" and corpus.unweighted("bbc") == "bbc"
    for bad in ("bbc+nope", "bbc*0+large", "bbc*x+large"):
        with pytest.raises(ValueError, match="unknown part"):
            corpus.mixture(bad)
    fake = {"bbc": (["b1", "b2"], ["bv"]), "large": (["l1"], ["lv"])}
    real = corpus.load_split
    monkeypatch.setattr(corpus, "load_split", lambda s, f=0.05: fake[s] if s in fake else real(s, f))
    assert real("bbc+large") == (["b1", "b2", "l1"], ["bv", "lv"])
    assert real("bbc*2+large") == (["b1", "b2", "b1", "b2", "l1"], ["bv", "lv"])
    assert corpus.corpus_name("bbc+large") == "bbc+large" and corpus.corpus_name("bbc*8+large") == "bbcx8+large"


def test_fetch_bbc_writes_the_articles_into_a_fresh_data_root(tmp_path, monkeypatch):
    """The set-up step of a fresh clone: nothing under the data root yet."""
    monkeypatch.setenv(facts.DATA_ENV, str(tmp_path))
    raw = corpus.fetch_bbc()
    assert len(list(raw.rglob("*.txt"))) == 2225 and (tmp_path / "bbc" / "LICENSE.txt").exists()


def test_wordnet_synsets_read_their_word_count_in_hex(tmp_path):
    """WordNet's data files give a synset's word count in hexadecimal: '0a' is ten words, not an error."""
    words = " ".join(f"w{i} 0" for i in range(10))
    data = tmp_path / "data.noun"
    data.write_text("  1 This software and database is being provided\n"  # the license header
                    f"00001740 03 n 0a {words} 000 | ten words for one thing\n"
                    "00002137 03 n 02 abstract_entity 0 entity(a) 0 000 | the second\n")
    assert list(large_corpus._synsets(data)) == [
        ", ".join(f"w{i}" for i in range(10)) + ": ten words for one thing",
        "abstract entity, entity: the second",
    ]
