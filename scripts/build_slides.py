"""Lecture mode: reveal.js decks a lecturer can teach from, in book/_build/slides, that work offline.

    python scripts/build_slides.py               # every lesson in notebooks/, the lecture, PDFs, screenshots
    python scripts/build_slides.py 02 03         # the lessons whose names start so (no lecture deck)

For each lesson ``NN_name.slides.html``; ``lecture.slides.html``, the six lessons in order as one lecture;
``pdf/<deck>.pdf``, printed from the same pages (reveal.js print mode through headless Chromium); and
``screenshots/<deck>-<n>.png``, three slides of each deck at 1280 × 720 for a look without a browser. Open
``index.html`` (arrows move, ``s`` opens the speaker notes, ``Esc`` shows every slide).

A slide is not the notebook poured into a page: scripts/lecture_view.py keeps one idea per slide (a title,
an equation or a statement, and the picture or number that proves it) and moves the lesson's prose into the
speaker notes. Where slides start is the cells' ``slideshow.slide_type`` (JupyterLab: the property inspector,
"Slide Type"); code is shown only where a cell names its few lines (``slide_lines``).

The outputs come from the book's execution cache when ``make book`` has run the lesson with the same code;
otherwise the lesson is executed here, at smoke size (DEBERTA_EDU_SMOKE=1), and cached for the book.
reveal.js, MathJax and the widget manager are copied next to the decks from the npm packages that
scripts/build_book.py fetched, and the nbconvert template in book/_templates/reveal_offline loads them from
there: no CDN. Without Chromium the decks are still written; the PDFs and screenshots are skipped, and said so.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import html
import http.server
import json
import os
import sys
import threading
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_book import (  # noqa: E402
    BOOK,
    BUILD,
    ROOT,
    cache_path,
    copy_vendor,
    external_resources,
    lesson_environment,
    lesson_notebooks,
    log,
)
from lecture_view import lecture_notebook, merge, slide_positions  # noqa: E402

SLIDES = BUILD / "slides"
TEMPLATES = BOOK / "_templates"
WIDTH, HEIGHT = 1280, 720  # the slide, in CSS pixels; the browser test opens every slide at this size
LECTURE = "lecture"
LECTURE_TITLE = "DeBERTa, built from scratch: the six lessons as one lecture"
MINUTES_PER_SLIDE = 0.75  # for the lecture's length as the index page states it


def executed(path: Path, timeout: int) -> nbformat.NotebookNode:
    """The lesson with its outputs: from the book's jupyter-cache, or executed now (and cached)."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    nb = nbformat.read(path, as_version=4)
    cache = get_cache(str(cache_path()))
    try:
        _, merged = cache.merge_match_into_notebook(nb)
        log(f"{path.name}: outputs from the book's execution cache")
        return merged
    except KeyError:
        pass
    from nbclient import NotebookClient

    log(f"{path.name}: executing (DEBERTA_EDU_SMOKE={os.environ['DEBERTA_EDU_SMOKE']})")
    t0 = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                            record_timing=False)
    client.execute()
    seconds = time.perf_counter() - t0
    log(f"{path.name}: executed in {seconds:.1f} s")
    cache.cache_notebook_bundle(CacheBundleIn(nb, str(path), data={"execution_seconds": seconds}),
                                check_validity=False, overwrite=True)
    return nb


def exporter():
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    c = Config()
    c.SlidesExporter.reveal_url_prefix = "vendor/reveal.js"
    c.SlidesExporter.reveal_theme = "white"
    c.SlidesExporter.reveal_scroll = False  # a slide that does not fit is a bug the browser test finds
    c.SlidesExporter.reveal_transition = "none"
    c.SlidesExporter.reveal_number = "c/t"
    c.SlidesExporter.reveal_width = str(WIDTH)
    c.SlidesExporter.reveal_height = str(HEIGHT)
    c.HTMLExporter.mathjax_url = "vendor/mathjax/es5/tex-chtml.js"
    c.HTMLExporter.widget_renderer_url = "vendor/html-manager/dist/embed.js"
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_cell_tags = ["remove-cell"]
    c.TagRemovePreprocessor.remove_input_tags = ["remove-input"]
    c.TagRemovePreprocessor.remove_all_outputs_tags = ["remove-output"]
    c.TemplateExporter.extra_template_basedirs = [str(TEMPLATES)]
    c.TemplateExporter.exclude_input_prompt = True
    c.TemplateExporter.exclude_output_prompt = True
    return SlidesExporter(config=c, template_name="reveal_offline")


