"""The built course site and lecture slides in a real browser: headless Chromium over chromedriver's W3C protocol.

The site (book/_build/html, from `make book`) and the decks (book/_build/slides, from `make slides`) are
served by a local http.server. Chromium runs with every host name but the local one mapped to "not found",
so anything a page tried to fetch from another machine would fail, and show up here as a console error or a
resource outside the local origin. Every page must load without a console error and without a missing
local file; math must be typeset by the site's own MathJax; the attention explorer on the lesson 2 page
must redraw when a term and a head are clicked; a deck must start reveal.js.

Screenshots go to book/_build/screenshots/. Skipped when chromium/chromedriver are absent
(`make browser-deps`) or the site has not been built (`make book`, `make slides`).
"""

from __future__ import annotations

import functools
import http.server
import re
import threading
import time
from pathlib import Path

import pytest
from webdriver import CHROMEDRIVER, CHROMIUM, MISSING, OFFLINE, chromium_session
from webdriver import FLAGS as BASE_FLAGS

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "book" / "_build"
HTML = BUILD / "html"
SLIDES = BUILD / "slides"
SCREENSHOTS = BUILD / "screenshots"

pytestmark = [
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=MISSING),
    pytest.mark.skipif(not (HTML / "intro.html").exists(),
                       reason="the course site is not built: run `make book` first"),
]

# every host but this machine is "not found" (OFFLINE): a request that leaves the machine fails loudly
FLAGS = [*BASE_FLAGS, "--window-size=1280,1000", OFFLINE]


