"""A Sphinx extension of the book: everything a page loads comes from the site itself.

* scripts/build_book.py fetches MathJax and the ipywidgets HTML manager from the npm registry and stages
  them in ``_vendor/vendor``; that folder is added to ``html_static_path`` here, so the files land in
  ``_static/vendor`` of the site. (Jupyter Book adds every .js file of a static folder it knows about to
  every page; adding the folder only now, after Jupyter Book has made its configuration, keeps MathJax's
  hundred modules from being loaded as scripts by every page.)
* Thebe (live code from a Binder server) is off in this course, but sphinx-thebe still writes its loader and
  a CDN address into every page, twice with this Sphinx (a duplicate ``const``: a JavaScript error);
  its scripts are dropped, and any script registered twice is kept once.
"""

from pathlib import Path

from sphinx.errors import ExtensionError


def _add_vendor(app, config):
    vendor = Path(app.srcdir) / "_vendor"
    if not (vendor / "vendor" / "mathjax").is_dir():
        raise ExtensionError(f"no vendored MathJax in {vendor}: build the book with `make book` "
                             "(scripts/build_book.py), which fetches it")
    config.html_static_path = [*config.html_static_path, str(vendor)]


def _page_scripts(app, pagename, templatename, context, doctree):
    kept, seen = [], set()
    for script in context.get("script_files", []):
        name = str(getattr(script, "filename", script) or "")
        body = str(getattr(script, "attributes", {}).get("body", ""))
        if "thebe" in name or "THEBE_JS_URL" in body or script in seen:
            continue
        seen.add(script)
        kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("config-inited", _add_vendor)
    app.connect("html-page-context", _page_scripts, priority=900)  # after the extensions that add scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
