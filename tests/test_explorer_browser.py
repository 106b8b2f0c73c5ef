"""The attention explorer: a self-contained page, checked as text and in a real browser.

The browser test drives headless Chromium over chromedriver's W3C protocol.

No selenium: the W3C WebDriver protocol is plain JSON over HTTP, spoken here with urllib. The test opens
the saved page from a file:// URL, clicks a term and a head, checks the drawing changed, and that no
JavaScript error happened (the page records errors in window.__errors) and no request left the page.
Set DEBERTA_EDU_SCREENSHOT=path.png to keep a screenshot. Skipped when chromium or chromedriver is absent
(`make browser-deps` installs them).
"""

from __future__ import annotations

import base64
import json
import os
import re

import numpy as np
import pytest
import torch
from webdriver import CHROMEDRIVER, CHROMIUM, FLAGS, MISSING, chromium_session

from deberta_edu import DebertaForMaskedLM, DebertaModel, make_config
from deberta_edu.lessons import viz
from deberta_edu.lessons.explorer import (
    MAX_TOKENS,
    explorer_html,
    iframe,
    load_demo,
    maps_html,
    page_template,
    save_explorer,
)
from deberta_edu.model import checkpoint
from deberta_edu.model.checkpoint import describe_checkpoint

needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=MISSING)


@pytest.fixture(scope="module")
def browser():
    with chromium_session([*FLAGS, "--window-size=1200,1000"], check_console=True) as wd:
        yield wd


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    torch.manual_seed(0)
    config = make_config(
        "tiny", vocab_size=40, initializer_range=0.1, position_buckets=-1, max_relative_positions=4
    )
    model = DebertaModel(config).eval()
    tokens = "[CLS] a new store opened beside the new mall </script> [SEP]".split()
    ids = torch.randint(5, 40, (len(tokens),))
    return save_explorer(
        tmp_path_factory.mktemp("explorer") / "explorer.html",
        model,
        ids,
        tokens,
        note="random weights (test)",
    )


def _canvas(wd) -> str:
    return wd.js("return document.getElementById('main').toDataURL();")


@needs_browser
def test_explorer_clicks_redraw_without_errors(browser, page):
    wd = browser
    wd.cmd("POST", "/url", {"url": page.as_uri()})
    assert wd.js("return document.readyState;") == "complete"
    assert wd.js("return window.__errors;") == [], "JavaScript errors while loading the page"
    assert wd.js("return document.querySelectorAll('#heads .thumb').length;") == 2
    assert wd.js("return document.getElementById('title').textContent;") == "DeBERTa attention explorer"

    start = _canvas(wd)
    wd.click('button[data-kind="c2p"]')
    after_term = _canvas(wd)
    assert after_term != start, "clicking the c2p term did not redraw the map"
    assert wd.js("return document.getElementById('main').getAttribute('data-state');") == "0/0/c2p"

    wd.click('.thumb[data-head="1"]')
    after_head = _canvas(wd)
    assert after_head != after_term, "clicking head 1 did not redraw the map"
    assert wd.js("return document.querySelector('.thumb.on').getAttribute('data-head');") == "1"

    wd.click('button[data-layer="1"]')
    wd.click('button[data-kind="probs"]')
    assert wd.js("return document.getElementById('main').getAttribute('data-state');") == "1/1/probs"
    assert _canvas(wd) != after_head

    # a token "</script>" inside the data must not break the page: it is drawn, not parsed
    assert "</script>" in wd.js(
        "return window.__explorer && JSON.parse("
        "document.getElementById('explorer-data').textContent).tokens.join(' ');"
    )
    # the page is self-contained: one document, no request beyond the file itself
    resources = wd.js("return performance.getEntriesByType('resource').map(function (r) { return r.name; });")
    assert resources == [], f"the page requested {resources}"
    assert wd.js("return window.__errors;") == [], "JavaScript errors after clicking"
    severe = [entry for entry in wd.console() if entry.get("level") == "SEVERE"]  # the session made sure it can read them
    assert severe == [], f"browser console errors: {severe}"

    shot = os.environ.get("DEBERTA_EDU_SCREENSHOT")
    if shot:
        with open(shot, "wb") as f:
            f.write(base64.b64decode(wd.cmd("GET", "/screenshot")))