def index_page(decks: list[dict]) -> str:
    def row(d):
        name = html.escape(d["name"])
        pdf = f' · <a href="pdf/{name}.pdf">PDF</a>' if d.get("pdf") else ""
        return f'  <li><a href="{name}.slides.html">{name}</a> ({d["slides"]} slides){pdf}</li>'

    lecture = [d for d in decks if d["name"] == LECTURE]
    lessons = [d for d in decks if d["name"] != LECTURE]
    intro = ""
    if lecture:
        n = lecture[0]["slides"]
        intro = (f'<p><strong>{row(lecture[0])[6:-5]}</strong>: the six lessons in order as one lecture, about '
                 f"{round(n * MINUTES_PER_SLIDE / 5) * 5} minutes at {MINUTES_PER_SLIDE * 60:.0f} s a slide.</p>")
    items = "\n".join(row(d) for d in lessons)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>deberta-edu: lecture slides</title>
<link rel="icon" href="data:,">
<style>body {{ font: 16px/1.5 system-ui, sans-serif; margin: 2em auto; max-width: 40em; }}</style></head>
<body><h1>DeBERTa, built from scratch: lecture slides</h1>
<p>Arrow keys move; <kbd>s</kbd> opens the speaker notes (the lesson's prose); <kbd>Esc</kbd> shows all slides.
Each slide is 1280 × 720; the PDFs are printed from the same pages, and <code>screenshots/</code> holds three
slides of each deck.</p>
{intro}
<ul>
{items}
</ul></body></html>
"""


@contextlib.contextmanager
def serve(folder: Path):
    """``folder`` over HTTP on a free local port (MathJax's fonts are not loaded from file:// pages)."""
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    handler = functools.partial(quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def pdf_pages(pdf: Path) -> int:
    """Pages of a PDF written by Chromium (uncompressed page objects)."""
    data = pdf.read_bytes() if pdf.exists() else b""
    return data.count(b"/Type /Page") - data.count(b"/Type /Pages")


def screenshot_slides(positions: list[tuple[int, int, bool]]) -> list[tuple[int, int]]:
    """Three slides worth a look: the title, the first with a picture, and one from the second half."""
    chosen = [positions[0][:2]]
    picture = next((p[:2] for p in positions[1:] if p[2]), None)
    if picture:
        chosen.append(picture)
    later = [p[:2] for p in positions[len(positions) // 2:] if p[:2] not in chosen]
    later = [p for p in later if p[1] == 0] or later
    chosen += later[: 3 - len(chosen)]
    return chosen


READY = """
var t0 = Date.now();
(function poll() {
  var ready = window.Reveal && Reveal.isReady() && window.MathJax && MathJax.startup && MathJax.startup.promise;
  if (ready) MathJax.startup.promise.then(function () { done(true); }, function () { done(false); });
  else if (Date.now() - t0 > 30000) done(false); else setTimeout(poll, 100);
})();"""


def print_and_shoot(decks: list[dict]) -> None:
    """PDFs (reveal.js print mode) and screenshots of every deck, through one headless Chromium session
    (scripts/webdriver.py); skipped, with a note, without Chromium and chromedriver."""
    from webdriver import CHROMEDRIVER, CHROMIUM, FLAGS, OFFLINE, chromium_session

    if not (CHROMIUM and CHROMEDRIVER):
        log("chromium/chromedriver not found: decks written, PDFs and screenshots skipped "
            "(`make browser-deps` installs them)")
        return
    (SLIDES / "pdf").mkdir(exist_ok=True)
    (SLIDES / "screenshots").mkdir(exist_ok=True)
    with serve(SLIDES) as base, chromium_session([*FLAGS, f"--window-size={WIDTH},{HEIGHT}", OFFLINE],
                                                 profile_prefix="deberta-edu-slides-build-",
                                                 timeouts={"script": 60000, "pageLoad": 120000}) as wd:
        wd.open("about:blank")
        wd.set_viewport(WIDTH, HEIGHT)  # screenshots of exactly one slide's size
        for deck in decks:
            name, page = deck["name"], f"{base}/{deck['name']}.slides.html"
            t0 = time.perf_counter()
            wd.open(page + "?print-pdf")
            if not wd.js_async(READY):
                raise RuntimeError(f"{name}: reveal.js or MathJax did not start in print mode")
            laid_out = wd.js_async(f"""var t0 = Date.now(); (function poll() {{
              if (document.querySelectorAll('.pdf-page').length >= {deck['slides']}) done(true);
              else if (Date.now() - t0 > 30000) done(false); else setTimeout(poll, 100); }})();""")
            if not laid_out:
                raise RuntimeError(f"{name}: reveal.js did not lay out its print pages")
            pdf = SLIDES / "pdf" / f"{name}.pdf"
            # the page size reveal.js laid its print pages out for
            wd.print_pdf(pdf, *wd.js("var r = document.querySelector('.pdf-page').getBoundingClientRect(); "
                                     "return [Math.round(r.width), Math.round(r.height)];"))
            if pdf_pages(pdf) < deck["slides"]:
                raise RuntimeError(f"{pdf.name}: {pdf_pages(pdf)} pages for {deck['slides']} slides")
            deck["pdf"] = True
            wd.open(page)
            if not wd.js_async(READY):
                raise RuntimeError(f"{name}: reveal.js or MathJax did not start")
            deck["screenshots"] = []
            for n, (h, v) in enumerate(screenshot_slides(deck["positions"]), 1):
                wd.js(f"Reveal.slide({h}, {v});")
                time.sleep(0.3)
                png = SLIDES / "screenshots" / f"{name}-{n}.png"
                wd.screenshot(png)
                deck["screenshots"].append(png.name)
            log(f"{name}: PDF ({pdf_pages(pdf)} pages) and {len(deck['screenshots'])} screenshots "
                f"in {time.perf_counter() - t0:.1f} s")


def write_deck(ex, nb: nbformat.NotebookNode, name: str) -> dict:
    body, _ = ex.from_notebook_node(nb, resources={"metadata": {"name": name}})
    out = SLIDES / f"{name}.slides.html"
    out.write_text(body, encoding="utf-8")
    positions = slide_positions(nb)
    log(f"wrote {out.relative_to(ROOT)} ({len(positions)} slides)")
    return {"name": name, "slides": len(positions), "positions": positions}


def build(args) -> int:
    start = time.perf_counter()
    if problem := lesson_environment():
        log(problem)
        return 2
    notebooks = lesson_notebooks(Path(args.notebooks).resolve())
    if args.lessons:
        notebooks = [nb for nb in notebooks if nb.name.startswith(tuple(args.lessons))]
    if not notebooks:
        log(f"no lessons (NN_name.ipynb) in {args.notebooks}")
        return 1
    SLIDES.mkdir(parents=True, exist_ok=True)
    copy_vendor("reveal.js", SLIDES / "vendor" / "reveal.js")
    copy_vendor("mathjax", SLIDES / "vendor" / "mathjax")
    copy_vendor("html-manager", SLIDES / "vendor" / "html-manager")
    ex = exporter()
    lectures, decks = [], []
    for path in notebooks:
        lecture = lecture_notebook(executed(path, args.timeout))
        lectures.append(lecture)
        decks.append(write_deck(ex, lecture, path.stem))
    if not args.lessons:
        decks.append(write_deck(ex, merge(lectures, LECTURE_TITLE), LECTURE))
        for old in SLIDES.glob("[0-9][0-9]_*.slides.html"):  # decks of lessons that no longer exist go
            if old.name.removesuffix(".slides.html") not in {nb.stem for nb in notebooks}:
                old.unlink()
    if not args.no_print:
        print_and_shoot(decks)
    manifest = SLIDES / "slides.json"
    known = {d["name"]: d for d in json.loads(manifest.read_text())["decks"]} if manifest.exists() else {}
    known.update({d["name"]: d for d in decks})
    listed = [known[k] for k in sorted(known) if (SLIDES / f"{k}.slides.html").exists()]
    manifest.write_text(json.dumps({"width": WIDTH, "height": HEIGHT, "decks": listed}, indent=1) + "\n")
    (SLIDES / "index.html").write_text(index_page(listed), encoding="utf-8")
    problems = external_resources(SLIDES)
    if problems:
        log("decks would load from other machines:\n  " + "\n  ".join(problems[:50]))
        return 1
    log(f"{len(decks)} deck(s) in {time.perf_counter() - start:.1f} s: open {SLIDES / 'index.html'}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lessons", nargs="*", help="only the lessons whose file names start with these")
    parser.add_argument("--notebooks", default=str(ROOT / "notebooks"), help="folder of the lessons")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell when a lesson is executed here")
    parser.add_argument("--no-print", action="store_true", help="write the decks only: no PDFs, no screenshots")
    return build(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
