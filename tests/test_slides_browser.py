"""Every slide of every lecture deck at 1280 × 720 in headless Chromium: nothing wider or taller than the
slide, nothing cut inside it, every figure whole and inside; the speaker notes are there; the PDFs and the
screenshots that `make slides` writes exist and are what they claim.

Skipped when chromium/chromedriver are absent (`make browser-deps`) or the decks are not built (`make slides`).
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time
from pathlib import Path

import pytest
from webdriver import CHROMEDRIVER, CHROMIUM, MISSING, OFFLINE, chromium_session
from webdriver import FLAGS as BASE_FLAGS

ROOT = Path(__file__).resolve().parent.parent
SLIDES = ROOT / "book" / "_build" / "slides"
MANIFEST = SLIDES / "slides.json"

pytestmark = [
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=MISSING),
    pytest.mark.skipif(not MANIFEST.exists(), reason="no lecture slides built: run `make slides` first"),
]

WAIT_FOR_DECK = """
var t0 = Date.now();
(function poll() {
  var ready = window.Reveal && Reveal.isReady() && window.MathJax && MathJax.startup && MathJax.startup.promise;
  if (ready) MathJax.startup.promise.then(function () { done(true); }, function () { done(false); });
  else if (Date.now() - t0 > 20000) done(false); else setTimeout(poll, 100);
})();"""

# what does not fit on the current slide, measured in the slide's own (unscaled) pixels
MEASURE = """
var s = Reveal.getCurrentSlide(), size = Reveal.getComputedSlideSize(), scale = Reveal.getScale();
var out = [], tol = 2;
function name(e) { return e.tagName.toLowerCase() + (e.className && e.className.baseVal === undefined
  ? '.' + String(e.className).trim().split(/\\s+/).slice(0, 2).join('.') : ''); }
