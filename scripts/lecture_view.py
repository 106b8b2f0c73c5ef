"""A lesson, executed, turned into what a lecturer shows: one idea per slide, the prose in the speaker notes.

The lesson's cells keep deciding where slides start (``slideshow.slide_type`` "slide" / "subslide"); what
goes *on* a slide is chosen here, by rules a lesson author can predict:

- markdown: the title (its heading, or a bold lead such as "**Exercise 1. …**"), the statement (the first
  sentence of the prose), and what must be seen (display equations, tables, pictures, the first sentence of
  each bullet). The whole text, unchanged, becomes the slide's speaker notes.
- code: the input is not shown, unless the cell names the few lines that carry the idea in its metadata
  (``slide_lines = "3-5"``, at most MAX_CODE_LINES); its pictures and short printed numbers are. Printed
  text longer than MAX_OUTPUT_LINES shows its first lines and says how many more the notebook has.
- a second picture on one slide starts a sub-slide with the same title: one picture per slide.
- solutions, exercise stubs (``raise NotImplementedError``), warnings and progress bars stay in the notebook.
"""

from __future__ import annotations

import copy
import re

import nbformat

MAX_OUTPUT_LINES = 6
MAX_CODE_LINES = 6
MAX_TABLE_ROWS = 8
MAX_LINE = 96  # characters of printed text per line on a slide; longer lines are cut with "…"
MAX_STATEMENT = 240  # characters: a longer first sentence is cut at a clause
HEADING = re.compile(r"^\s*#{1,3}\s+(.*)$")
BOLD_LEAD = re.compile(r"^\s*\*\*(.+?)\*\*[:.]?\s*(.*)$", re.S)
ABBREVIATIONS = ("eq", "e.g", "i.e", "al", "fig", "sec", "vs", "cf", "Eq", "Fig", "Sec", "approx")
IMAGE_TYPES = ("image/png", "image/svg+xml", "image/jpeg")


def blocks(text: str) -> list[str]:
    """Markdown cut into blocks at blank lines, keeping $$ … $$ and ``` fences whole."""
    out, current, fence = [], [], None
    for line in text.splitlines():
        stripped = line.strip()
        opens = stripped.startswith(("```", "~~~")) or stripped.startswith("$$")
        if fence is None and not stripped and current:
            out.append("\n".join(current))
            current = []
            continue
        if fence is None and opens:
            token = stripped[:3] if not stripped.startswith("$$") else "$$"
            single = token == "$$" and stripped.endswith("$$") and len(stripped) > 2
            if not single:
                fence = token
        elif fence is not None and (stripped.startswith(fence) or (fence == "$$" and stripped.endswith("$$"))):
            fence = None
        if stripped or fence is not None:
            current.append(line)
    if current:
        out.append("\n".join(current))
    return out


def first_sentence(text: str) -> str:
    """The first sentence of a paragraph (abbreviations and inline math do not end one), cut to MAX_STATEMENT."""
    masked = re.sub(r"\$[^$]*\$|`[^`]*`", lambda m: "x" * len(m.group()), text)
    for m in re.finditer(r"[.!?](?=\s+[A-Z*(\[`$]|\s*$)", masked):
        before = masked[: m.start()].split()[-1] if masked[: m.start()].split() else ""
        if before.rstrip(".").lower() in {a.lower() for a in ABBREVIATIONS} or re.fullmatch(r"[A-Z]", before):
            continue
        sentence = text[: m.end()].strip()
        break
    else:
        sentence = text.strip()
    sentence = " ".join(sentence.split())
    if len(sentence) > MAX_STATEMENT:
        cut = max(sentence.rfind(s, 0, MAX_STATEMENT) for s in (", ", "; ", ": ", " — ", " ("))
        sentence = sentence[: cut if cut > 60 else MAX_STATEMENT].rstrip(" ,;:(") + " …"
    return sentence


def _kind(block: str) -> str:
    s = block.lstrip()
    if s.startswith("$$"):
        return "math"
    if s.startswith("|"):
        return "table"
    if s.startswith(("```", "~~~")):
        return "code"
    if re.match(r"!\[", s):
        return "image"
    if re.match(r"([-*]|\d+\.)\s", s):
        return "list"
    if HEADING.match(s.splitlines()[0]):
        return "heading"
    return "prose"


