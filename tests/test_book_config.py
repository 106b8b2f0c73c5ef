"""The course site's configuration, checked without building it (fast; no browser, no network).

Every lesson is in the table of contents; nothing the site or the slides load comes from a CDN; MathJax
and the widget manager are served from the site's own copy; the build's helpers do what they promise.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(ROOT / "scripts"))

import build_book  # noqa: E402
import build_slides  # noqa: E402
import lecture_view  # noqa: E402

EXTERNAL = re.compile(r"(?<![\w.])(?:https?:)?//[\w.-]+\.\w", re.IGNORECASE)


def _config() -> dict:
    return yaml.safe_load((BOOK / "_config.yml").read_text())


def _toc() -> dict:
    return yaml.safe_load((BOOK / "_toc.yml").read_text())


def _lesson_stems() -> set[str]:
    return {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")} | {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py")}


def test_toc_lists_every_lesson():
    files = build_book.toc_files(_toc())
    listed = {Path(f).name for f in files if f.startswith(build_book.LESSON_DIR + "/")}
    missing = sorted(_lesson_stems() - listed)
    assert not missing, (f"lessons not in book/_toc.yml: {missing}; add them as "
                         f"'- file: {build_book.LESSON_DIR}/<name>' under the Lessons part")


def test_toc_pages_exist_and_lessons_are_in_order():
    files = build_book.toc_files(_toc())
    pages = [f for f in files if not f.startswith(build_book.LESSON_DIR + "/")]
    for page in [_toc()["root"], *pages]:
        assert (BOOK / f"{page}.md").exists(), f"book/_toc.yml lists {page}, but book/{page}.md does not exist"
    lessons = [Path(f).name for f in files if f.startswith(build_book.LESSON_DIR + "/")]
    assert lessons == sorted(lessons), f"lessons out of order in book/_toc.yml: {lessons}"
    assert len(files) == len(set(files)), "a page is listed twice in book/_toc.yml"


def test_config_executes_lessons_with_a_cache_and_fails_on_errors():
    execute = _config()["execute"]
    assert execute["execute_notebooks"] == "cache"
    assert execute["raise_on_error"] is True and execute["allow_errors"] is False
    assert execute["timeout"] >= 300, "smoke-size lessons may take minutes on 2 cores"
    assert execute.get("run_in_temp", False) is False, "lessons read ../results relative to notebooks/"


def test_mathjax_and_widgets_are_served_locally():
    sphinx = _config()["sphinx"]["config"]
    path = sphinx["mathjax_path"]
    assert not EXTERNAL.search(path), f"mathjax_path must be a local path, not {path}"
    assert path.startswith("vendor/mathjax/"), path
    # the file mathjax_path names is one the build copies from the pinned npm package
    rel = path.removeprefix("vendor/mathjax/")
    assert rel in build_book.SITE_FILES["mathjax"], (rel, build_book.SITE_FILES["mathjax"])
    name, version, integrity = build_book.NPM_PACKAGES["mathjax"]
    assert name == "mathjax" and version.startswith("3.") and integrity.startswith("sha512-")
    widgets = sphinx["nb_ipywidgets_js"]
    assert widgets and all(not EXTERNAL.search(url) for url in widgets), widgets
    assert all(url.startswith("vendor/html-manager/") for url in widgets), widgets
    for attributes in widgets.values():  # third-party widget code may not come from a CDN either
        assert not EXTERNAL.search(attributes.get("data-jupyter-widgets-cdn", ""))
    assert "offline_assets" in _config()["sphinx"]["local_extensions"]


def _site_sources():
    for path in sorted(BOOK.rglob("*")):
        rel = path.relative_to(BOOK)
        if rel.parts[0] == "_build" or "__pycache__" in rel.parts or not path.is_file():
            continue
        if path.suffix in {".yml", ".py", ".js", ".css", ".j2", ".json", ".html", ".svg"}:
            yield path


def test_no_cdn_in_config_templates_or_assets():
    problems = []
    for path in _site_sources():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if path.suffix == ".svg" and "www.w3.org/2000/svg" in line:
                line = line.replace("http://www.w3.org/2000/svg", "")  # a namespace, not a request
            if EXTERNAL.search(line):
                problems.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not problems, "addresses of other machines in the site's sources:\n" + "\n".join(problems)


def test_pages_load_nothing_from_other_machines():
    """Markdown pages may link anywhere, but images, scripts and frames must be local."""
    resource = re.compile(r"!\[[^\]]*\]\(\s*(?:https?:)?//|<(?:img|script|iframe|link|source)\b[^>]*"
                          r"(?:src|href)\s*=\s*[\"'](?:https?:)?//", re.IGNORECASE)
    problems = [f"{p.relative_to(ROOT)}" for p in BOOK.glob("*.md") if resource.search(p.read_text(encoding="utf-8"))]
    assert not problems, f"pages load images or scripts from other machines: {problems}"


def test_external_resource_scanner(tmp_path):
    (tmp_path / "a.html").write_text(
        '<script src="https://cdn.example.org/x.js"></script><script src="_static/y.js"></script>'
        '<link rel="stylesheet" href="//fonts.example.com/css"><link rel="canonical" href="https://example.org/">'
        '<a href="https://arxiv.org/abs/2006.03654">paper</a><img src="data:image/png;base64,AAAA">')
    (tmp_path / "b.css").write_text("@import url(https://fonts.example.com/css?family=Lato);\n"
                                    "/* @import url('https://fonts.example.com/commented'); */\n"
                                    "a { background: url(img/local.png); }\n")
    found = build_book.external_resources(tmp_path)
    assert found == ["a.html: https://cdn.example.org/x.js", "a.html: //fonts.example.com/css",
                     "b.css:1: @import url(https://fonts.example.com/css?family=Lato);"], found


def test_vendored_packages_are_pinned():
    for key, (name, version, integrity) in build_book.NPM_PACKAGES.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name}: pin an exact version, not {version}"
        assert integrity.startswith("sha512-"), name
        assert key in build_book.SITE_FILES, f"which files of {name} does the site need?"


def _md(source, kind="-"):
    cell = nbformat.v4.new_markdown_cell(source)
    cell.metadata["slideshow"] = {"slide_type": kind}
    return cell


def _code(source, outputs=(), **metadata):
    cell = nbformat.v4.new_code_cell(source, outputs=list(outputs))
    cell.metadata.update(metadata)
    return cell


PNG = {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}


def _lesson():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        _md("# Lesson 9 — A test\n\nFirst sentence, e.g. with an abbreviation and $x. y$ math. Second one.", "slide"),
        _code("import torch"),
        _md("## The equation\n\nTokens read rows of a table. More prose here.\n\n$$\n\\delta(i, j)\n$$\n\n"
            "| a | b |\n| - | - |\n| 1 | 2 |", "slide"),
        _code("\n".join(f"x{n} = {n}" for n in range(14)), [
            nbformat.v4.new_output("stream", name="stdout", text="".join(f"line {n}\n" for n in range(20))),
            nbformat.v4.new_output("stream", name="stderr", text="a warning\n"),
            nbformat.v4.new_output("display_data", data=PNG)]),
        _code("plot again", [nbformat.v4.new_output("display_data", data=PNG)], slide_lines="1"),
        _md("A continuation paragraph with no equation."),
        _md("**Exercise 1. Think.** Build something.", "subslide"),
        _code("def f():\n    raise NotImplementedError", [nbformat.v4.new_output("stream", name="stdout", text="…")]),
        _code("def f():\n    return 1", [nbformat.v4.new_output("stream", name="stdout", text="ok\n")],
              tags=["solution"]),
    ]
    return nb


def test_lecture_view_keeps_one_idea_per_slide():
    lecture = lecture_view.lecture_notebook(_lesson())
    kinds = [(c.cell_type, c.metadata["slideshow"]["slide_type"]) for c in lecture.cells]
    slides = [c for c in lecture.cells if c.metadata["slideshow"]["slide_type"] in ("slide", "subslide")]
    assert [c.source.splitlines()[0] for c in slides] == [
        "# Lesson 9 — A test", "## The equation", "## The equation (continued)", "## Exercise 1. Think"]
    # the statement is the first sentence (abbreviations and inline math do not end it); equations and tables stay
    assert "First sentence, e.g. with an abbreviation and $x. y$ math." in slides[0].source
    assert "Second one" not in slides[0].source
    assert "\\delta(i, j)" in slides[1].source and "| 1 | 2 |" in slides[1].source
    assert "More prose" not in slides[1].source
    # the whole prose is in the speaker notes
    notes = "\n".join(c.source for c in lecture.cells if c.metadata["slideshow"]["slide_type"] == "notes")
    assert "More prose here." in notes and "Second one." in notes and "A continuation paragraph" in notes
    code = [c for c in lecture.cells if c.cell_type == "code"]
    assert len(code) == 2, "the import (no output), the stub and the solution stay in the notebook"
    first, second = code
    assert first.metadata["tags"] == ["remove-input"]  # 14 lines of code: not on the slide
    text = first.outputs[0]["text"].splitlines()
    assert len(text) == lecture_view.MAX_OUTPUT_LINES and "more lines in the notebook" in text[-1]
    assert [o.output_type for o in first.outputs] == ["stream", "display_data"]  # no stderr
    assert list(first.outputs[1]["data"]) == ["image/png"]
    assert second.source == "plot again" and "tags" not in second.metadata  # slide_lines: shown
    assert kinds[0] == ("markdown", "slide")
    positions = lecture_view.slide_positions(lecture)
    assert positions == [(0, 0, False), (1, 0, True), (1, 1, True), (1, 2, False)]


def test_lecture_view_rejects_too_much_code():
    nb = _lesson()
    nb.cells[3].metadata["slide_lines"] = "1-12"
    with pytest.raises(ValueError, match="give 1 to 6 lines"):
        lecture_view.lecture_notebook(nb)


@pytest.mark.parametrize("text, sentence", [
    ("One. Two.", "One."),
    ("See eq. (3) and Fig. 2 for this. Then more.", "See eq. (3) and Fig. 2 for this."),
    ("He et al. write it so. More.", "He et al. write it so."),
    ("No full stop at all", "No full stop at all"),
])
def test_first_sentence(text, sentence):
    assert lecture_view.first_sentence(text) == sentence


def test_every_lesson_says_where_its_slides_start():
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert nb.cells[0].metadata.get("slideshow", {}).get("slide_type") == "slide", path.name
        assert sum(c.metadata.get("slideshow", {}).get("slide_type") == "slide" for c in nb.cells) >= 5, path.name


def test_slides_template_loads_nothing_from_a_cdn():
    """Render a small deck with the offline template (no vendor files needed) and scan it."""
    nb = _lesson()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                            "version_minor": 0}}
    body, _ = build_slides.exporter().from_notebook_node(lecture_view.lecture_notebook(nb),
                                                         resources={"metadata": {"name": "00_test"}})
    srcs = re.findall(r"""<(?:script|link|img|iframe)\b[^>]*?(?:src|href)\s*=\s*["']([^"']+)["']""", body)
    assert srcs, "the deck loads no script at all?"
    assert all(not EXTERNAL.match(s) for s in srcs), [s for s in srcs if EXTERNAL.match(s)]
    assert "vendor/reveal.js/dist/reveal.js" in srcs and "vendor/mathjax/es5/tex-chtml.js" in srcs
    assert "vendor/html-manager/dist/embed.js" in srcs
    assert "require" not in " ".join(srcs) and "MathJax.Hub.Config" not in body
    assert '<aside class="notes">' in body and "width: 1280" in body and "height: 720" in body
    assert "text-transform: none" in body  # δ stays δ in a title (the theme's capitals would make it Δ)


@pytest.mark.parametrize("folder", ["html", "slides"])
def test_built_pages_reference_nothing_external(folder):
    """When `make book` / `make slides` have run: no page or style sheet of theirs points off the machine."""
    site = BOOK / "_build" / folder
    if not any(site.glob("*.html")):
        pytest.skip(f"book/_build/{folder} is not built (`make book`, `make slides`)")
    problems = build_book.external_resources(site)
    assert not problems, "\n".join(problems[:30])


def test_markdown_tables_that_lessons_display_are_tables_on_the_site():
    """A lesson's display(Markdown(table)) must reach the page as a <table>, not a paragraph of bars."""
    assert _config()["sphinx"]["config"]["nb_render_markdown_format"] == "myst"
    page = BOOK / "_build" / "html" / "lessons" / "04_mlm_pretraining.html"
    if not page.exists():
        pytest.skip("book/_build/html is not built (`make book`)")
    html = page.read_text()
    assert "| task | encoder |" not in html  # the downstream table, unrendered
    tables = re.findall(r"<table.*?</table>", html, re.DOTALL)
    assert any("fine-tuned" in t and "naive Bayes" in t and "tf-idf logistic" in t for t in tables)