if (s.scrollHeight > size.height + tol) out.push('taller than the slide: ' + s.scrollHeight + ' > ' + size.height);
if (s.scrollWidth > size.width + tol) out.push('wider than the slide: ' + s.scrollWidth + ' > ' + size.width);
s.querySelectorAll('*').forEach(function (e) {
  if (e.closest('aside.notes') || (e.closest('mjx-container') && e.tagName !== 'MJX-CONTAINER')) return;
  var cs = getComputedStyle(e);
  if (cs.display === 'none' || !e.clientWidth) return;
  if (cs.overflowX !== 'visible' && e.scrollWidth > e.clientWidth + tol)
    out.push('cut or scrolled sideways: ' + name(e) + ' ' + e.scrollWidth + ' > ' + e.clientWidth);
  if (cs.overflowY !== 'visible' && e.scrollHeight > e.clientHeight + tol)
    out.push('cut or scrolled below: ' + name(e) + ' ' + e.scrollHeight + ' > ' + e.clientHeight);
});
var box = s.getBoundingClientRect();
var top = box.top, left = box.left, right = box.left + size.width * scale, bottom = box.top + size.height * scale;
s.querySelectorAll('img, svg, canvas, iframe, video, mjx-container, table').forEach(function (e) {
  if ((e.tagName !== 'MJX-CONTAINER' && e.closest('mjx-container')) || e.closest('aside.notes')) return;
  var r = e.getBoundingClientRect();
  if (!r.width || !r.height) return;
  if (r.left < left - tol || r.top < top - tol || r.right > right + tol || r.bottom > bottom + tol)
    out.push('outside the slide: ' + name(e) + ' ' + JSON.stringify([r.left, r.top, r.right, r.bottom]
      .map(Math.round)) + ' not in ' + JSON.stringify([left, top, right, bottom].map(Math.round)));
  if (e.tagName === 'IMG' && !(e.complete && e.naturalWidth > 0)) out.push('image not loaded: ' + name(e));
});
return {problems: out, notes: !!s.querySelector('aside.notes'), title: ((s.querySelector('h1, h2') || {}).textContent || '').replace('\u00b6', '')};
"""


@pytest.fixture(scope="module")
def manifest():
    return json.loads(MANIFEST.read_text())


@pytest.fixture(scope="module")
def base():
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    handler = functools.partial(quiet, directory=str(SLIDES))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser(manifest):
    size = f"--window-size={manifest['width']},{manifest['height']}"
    with chromium_session([*BASE_FLAGS, size, OFFLINE], profile_prefix="deberta-edu-slides-chromium-",
                          timeouts={"script": 60000, "pageLoad": 60000}) as wd:
        wd.open("about:blank")
        wd.set_viewport(manifest["width"], manifest["height"])
        yield wd


def slide_report(wd, base: str, deck: dict) -> dict[tuple[int, int], dict]:
    wd.open(f"{base}/{deck['name']}.slides.html")
    assert wd.js_async(WAIT_FOR_DECK), f"{deck['name']}: reveal.js or MathJax did not start"
    found = wd.js("return Reveal.getSlides().map(function (s) { var i = Reveal.getIndices(s); return [i.h, i.v || 0]; });")
    assert [tuple(p) for p in found] == [tuple(p[:2]) for p in deck["positions"]], "the deck is not what was built"
    report = {}
    for h, v, _ in deck["positions"]:
        wd.js(f"Reveal.slide({h}, {v});")
        time.sleep(0.05)
        report[(h, v)] = wd.js(MEASURE)
    return report


def test_every_slide_fits_1280_by_720(browser, base, manifest):
    assert manifest["width"] == 1280 and manifest["height"] == 720
    names = {d["name"] for d in manifest["decks"]}
    assert {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")} | {"lecture"} <= names
    failures = []
    for deck in manifest["decks"]:
        report = slide_report(browser, base, deck)
        for (h, v), r in report.items():
            failures += [f"{deck['name']} #/{h}/{v} ({r['title']!r}): {p}" for p in r["problems"]]
        without_notes = [k for k, r in report.items() if not r["notes"]]
        # the title slide of the merged lecture has nothing to say; every other slide carries its prose
        assert len(without_notes) <= (1 if deck["name"] == "lecture" else 0), (deck["name"], without_notes)
    assert not failures, f"{len(failures)} slides do not fit:\n" + "\n".join(failures[:40])


def test_the_measure_catches_what_does_not_fit(browser, base, manifest):
    """The check above fails on a slide made too tall, a line made too wide and a figure pushed out."""
    deck = next(d for d in manifest["decks"] if d["name"].startswith("02_"))
    browser.open(f"{base}/{deck['name']}.slides.html")
    assert browser.js_async(WAIT_FOR_DECK)
    h, v, _ = next(p for p in deck["positions"] if p[2])  # a slide with a picture
    browser.js(f"Reveal.slide({h}, {v});")
    assert browser.js(MEASURE)["problems"] == []
    browser.js("var d = document.createElement('div'); d.id = 'tall'; d.style.height = '900px';"
               "Reveal.getCurrentSlide().appendChild(d);")
    assert any("taller" in p for p in browser.js(MEASURE)["problems"])
    browser.js("document.getElementById('tall').remove(); var p = document.createElement('pre'); p.id = 'wide';"
               "p.style.overflowX = 'auto'; p.textContent = 'x'.repeat(400); Reveal.getCurrentSlide().appendChild(p);")
    assert any("sideways" in p for p in browser.js(MEASURE)["problems"])
    browser.js("document.getElementById('wide').remove(); var i = Reveal.getCurrentSlide().querySelector('img');"
               "i.style.position = 'relative'; i.style.left = '2000px';")
    assert any("outside the slide" in p for p in browser.js(MEASURE)["problems"])


def test_pdfs_and_screenshots(manifest):
    for deck in manifest["decks"]:
        pdf = SLIDES / "pdf" / f"{deck['name']}.pdf"
        assert pdf.exists() and pdf.read_bytes()[:5] == b"%PDF-", pdf
        pages = pdf.read_bytes().count(b"/Type /Page") - pdf.read_bytes().count(b"/Type /Pages")
        assert pages == deck["slides"], f"{pdf.name}: {pages} pages for {deck['slides']} slides (one overflows?)"
        shots = [SLIDES / "screenshots" / s for s in deck["screenshots"]]
        assert len(shots) == 3, deck["name"]
        for shot in shots:
            data = shot.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            assert (width, height) == (1280, 720), (shot.name, width, height)
            assert len(data) > 15_000, f"{shot.name}: {len(data)} bytes, a blank page?"


def test_the_lecture_is_the_lessons_in_order(manifest):
    decks = {d["name"]: d for d in manifest["decks"]}
    lessons = sorted(n for n in decks if n != "lecture")
    assert decks["lecture"]["slides"] == 1 + sum(decks[n]["slides"] for n in lessons)
    index = (SLIDES / "index.html").read_text()
    assert "minutes" in index and all(f'href="{n}.slides.html"' in index for n in decks)
