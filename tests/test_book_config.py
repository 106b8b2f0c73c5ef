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


def test_toc_drops_lessons_not_written_yet():
    toc = {"format": "jb-book", "root": "intro", "parts": [
        {"caption": "Lessons", "chapters": [{"file": "lessons/01_a"}, {"file": "lessons/02_b"}]},
        {"caption": "Later", "chapters": [{"file": "lessons/09_z"}]},
        {"caption": "Reference", "chapters": [{"file": "glossary"}]}]}
    kept, dropped = build_book.filter_toc(toc, lambda f: f != "lessons/02_b" and f != "lessons/09_z")
    assert dropped == ["lessons/02_b", "lessons/09_z"]
    assert build_book.toc_files(kept) == ["lessons/01_a", "glossary"]
    assert [p["caption"] for p in kept["parts"]] == ["Lessons", "Reference"]  # an emptied part goes


def test_links_to_missing_lessons_become_text():
    text = ("See [lesson 4](lessons/04_mlm.ipynb), [§](lessons/04_mlm.ipynb#masking), {doc}`the lesson "
            "<lessons/04_mlm>`, {doc}`lessons/04_mlm` and [lesson 1](lessons/01_rel.ipynb).")
    out = build_book.unlink_pages(text, ["lessons/04_mlm"])
    assert out == "See lesson 4, §, the lesson, 04_mlm and [lesson 1](lessons/01_rel.ipynb)."


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


def test_slides_template_loads_nothing_from_a_cdn():
    """Render a small deck with the offline template (no vendor files needed) and scan it."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title\n\n$\\delta(i, j)$\n\n## Second\n\ntext"),
                nbformat.v4.new_code_cell("1 + 1", outputs=[nbformat.v4.new_output(
                    "execute_result", data={"text/plain": "2"}, execution_count=1)])]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                            "version_minor": 0}}
    assert build_slides.ensure_slide_metadata(nb)
    assert [c.metadata["slideshow"]["slide_type"] for c in nb.cells] == ["slide", "slide", "-"]
    body, _ = build_slides.exporter().from_notebook_node(nb, resources={"metadata": {"name": "00_test"}})
    srcs = re.findall(r"""<(?:script|link|img|iframe)\b[^>]*?(?:src|href)\s*=\s*["']([^"']+)["']""", body)
    assert srcs, "the deck loads no script at all?"
    assert all(not EXTERNAL.match(s) for s in srcs), [s for s in srcs if EXTERNAL.match(s)]
    assert "vendor/reveal.js/dist/reveal.js" in srcs and "vendor/mathjax/es5/tex-chtml.js" in srcs
    assert "vendor/html-manager/dist/embed.js" in srcs
    assert "require" not in " ".join(srcs) and "MathJax.Hub.Config" not in body


@pytest.mark.parametrize("source, parts", [
    ("# A\ntext\n## B\nmore", ["# A\ntext", "## B\nmore"]),
    ("intro\n```python\n# not a heading\n```\n### C", ["intro\n```python\n# not a heading\n```", "### C"]),
    ("no heading", ["no heading"]),
])
def test_slides_cut_at_headings(source, parts):
    assert build_slides.split_at_headings(source) == parts


@pytest.mark.parametrize("folder", ["html", "slides"])
def test_built_pages_reference_nothing_external(folder):
    """When `make book` / `make slides` have run: no page or style sheet of theirs points off the machine."""
    site = BOOK / "_build" / folder
    if not any(site.glob("*.html")):
        pytest.skip(f"book/_build/{folder} is not built (`make book`, `make slides`)")
    problems = build_book.external_resources(site)
    assert not problems, "\n".join(problems[:30])