@pytest.mark.parametrize("build", [build_book.main, build_slides.main], ids=["book", "slides"])
def test_a_lesson_size_the_lessons_refuse_ends_the_build_in_one_line(build, monkeypatch, capsys):
    """DEBERTA_EDU_SMOKE=maybe: the build stops before staging or executing anything, with the reason."""
    monkeypatch.setenv("DEBERTA_EDU_SMOKE", "maybe")
    monkeypatch.setattr(build_book, "stage", lambda *a, **k: pytest.fail("staged the lessons"))
    monkeypatch.setattr(build_slides, "lesson_notebooks", lambda *a, **k: pytest.fail("looked for lessons"))
    assert build(["--no-execute"] if build is build_book.main else ["01"]) == 2
    out = capsys.readouterr()
    assert "DEBERTA_EDU_SMOKE='maybe'" in out.out + out.err and "Traceback" not in out.out + out.err


def test_the_glossarys_plateau_is_the_reports_rule():
    """The glossary states the margin the ablation's report applies: a changed PLATEAU_MARGIN must change it."""
    from deberta_edu.ablation.report import PLATEAU_MARGIN

    entry = (BOOK / "glossary.md").read_text().split("\nplateau\n", 1)[1].split("\n\n", 1)[0]
    assert f"less than {PLATEAU_MARGIN} nats below the unigram" in " ".join(entry.split())