# --- a local web server for book/_build --------------------------------------------------------
class _Handler(http.server.SimpleHTTPRequestHandler):
    missing: list[str] = []

    def do_GET(self):
        if self.path == "/favicon.ico":  # browsers ask the server root when a page names no icon (index.html,
            self.send_response(204)      # the redirect); the site's pages name theirs
            self.end_headers()
            return
        super().do_GET()

    def send_error(self, code, message=None, explain=None):
        if code == 404:
            self.missing.append(self.path)
        super().send_error(code, message, explain)

    def log_message(self, format, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def server():
    """(base URL, list of 404 paths) for a server of book/_build on 127.0.0.1."""
    missing: list[str] = []
    handler = type("Handler", (_Handler,), {"missing": missing})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(BUILD)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", missing
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- the browser (scripts/webdriver.py: the W3C WebDriver protocol, spoken with urllib) ------------
@pytest.fixture(scope="module")
def browser():
    # the log endpoint must work with this chromedriver: fail at the start, loudly, if it does not
    with chromium_session(FLAGS, profile_prefix="deberta-edu-book-chromium-",
                          timeouts={"script": 60000, "pageLoad": 60000}, check_console=True) as wd:
        yield wd


# --- checks shared by every page -----------------------------------------------------------------
RESOURCES = "return performance.getEntriesByType('resource').map(function (r) { return r.name; });"

WAIT_FOR_MATH = """
if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) { done(null); }
else { MathJax.startup.promise.then(function () {
  done({typeset: document.querySelectorAll('mjx-container').length,
        errors: Array.prototype.map.call(document.querySelectorAll('mjx-merror'),
                                         function (e) { return e.textContent; })});
}, function (e) { done({failed: String(e)}); }); }
"""


def _pages() -> list[str]:
    """The site's pages, less index.html (a redirect to intro.html, checked apart) and the empty genindex."""
    return sorted(str(p.relative_to(HTML)) for p in HTML.rglob("*.html")
                  if not p.relative_to(HTML).parts[0].startswith("_") and p.name not in ("index.html", "genindex.html"))


def _settle(wd, seconds: float = 0.5):
    time.sleep(seconds)  # late scripts (widgets, MathJax's lazy parts) log their errors


def _check_page(wd, base: str, missing: list[str], url: str) -> dict | None:
    """Open url; assert no console error, no request off this origin, no missing file; return the math summary."""
    wd.console()  # drop messages of the page before
    before = len(missing)
    wd.open(url)
    math = wd.js_async(WAIT_FOR_MATH)
    _settle(wd)
    errors = [e for e in wd.console() if e.get("level") == "SEVERE"]
    assert errors == [], f"{url}: console errors {errors}"
    outside = [r for r in wd.js(RESOURCES) if not r.startswith(base + "/") and not r.startswith("data:")]
    assert outside == [], f"{url}: requests leave the machine: {outside}"
    assert missing[before:] == [], f"{url}: files missing from the site: {missing[before:]}"
    if math is not None:
        assert "failed" not in math, f"{url}: MathJax failed to start: {math}"
        assert math["errors"] == [], f"{url}: TeX errors in the math: {math['errors']}"
    return math


def test_every_page_loads_offline_without_errors(browser, server):
    base, missing = server
    pages = _pages()
    assert "intro.html" in pages and "paper_map.html" in pages, pages
    typeset = {}
    for page in pages:
        math = _check_page(browser, base, missing, f"{base}/html/{page}")
        typeset[page] = (math or {}).get("typeset", 0)
    # the pages that show equations are typeset by the site's own MathJax
    assert typeset["paper_map.html"] > 0 and typeset["glossary.html"] > 0, typeset
    browser.open(f"{base}/html/index.html")  # redirects to the front page
    for _ in range(50):
        if browser.js("return location.pathname;").endswith("/intro.html"):
            break
        time.sleep(0.1)
    assert browser.js("return location.pathname;") == "/html/intro.html"
    browser.js_async(WAIT_FOR_MATH)
    browser.screenshot(SCREENSHOTS / "front_page.png")


def test_math_comes_from_the_site(browser, server):
    base, missing = server
    _check_page(browser, base, missing, f"{base}/html/paper_map.html")
    scripts = browser.js("return Array.prototype.map.call(document.scripts, function (s) { return s.src; })"
                         ".filter(function (s) { return s.indexOf('/mathjax/') >= 0; });")
    assert scripts and all(s.startswith(f"{base}/html/_static/vendor/mathjax/") for s in scripts), scripts
    assert browser.js("return MathJax.version;").startswith("3.")


def _lesson(stem: str) -> str:
    page = HTML / "lessons" / f"{stem}.html"
    if not page.exists():
        pytest.skip(f"{page.relative_to(ROOT)} is not built (the lesson is not written yet, or run `make book`)")
    return f"lessons/{stem}.html"


def _canvas(wd) -> str:
    return wd.js("return document.getElementById('main').toDataURL();")


def test_attention_explorer_on_lesson_2_reacts_to_clicks(browser, server):
    base, missing = server
    page = _lesson("02_disentangled_attention")
    wd = browser
    _check_page(wd, base, missing, f"{base}/html/{page}")
    frames = wd.js("return document.querySelectorAll('iframe[title=\"attention explorer\"]').length;")
    assert frames >= 1, "the lesson 2 page shows no attention explorer (an iframe titled 'attention explorer')"
    frame = wd.find('iframe[title="attention explorer"]')
    wd.js("arguments[0].scrollIntoView({block: 'start'});", frame)
    wd.cmd("POST", "/frame", {"id": frame})
    try:
        assert wd.js("return window.__errors;") == [], "JavaScript errors inside the explorer"
        kinds = wd.js("return Array.prototype.map.call(document.querySelectorAll('button[data-kind]'),"
                      " function (b) { return b.getAttribute('data-kind'); });")
        heads = wd.js("return document.querySelectorAll('#heads .thumb').length;")
        assert "c2p" in kinds and heads >= 2, (kinds, heads)
        start, state0 = _canvas(wd), wd.js("return document.getElementById('main').getAttribute('data-state');")
        term = "c2p" if not state0.endswith("/c2p") else "p2c"
        wd.click(f'button[data-kind="{term}"]')
        after_term = _canvas(wd)
        assert after_term != start, f"clicking the {term} term did not redraw the map"
        assert wd.js("return document.getElementById('main').getAttribute('data-state');").endswith("/" + term)
        wd.click('.thumb[data-head="1"]')
        assert _canvas(wd) != after_term, "clicking head 1 did not redraw the map"
        assert wd.js("return document.querySelector('.thumb.on').getAttribute('data-head');") == "1"
        assert wd.js("return window.__errors;") == [], "JavaScript errors after clicking in the explorer"
    finally:
        wd.cmd("POST", "/frame/parent", {})
    _settle(wd)
    assert [e for e in wd.console() if e.get("level") == "SEVERE"] == []
    wd.screenshot(SCREENSHOTS / "lesson_2_explorer.png")
    wd.js("window.scrollTo(0, 0);")
    wd.screenshot(SCREENSHOTS / "lesson_2.png")


def test_saved_widgets_are_drawn(browser, server):
    """A lesson's ipywidgets are drawn from the state saved at build time, by the site's own widget manager."""
    base, missing = server
    pages = [p for p in _pages() if p.startswith("lessons/")
             and "application/vnd.jupyter.widget-state+json" in (HTML / p).read_text(encoding="utf-8")]
    assert {p.split("/")[-1].split("_")[0] for p in pages} >= {"01", "02", "03"}, (
        f"lessons 1-3 show ipywidgets, but the built pages with saved widget state are {pages}")
    for page in pages:
        _check_page(browser, base, missing, f"{base}/html/{page}")
        drawn = browser.js_async("""
          var t0 = Date.now();
          (function poll() {
            var n = document.querySelectorAll('.jupyter-widgets.widget-container, .widget-inline-hbox, .widget-image').length;
            if (n > 0 || Date.now() - t0 > 10000) done(n); else setTimeout(poll, 100);
          })();""")
        assert drawn > 0, f"{page}: the saved widgets were not drawn"
        _settle(browser)
        assert [e for e in browser.console() if e.get("level") == "SEVERE"] == []


# --- lecture slides ------------------------------------------------------------------------------
def _decks() -> list[Path]:
    return sorted(SLIDES.glob("[0-9][0-9]_*.slides.html"))


WAIT_FOR_REVEAL = """
var t0 = Date.now();
(function poll() {
  if (window.Reveal && Reveal.isReady()) done(true);
  else if (Date.now() - t0 > 15000) done(false); else setTimeout(poll, 100);
})();"""


def test_every_slide_deck_starts_reveal_offline(browser, server):
    base, missing = server
    decks = _decks()
    if not decks:
        pytest.skip("no lecture slides built: run `make slides` first")
    wd = browser
    for deck in decks:
        _check_page(wd, base, missing, f"{base}/slides/{deck.name}")
        assert wd.js_async(WAIT_FOR_REVEAL), f"{deck.name}: reveal.js did not start"
        total = wd.js("return Reveal.getTotalSlides();")
        assert total >= 2, f"{deck.name}: {total} slide(s); the lesson needs slideshow metadata (or headings)"
    # one deck in detail: it moves, typesets its math, and shows what it should
    deck = next((d for d in decks if d.name.startswith("02_")), decks[0])
    _check_page(wd, base, missing, f"{base}/slides/{deck.name}")
    assert wd.js_async(WAIT_FOR_REVEAL)
    wd.js("Reveal.next();")
    time.sleep(1.0)
    assert wd.js("return Reveal.getProgress();") > 0
    wd.js("Reveal.slide(0, 0);")
    time.sleep(1.0)
    _settle(wd)
    assert [e for e in wd.console() if e.get("level") == "SEVERE"] == []
    outside = [r for r in wd.js(RESOURCES) if not r.startswith(base + "/") and not r.startswith("data:")]
    assert outside == [], f"{deck.name}: requests leave the machine: {outside}"
    if re.search(r"\$|\\\(|\\\[", deck.read_text(encoding="utf-8")):
        assert wd.js("return document.querySelectorAll('mjx-container').length;") > 0, "math not typeset"
    wd.screenshot(SCREENSHOTS / f"{deck.stem}.png")
    index = SLIDES / "index.html"
    if index.exists():
        _check_page(wd, base, missing, f"{base}/slides/index.html")
        links = wd.js("return document.querySelectorAll('a[href$=\".slides.html\"]').length;")
        assert links == len(decks) + (SLIDES / "lecture.slides.html").exists(), (links, len(decks))