@needs_browser
def test_an_html_comment_opener_in_the_data_does_not_blank_the_page(browser, tmp_path):
    """'<!--' and later '<script' in the tokens, title or note used to keep the parser from closing the data."""
    torch.manual_seed(0)
    model = DebertaModel(make_config("tiny", vocab_size=40, position_buckets=-1, max_relative_positions=4)).eval()
    tokens = ["[CLS]", "<!--", "<script>", "x", "</script>", "[SEP]"]
    page = save_explorer(tmp_path / "comment.html", model, torch.randint(5, 40, (len(tokens),)), tokens,
                         title="<!-- a <script> title", note="note <!-- <script>")
    wd = browser
    wd.cmd("POST", "/url", {"url": page.as_uri()})
    assert wd.js("return window.__errors;") == [], "JavaScript errors while loading the page"
    assert wd.js("return document.getElementById('title').textContent;") == "<!-- a <script> title"
    assert wd.js("return document.querySelectorAll('#heads .thumb').length;") == 2, "the page stayed blank"
    assert wd.js("return JSON.parse(document.getElementById('explorer-data').textContent).tokens;") == tokens


# --- without a browser: the page as text, and the model it is made from ------------------------------
def _tiny_model(vocab_size=40):
    torch.manual_seed(0)
    cfg = make_config("tiny", vocab_size=vocab_size, position_buckets=-1, max_relative_positions=4)
    return DebertaModel(cfg).eval()


def test_the_page_carries_each_map_query_by_query():
    """The page draws value [i * L + j] at row i (the query) and column j (the key), as its readout says: the data
    must be each map row-major with the query first; a transposed map would show j → i as i → j."""
    maps = viz.attention_maps(_tiny_model(), torch.randint(5, 40, (6,)), list("abcdef"))
    page = maps_html(maps)
    data = json.loads(re.search(r'<script id="explorer-data" type="application/json">(.*?)</script>', page, re.S)[1])
    probs = data["kinds"].index("probs")
    for layer in range(maps.num_layers):
        for t in range(len(maps.kinds)):
            for head in range(maps.num_heads):
                np.testing.assert_allclose(data["maps"][layer][t][head], maps.maps[layer, t, head].ravel(), atol=1e-4)
        sums = np.asarray(data["maps"][layer][probs]).reshape(maps.num_heads, 6, 6).sum(-1)  # over keys j
        np.testing.assert_allclose(sums, 1.0, atol=1e-3)  # each query's attention sums to 1
        assert not np.allclose(np.asarray(maps.maps[layer, probs]).sum(-2), 1.0, atol=1e-3)  # the columns do not


def test_page_is_self_contained():
    page = explorer_html(_tiny_model(), torch.randint(5, 40, (6,)), list("abcdef"), note="n")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for external in ("http://", "https://", "src=", "href=", "@import", "url("):
        assert external not in page, f"the page must not load anything ({external!r} found)"
    assert page.count("</script>") == 4  # error hook, data, explorer, error display: nothing else
    html_out = iframe(page).data
    assert "srcdoc=" in html_out and "<script" not in html_out  # escaped inside the attribute