def test_a_cells_prints_are_one_block_on_the_site():
    """Lesson 6's smoke ablation printed 19 boxes, one per worker line; merged, a cell's prints are one block, and
    no page prints the folder of the machine that built it (a CI clone under /tmp)."""
    assert _config()["sphinx"]["config"]["nb_merge_streams"] is True
    page = BOOK / "_build" / "html" / "lessons" / "06_pretraining_reproduction.html"
    if not page.exists():
        pytest.skip("book/_build/html is not built (`make book`)")
    html = page.read_text()
    assert html.count("[ablation]") == 1 and "report in data/ablation-smoke-" in html
    for name in ("04_mlm_pretraining", "06_pretraining_reproduction"):
        text = (BOOK / "_build" / "html" / "lessons" / f"{name}.html").read_text()
        assert str(ROOT) not in text and "/tmp/" not in text, name


def test_the_references_page_labels_entries_as_the_pages_cite_them():
    """Pages cite "He et al. [2021]"; the list labelled its entries "[HLGC21]". book/_ext/bib_labels.py labels
    them "He et al., 2021", with a, b for two entries that would share a label."""
    import sys

    from pybtex.database import Entry, Person

    sys.path.insert(0, str(BOOK / "_ext"))
    try:
        import bib_labels
    finally:
        sys.path.remove(str(BOOK / "_ext"))

    def entry(*authors, year="2021"):
        return Entry("article", fields={"year": year, "title": "t"}, persons={"author": [Person(a) for a in authors]})

    assert bib_labels.author_year(entry("He, Pengcheng", "Liu, Xiaodong", "Gao, Jianfeng")) == "He et al., 2021"
    assert bib_labels.author_year(entry("Kudo, Taku", "Richardson, John", year="2018")) == "Kudo and Richardson, 2018"
    assert bib_labels.author_year(entry("Hutto, C.", year="2014")) == "Hutto, 2014"
    twins = [entry("Jiang, H.", "Li, X.", "Gao, J.", year="2020"), entry("Jiang, H.", "Wu, Y.", "Ma, Z.", year="2020")]
    assert list(bib_labels.AuthorYearLabels().format_labels(twins)) == ["Jiang et al., 2020a", "Jiang et al., 2020b"]
    assert _config()["sphinx"]["config"]["bibtex_default_style"] == "authoryear"
    page = BOOK / "_build" / "html" / "references.html"
    if not page.exists():
        pytest.skip("book/_build/html is not built (`make book`)")
    assert ">He et al., 2021<" in page.read_text() and ">HLGC21<" not in page.read_text()