def _bullets(block: str) -> str:
    items = re.split(r"\n(?=\s*(?:[-*]|\d+\.)\s)", block)
    return "\n".join(re.match(r"\s*((?:[-*]|\d+\.)\s)", item).group(1) + first_sentence(
        re.sub(r"^\s*(?:[-*]|\d+\.)\s", "", item)) for item in items)


def split_markdown(source: str, *, starts_slide: bool) -> tuple[str | None, str, str]:
    """(title, what the slide shows, the speaker notes) of one markdown cell."""
    parts = blocks(source)
    title = None
    if parts and starts_slide:
        head = parts[0].splitlines()[0]
        if HEADING.match(head):
            title = HEADING.match(head).group(1).strip()
            if head.lstrip().startswith("# "):  # the lesson's own title
                title = "# " + title
            rest = parts[0].split("\n", 1)[1] if "\n" in parts[0] else ""
            parts = ([rest] if rest.strip() else []) + parts[1:]
        elif BOLD_LEAD.match(parts[0]):
            lead, rest = BOLD_LEAD.match(parts[0]).groups()
            title = lead.strip().rstrip(".")
            parts = ([rest] if rest.strip() else []) + parts[1:]
    shown, said = [], False
    for block in parts:
        kind = _kind(block)
        if kind in ("math", "table", "image"):
            shown.append(block)
        elif kind == "list":
            shown.append(_bullets(block))
        elif kind == "prose" and not said and starts_slide:
            shown.append(first_sentence(block))
            said = True
    return title, "\n\n".join(shown), source


def _lines(spec: str, source: str) -> str:
    a, _, b = str(spec).partition("-")
    lines = source.splitlines()
    lo, hi = int(a), int(b or a)
    if not 1 <= lo <= hi <= len(lines) or hi - lo + 1 > MAX_CODE_LINES:
        raise ValueError(f"slide_lines = {spec!r}: give 1 to {MAX_CODE_LINES} lines of the cell's {len(lines)}")
    return "\n".join(lines[lo - 1: hi])


def _short_text(text: str) -> str:
    lines = [ln if len(ln) <= MAX_LINE else ln[: MAX_LINE - 1] + "…" for ln in text.rstrip("\n").splitlines()]
    if len(lines) > MAX_OUTPUT_LINES:
        more = len(lines) - (MAX_OUTPUT_LINES - 1)
        lines = lines[: MAX_OUTPUT_LINES - 1] + [f"… ({more} more lines in the notebook)"]
    return "\n".join(lines) + "\n"


def _short_markdown(text: str) -> str:
    """Printed markdown on a slide: its first block (a table: its first MAX_TABLE_ROWS rows), and a pointer on."""
    parts = blocks(text)
    if not parts:
        return text
    first = parts[0]
    rows = first.splitlines()
    cut = _kind(first) == "table" and len(rows) > MAX_TABLE_ROWS + 2
    if cut:
        first = "\n".join(rows[: MAX_TABLE_ROWS + 2])
    if cut or len(parts) > 1:
        first += "\n\n*… the rest is in the notebook and the book.*"
    return first


def slide_outputs(outputs: list) -> list:
    """The outputs a slide shows: pictures, widgets, short text; no warnings, no progress bars."""
    kept = []
    for out in outputs:
        out = copy.deepcopy(out)
        if out.output_type == "stream":
            if out.name != "stdout" or not out.text.strip():
                continue
            if kept and kept[-1].output_type == "stream":  # one box for what one cell prints in a row
                kept[-1].text += out.text
                continue
        elif out.output_type in ("display_data", "execute_result"):
            data = out.get("data", {})
            image = next((t for t in IMAGE_TYPES if t in data), None)
            if image:
                out.data = {image: data[image]}
            elif "application/vnd.jupyter.widget-view+json" in data or "text/html" in data:
                pass
            elif "text/markdown" in data:
                out.data = {"text/markdown": _short_markdown(data["text/markdown"])}
            elif "text/plain" in data:
                if re.fullmatch(r"<.*object at 0x[0-9a-f]+>|CheckResult\(.*\)", data["text/plain"].strip(), re.S):
                    continue
                out.data = {"text/plain": _short_text(data["text/plain"])}
            else:
                continue
        kept.append(out)
    for out in kept:
        if out.output_type == "stream":
            out.text = _short_text(out.text)
    return kept