def test_page_template_is_package_data_and_the_data_cannot_break_out():
    from importlib import resources

    template = resources.files("deberta_edu.lessons").joinpath("explorer.html").read_text(encoding="utf-8")
    assert template == page_template()
    assert template.count("__TITLE__") == 1 and template.count("__DATA__") == 1
    tokens = ["</script>", "__DATA__", "<b>"]
    page = explorer_html(_tiny_model(), torch.randint(5, 40, (3,)), tokens, title="a </script> __DATA__ & b")
    assert page.count("</script>") == template.count("</script>")  # nothing closed a script early
    # as text only: the title (in <title> and in the data) and the token; the data went in once
    assert "__TITLE__" not in page and page.count("__DATA__") == 3
    assert "<title>a &lt;/script&gt; __DATA__ &amp; b</title>" in page
    data = page.split('type="application/json">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["tokens"] == tokens


def test_page_keeps_the_model_mode_and_checks_length():
    model = _tiny_model().train()
    explorer_html(model, torch.randint(5, 40, (5,)))
    assert model.training
    with pytest.raises(ValueError, match=f"at most {MAX_TOKENS} tokens"):
        explorer_html(model, torch.randint(5, 40, (MAX_TOKENS + 1,)))


def test_load_demo_without_checkpoint_is_labelled_random(tmp_path):
    demo = load_demo("A new store opened, beside the new mall.", folder=tmp_path / "nothing")
    assert not demo.trained and "RANDOMLY INITIALISED" in demo.source
    assert demo.tokens[0] == "[CLS]" and demo.tokens[-1] == "[SEP]" and "," in demo.tokens
    assert len(demo.tokens) == demo.input_ids.numel() == 12
    assert demo.input_ids[2] == demo.input_ids[8]  # "new" twice, one id
    assert not demo.model.training


def test_load_demo_with_a_checkpoint(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    text = tmp_path / "text.txt"
    text.write_text("a new store opened beside the new mall\nthe mall is new and the store is old\n" * 50)
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(tmp_path / "sp"),
        vocab_size=24,
        model_type="unigram",
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        pad_piece="[PAD]",
        bos_piece="[CLS]",
        eos_piece="[SEP]",
        unk_piece="[UNK]",
        user_defined_symbols=["[MASK]"],
        minloglevel=2,
    )
    torch.manual_seed(0)
    model = DebertaForMaskedLM(make_config("tiny", vocab_size=24))
    folder = checkpoint.save_pretrained(model, tmp_path / "ckpt", tokenizer_file=tmp_path / "sp.model")
    demo = load_demo("a new store", folder=folder)
    assert demo.trained and demo.source.startswith("trained checkpoint: ckpt (")
    assert str(tmp_path) not in demo.source and "/" not in demo.source  # no path of this machine
    assert isinstance(demo.model, DebertaForMaskedLM) and not demo.model.training
    assert demo.tokens[0] == "[CLS]" and demo.tokens[-1] == "[SEP]"
    assert demo.input_ids[0] == 1 and demo.input_ids[-1] == 2
    assert "store" in "".join(demo.tokens)
    assert explorer_html(demo.model, demo.input_ids, demo.tokens).count('"layers": 2') == 1
    (folder / "train_config.json").write_text(json.dumps({"name": "lesson4-smoke", "steps": 25}))
    smoke = load_demo("a new store", folder=folder)  # a smoke run is shown, if asked for, as what it is
    assert not smoke.trained and smoke.source.startswith("SMOKE-size checkpoint, not trained: ckpt (")


def test_describe_checkpoint_names_no_path_of_this_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("DEBERTA_EDU_DATA", str(tmp_path / "data"))
    lesson = checkpoint.lesson_checkpoint("lesson4")
    lesson.mkdir(parents=True)
    assert describe_checkpoint(lesson) == "trained checkpoint: lesson 4"
    run = {"name": "lesson4", "size": "tiny", "variant": "deberta", "source": "bbc", "steps": 400}
    (lesson / "train_config.json").write_text(json.dumps(run))
    assert describe_checkpoint(lesson) == "trained checkpoint: lesson 4 (tiny deberta, 400 steps on bbc)"
    other = tmp_path / "elsewhere" / "my-run"
    other.mkdir(parents=True)
    (other / "train_config.json").write_text(json.dumps({**run, "name": "ablation"}))
    assert describe_checkpoint(other) == "trained checkpoint: my-run (ablation, tiny deberta, 400 steps on bbc)"
    (lesson / "train_config.json").write_text(json.dumps({**run, "steps": 100_000, "budget_seconds": 150.0}))
    assert describe_checkpoint(lesson) == "trained checkpoint: lesson 4 (tiny deberta, 150 s of training on bbc)"
    smoke = tmp_path / "elsewhere" / "lesson4-smoke"  # what make test leaves: never called trained
    smoke.mkdir()
    (smoke / "train_config.json").write_text(json.dumps({**run, "name": "lesson4-smoke", "steps": 25}))
    assert describe_checkpoint(smoke) == "SMOKE-size checkpoint, not trained: lesson4-smoke (tiny deberta, 25 steps on bbc)"
    (other / "train_config.json").write_text("{not json")
    model = DebertaModel(make_config("tiny", vocab_size=24))
    assert describe_checkpoint(other, model) == "trained checkpoint: my-run (2 layers, 2 heads, hidden size 128)"
    # without a checkpoint, the random stand-in says where it looked, relative to the data root
    demo = load_demo("a new store", folder=tmp_path / "data" / "checkpoints" / "none")
    assert "no checkpoint in $DEBERTA_EDU_DATA/checkpoints/none" in demo.source
    assert str(tmp_path) not in demo.source
