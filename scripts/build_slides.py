"""Lecture mode: a reveal.js slide deck for every lesson, in book/_build/slides, that works offline.

    python scripts/build_slides.py               # every lesson in notebooks/
    python scripts/build_slides.py 02 03         # the lessons whose names start so

Each deck is ``book/_build/slides/NN_name.slides.html``; open it in a browser (arrows move, ``s`` opens the
speaker notes) or serve the folder. The cells' ``slideshow.slide_type`` metadata (JupyterLab: the property
inspector, "Slide Type") decides what is a slide, a sub-slide, a fragment, a note or skipped; a lesson
without any is cut at its ``#`` and ``##`` headings (``###``: sub-slides).

The outputs come from the book's execution cache when ``make book`` has run the lesson with the same
code; otherwise the lesson is executed here, at smoke size (DEBERTA_EDU_SMOKE=1), and cached for the book.
reveal.js, MathJax and the widget manager are copied next to the decks from the npm packages that
scripts/build_book.py fetched, and the nbconvert template in book/_templates/reveal_offline loads them
from there: no CDN.
"""

from __future__ import annotations

import argparse
import copy
import html
import os
import re
import sys
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_book import BOOK, BUILD, ROOT, copy_vendor, external_resources, lesson_notebooks, log  # noqa: E402

SLIDES = BUILD / "slides"
TEMPLATES = BOOK / "_templates"
HEADING = re.compile(r"^\s*(#{1,3})\s")


def cache_path() -> Path:
    smoke = os.environ.get("DEBERTA_EDU_SMOKE", "1")
    return BUILD / (".jupyter_cache" if smoke == "1" else ".jupyter_cache-full")


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


def split_at_headings(source: str) -> list[str]:
    """A markdown text cut before every ``#``, ``##`` or ``###`` heading (not inside a code fence)."""
    parts, current, fenced = [], [], False
    for line in source.splitlines(keepends=True):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if not fenced and HEADING.match(line) and any(x.strip() for x in current):
            parts.append("".join(current).rstrip("\n"))
            current = []
        current.append(line)
    if current:
        parts.append("".join(current).rstrip("\n"))
    return parts or [source]


def ensure_slide_metadata(nb: nbformat.NotebookNode) -> bool:
    """Cut a lesson that carries no slideshow metadata at its headings. Returns True when it did."""
    if any("slideshow" in cell.metadata for cell in nb.cells):
        return False
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            cells.append(cell)
            continue
        for n, part in enumerate(split_at_headings(cell.source)):
            piece = copy.deepcopy(cell)
            piece.source = part
            if n and "id" in piece:
                piece.id = f"{cell.id}-{n}"
            cells.append(piece)
    nb.cells = cells
    for cell in nb.cells:
        kind = "-"
        if cell.cell_type == "markdown":
            m = HEADING.match(cell.source)
            if m:
                kind = "subslide" if len(m.group(1)) == 3 else "slide"
        cell.metadata["slideshow"] = {"slide_type": kind}
    if nb.cells:
        nb.cells[0].metadata["slideshow"] = {"slide_type": "slide"}
    return True


def exporter():
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    c = Config()
    c.SlidesExporter.reveal_url_prefix = "vendor/reveal.js"
    c.SlidesExporter.reveal_theme = "white"
    c.SlidesExporter.reveal_scroll = True
    c.SlidesExporter.reveal_transition = "none"
    c.SlidesExporter.reveal_number = "c/t"
    c.HTMLExporter.mathjax_url = "vendor/mathjax/es5/tex-chtml.js"
    c.HTMLExporter.widget_renderer_url = "vendor/html-manager/dist/embed.js"
    # the same tags as the book: hide what the book hides
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_cell_tags = ["remove-cell"]
    c.TagRemovePreprocessor.remove_input_tags = ["remove-input"]
    c.TagRemovePreprocessor.remove_all_outputs_tags = ["remove-output"]
    c.TemplateExporter.extra_template_basedirs = [str(TEMPLATES)]
    ex = SlidesExporter(config=c, template_name="reveal_offline")
    return ex


def index_page(decks: list[Path]) -> str:
    items = "\n".join(f'  <li><a href="{d.name}">{html.escape(d.name.removesuffix(".slides.html"))}</a></li>'
                      for d in decks)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>deberta-edu: lecture slides</title>
<link rel="icon" href="data:,">
<style>body {{ font: 16px/1.5 system-ui, sans-serif; margin: 2em auto; max-width: 40em; }}</style></head>
<body><h1>DeBERTa, built from scratch: lecture slides</h1>
<p>One deck per lesson. Arrow keys move; <kbd>s</kbd> opens the speaker notes; <kbd>Esc</kbd> shows all slides.</p>
<ul>
{items}
</ul></body></html>
"""


def build(args) -> int:
    start = time.perf_counter()
    os.environ.setdefault("DEBERTA_EDU_SMOKE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
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
    for path in notebooks:
        nb = copy.deepcopy(executed(path, args.timeout))
        if ensure_slide_metadata(nb):
            log(f"{path.name}: no slideshow metadata; cut at its headings")
        body, _ = ex.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
        out = SLIDES / f"{path.stem}.slides.html"
        out.write_text(body, encoding="utf-8")
        log(f"wrote {out.relative_to(ROOT)}")
    if not args.lessons:  # decks of lessons that no longer exist go
        for old in SLIDES.glob("[0-9][0-9]_*.slides.html"):
            if old.name.removesuffix(".slides.html") not in {nb.stem for nb in notebooks}:
                old.unlink()
    decks = sorted(SLIDES.glob("[0-9][0-9]_*.slides.html"))
    (SLIDES / "index.html").write_text(index_page(decks), encoding="utf-8")
    problems = external_resources(SLIDES)
    if problems:
        log("decks would load from other machines:\n  " + "\n  ".join(problems[:50]))
        return 1
    log(f"{len(notebooks)} deck(s) in {time.perf_counter() - start:.1f} s: open {SLIDES / 'index.html'}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lessons", nargs="*", help="only the lessons whose file names start with these")
    parser.add_argument("--notebooks", default=str(ROOT / "notebooks"), help="folder of the lessons")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell when a lesson is executed here")
    return build(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