def _has_image(outputs) -> bool:
    return any(any(t in o.get("data", {}) for t in IMAGE_TYPES) for o in outputs)


def _heading(title: str) -> str:
    return title if title.startswith("# ") else f"## {title}"


def _md(source: str, kind: str):
    cell = nbformat.v4.new_markdown_cell(source)
    cell.metadata["slideshow"] = {"slide_type": kind}
    return cell


def lecture_cells(nb: nbformat.NotebookNode) -> list:
    """The cells of the deck made from an executed lesson (see the module's docstring)."""
    cells, title, images = [], None, 0
    for cell in nb.cells:
        kind = cell.metadata.get("slideshow", {}).get("slide_type", "-")
        tags = set(cell.metadata.get("tags", []))
        if kind == "skip" or "remove-cell" in tags or "solution" in tags:
            continue
        if cell.cell_type == "markdown":
            starts = kind in ("slide", "subslide")
            heading, shown, notes = split_markdown(cell.source, starts_slide=starts)
            if starts:
                title = heading or title
                images = 0
                body = (_heading(title) + "\n\n" if title else "") + shown
                cells.append(_md(body, kind))
            elif shown:
                cells.append(_md(shown, "-"))
            cells.append(_md(notes, "notes"))
            continue
        if "raise NotImplementedError" in cell.source:
            continue
        outputs = slide_outputs(cell.get("outputs", []))
        code = _lines(cell.metadata["slide_lines"], cell.source) if "slide_lines" in cell.metadata else None
        if not outputs and code is None:
            continue
        groups = [(False, [])]  # (starts a slide, outputs): one picture per slide, a second one moves on
        for out in outputs:
            if _has_image([out]):
                images += 1
                if images > 1:
                    groups.append((True, []))
                    images = 1
            groups[-1][1].append(out)
        if not groups[0][1] and len(groups) > 1:  # the cell's first picture opens the new slide: code goes too
            groups = [(True, groups[1][1]), *groups[2:]]
        for n, (new_slide, group) in enumerate(groups):
            shows_code = n == 0 and code is not None
            if new_slide:
                cells.append(_md(_heading(title) + " (continued)" if title else "", "subslide"))
                cells.append(_md("The next picture for the slide before: its notes say what it shows.", "notes"))
            if not group and not shows_code:
                continue
            new = nbformat.v4.new_code_cell(code if shows_code else "", outputs=group)
            new.metadata["slideshow"] = {"slide_type": "-"}
            if not shows_code:
                new.metadata["tags"] = ["remove-input"]
            cells.append(new)
    return cells


def lecture_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    out = copy.deepcopy(nb)
    out.cells = lecture_cells(nb)
    if not out.cells or out.cells[0].metadata["slideshow"]["slide_type"] != "slide":
        raise ValueError("a lesson's first cell must be a slide (its title)")
    return out


def slide_positions(nb: nbformat.NotebookNode) -> list[tuple[int, int, bool]]:
    """(h, v, has a picture) of every slide of a lecture notebook, in reveal.js's numbering."""
    positions, h, v = [], -1, 0
    for cell in nb.cells:
        kind = cell.metadata.get("slideshow", {}).get("slide_type", "-")
        if kind == "slide":
            h, v = h + 1, 0
            positions.append([h, v, False])
        elif kind == "subslide":
            v += 1
            positions.append([h, v, False])
        elif cell.cell_type == "code" and _has_image(cell.outputs) and positions:
            positions[-1][2] = True
    return [tuple(p) for p in positions]


def merge(decks: list[nbformat.NotebookNode], title: str) -> nbformat.NotebookNode:
    """One lecture from several decks, in order: a title slide, then each deck's slides (widget state merged)."""
    out = copy.deepcopy(decks[0])
    out.cells = [_md(f"# {title}", "slide")]
    state = {}
    for nb in decks:
        out.cells += copy.deepcopy(nb.cells)
        widgets = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json")
        if widgets:
            state.update(widgets.get("state", {}))
    if state:
        out.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
            "state": state, "version_major": 2, "version_minor": 0}}
    else:
        out.metadata.pop("widgets", None)
    return out
