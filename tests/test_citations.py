"""Every citation of the paper is checked against one table: "The paper's parts" in book/paper_map.md.

The paper is DeBERTa, arXiv 2006.03654, numbered as in v6. The table lists each numbered part once
(kind, number, what it is, the words that name it, where the course builds it).

What counts as a citation, in notebooks/NN_*.py, deberta_edu/**/*.py (docstrings, comments and strings
alike), book/*.md, README.md and results/README.md, after the leading "#" of comment lines is dropped so that
wrapped prose reads on:

    section    §3.2   sec. 3.2   section 3.2   sections 3.1 and 3.2
    equation   eq. (4)   eq. 4   eqs. 2 and 4   equation 4   equations (2) and (4)   eq. (2)–(4)
    table      Table 4   Tables 1–3            figure   Figure 2   Fig. 2   Figures 3–5
    algorithm  Algorithm 1                     appendix appendix A.8   A.8 (capital A)   §A.8   appendix A

Lists and ranges after the first number are expanded ("Tables 1–3" cites 1, 2 and 3). Each number must
be listed in the table for its kind. And where the words just before a citation name a part (the
"named by" column; the nearest such name, ending at most 24 characters before the citation, in the 50
characters before it cut at the previous citation of its kind, the end of a sentence, a table cell, a
list item or a blank line), the number must be that part's: "the EMD (§3.3)",
"SiFT (sec. 3.4)" and "its ablation (Table 5)" fail. For sections and appendices a parent or a child
of the named part is accepted ("the ablation (§5.2)" names §5.2.1, inside §5.2).

Not the paper's, and not checked (the rules that keep false positives low):
  - our own material: the kind word right after "our", "this", "that", "these", "their", "lesson N's"
    or "the course's" ("our Table 2"), or the citation right before "below", "above", "of this" or
    the explicit marker "(ours)" ("Table 1 (ours)");
  - another work: the words before it name "X et al." with X other than He, a {cite} role, or one
    of OTHER_WORKS ("Miyato et al. (2017), section 3").

Quoted numbers: right after a row label of Table 4 (−EMD, −C2P, −P2C, −(EMD+C2P), −(EMD+P2C),
RoBERTa-ReImp), every two-digit score (like 85.8) must be one of that row's scores in paper_map's copy of
Table 4, and deberta_edu/ablation/report.py's PAPER must agree with it.

Paths: every `wing/module.py` a book page or a README names exists under deberta_edu/, the project or
scripts/ (`DeBERTa/...` is microsoft/DeBERTa's), and every lessons/NN_name.ipynb link has its notebooks/NN_name.py.

A failure reads `file:line: found X, should be Y`.
"""

from __future__ import annotations

import ast
import bisect
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAPER_MAP = ROOT / "book" / "paper_map.md"
PARTS_HEADER = "| kind | number | what it is | named by | where the course builds it |"
KINDS = ("section", "equation", "table", "figure", "algorithm", "appendix")
WINDOW = 50  # characters before a citation that are read for the name of the part it cites
GAP = 24  # a name counts when it ends at most this many characters before the citation


def scanned_files() -> list[Path]:
    files = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    files += sorted((ROOT / "deberta_edu").rglob("*.py"))
    files += sorted((ROOT / "book").glob("*.md"))
    files += [ROOT / "README.md", ROOT / "results" / "README.md"]  # what a reader meets before the book
    return files


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Part:
    kind: str
    number: str  # "3.1.1", "4", "A.8", "A"
    what: str
    names: tuple[str, ...]
    where: str


def parse_parts(text: str) -> dict[tuple[str, str], Part]:
    """The rows of paper_map's parts table, keyed by (kind, number)."""
    lines = text.splitlines()
    assert PARTS_HEADER in lines, (f"book/paper_map.md has no parts table: its header must read exactly\n"
                                   f"{PARTS_HEADER}\n(tests/test_citations.py reads it)")
    start = lines.index(PARTS_HEADER) + 2  # skip the header and the | --- | line
    parts: dict[tuple[str, str], Part] = {}
    for n, line in enumerate(lines[start:], start + 1):
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 5, f"book/paper_map.md:{n}: a parts row needs 5 cells, found {len(cells)}: {line}"
        kind, number, what, names, where = cells
        assert kind in KINDS, f"book/paper_map.md:{n}: kind {kind!r} is not one of {KINDS}"
        assert (kind, number) not in parts, f"book/paper_map.md:{n}: {kind} {number} is listed twice"
        parts[kind, number] = Part(kind, number, what, tuple(w.strip() for w in names.split(",") if w.strip()),
                                   where)
    return parts


def cite(kind: str, number: str) -> str:
    return {"section": f"§{number}", "equation": f"eq. ({number})", "table": f"Table {number}",
            "figure": f"Figure {number}", "algorithm": f"Algorithm {number}", "appendix": number}[kind]


def keyword_pattern(word: str) -> re.Pattern:
    """A name from the table, matched case-insensitively; "pre-training data" also matches "pretraining data"."""
    pieces = [re.escape(p) for p in re.split(r"[\s-]+", word) if p]
    return re.compile(r"(?<!\w)" + r"[\s-]*".join(pieces), re.IGNORECASE)


# ----------------------------------------------------------------------------- finding citations

SEP = r"(?:,|&|–|—|-|\band\b|\bor\b|\bto\b)"
PATTERNS = {
    "appendix": re.compile(r"(?:(?i:\bappendix)\s+A(?![\w])(?:\.(?P<first>\d+(?:\.\d+)?))?"
                           r"|(?:§\s*|(?<![\w.\\$]))A\.(?P<first2>\d+(?:\.\d+)?))(?![\w])"
                           r"(?P<rest>(?:\s*" + SEP + r"\s*(?:A\.)?\d+(?:\.\d+)?(?![\w]))*)"),
    "section": re.compile(r"(?:§\s*|\bsecs?\.\s*|\bsections?\s+)(?P<first>\d+(?:\.\d+)*)"
                          r"(?P<rest>(?:\s*" + SEP + r"\s*(?:§\s*)?\d+(?:\.\d+)*)*)", re.IGNORECASE),
    "equation": re.compile(r"\b(?:eqs?\.|eqn\.|equations?)\s*(?:\((?P<first>\d+)\)|(?P<first2>\d+))"
                           r"(?P<rest>(?:\s*" + SEP + r"\s*\(?\d{1,2}\)?(?![\d/%\w]|\.\d))*)", re.IGNORECASE),
    "table": re.compile(r"\btables?\s+(?P<first>\d+)(?![\d.]\d)(?P<rest>(?:\s*" + SEP + r"\s*\d{1,2}(?![\d.%\w]))*)",
                        re.IGNORECASE),
    "figure": re.compile(r"\b(?:figs?\.|figures?)\s*(?P<first>\d+)(?P<rest>(?:\s*" + SEP + r"\s*\d{1,2}(?![\d.%\w]))*)",
                         re.IGNORECASE),
    "algorithm": re.compile(r"\balgorithms?\s+(?P<first>\d+)(?P<rest>(?:\s*" + SEP + r"\s*\d+)*)", re.IGNORECASE),
}
REST_NUMBER = re.compile(r"(?P<sep>" + SEP + r")\s*(?:§\s*|A\.)?\(?(?P<num>\d+(?:\.\d+)*)", re.IGNORECASE)
SENTENCE_END = re.compile(r"(?<!\bsec)(?<!\bsecs)(?<!\beq)(?<!\beqs)(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bfig)"
                          r"(?<!\bcf)(?<!\bvs)[.!?]['\")\]*]*\s+(?=[A-Z\"*(\[`§])", re.IGNORECASE)
CELL_OR_PARAGRAPH = re.compile(r"\||\n[ \t]*\n|\n[ \t]*(?:[-*+]|\d+\.)[ \t]|\n#")  # cell, paragraph, item, heading
OWN_BEFORE = re.compile(r"(?:\bour|\bthis|\bthat|\bthese|\btheir|\blesson\s+\d+'s|\bcourse's)\s+$", re.IGNORECASE)
OWN_AFTER = re.compile(r"^\)?\s*(?:below|above|of this|\(ours\))", re.IGNORECASE)
OTHER_WORKS = ("Miyato", "Shaw", "Vaswani", "Devlin", "Raffel", "Joshi", "SpanBERT", "Transformer-XL", "T5")
OTHER_WORK = re.compile(r"\b(?!He\b)[A-Z][\w-]+ et al\.|\{cite:|\b(?:" + "|".join(map(re.escape, OTHER_WORKS)) + r")\b")


@dataclass(frozen=True)
class Citation:
    kind: str
    number: str
    text: str  # as written, e.g. "sec. 3.4" or "Tables 1–3"
    start: int
    end: int


def flatten(text: str, python: bool) -> str:
    """Drop the leading "#" of comment lines (notebook prose, wrapped comments); keep every line break."""
    if not python:
        return text
    return "\n".join(re.sub(r"^\s*#+ ?", "", line) for line in text.split("\n"))


def _numbers(kind: str, m: re.Match) -> list[str]:
    first = m.group("first") or m.groupdict().get("first2")
    if kind == "appendix":
        first = "A" if first is None else f"A.{first}"
    numbers = [first]
    for r in REST_NUMBER.finditer(m.group("rest") or ""):
        num = r.group("num")
        if kind == "appendix":
            num = f"A.{num}"
        prev = numbers[-1].rsplit(".", 1)
        here = num.rsplit(".", 1)
        if r.group("sep") in ("–", "—", "-", "to") and len(prev) == len(here) and prev[:-1] == here[:-1] \
                and prev[-1].isdigit() and here[-1].isdigit() and int(prev[-1]) < int(here[-1]) <= int(prev[-1]) + 20:
            stem = prev[0] + "." if len(prev) == 2 else ""
            numbers += [f"{stem}{i}" for i in range(int(prev[-1]) + 1, int(here[-1]))]
        numbers.append(num)
    return numbers


def find_citations(text: str) -> list[Citation]:
    """Every citation of the paper in a (flattened) text, in order; our own tables and other works left out."""
    found: list[Citation] = []
    taken: list[tuple[int, int]] = []
    for kind in PATTERNS:  # appendix first, so that "§A.8" is not read as a section
        for m in PATTERNS[kind].finditer(text):
            if any(a < m.end() and m.start() < b for a, b in taken):
                continue
            if OWN_BEFORE.search(text[max(0, m.start() - 20):m.start()]) or OWN_AFTER.match(text[m.end():m.end() + 12]):
                continue
            if OTHER_WORK.search(window(text, m.start(), 0, width=80)):
                continue
            taken.append((m.start(), m.end()))
            found += [Citation(kind, n, m.group(0).strip(), m.start(), m.end()) for n in _numbers(kind, m)]
    return sorted(found, key=lambda c: (c.start, c.number))


def window(text: str, start: int, floor: int, width: int = WINDOW) -> str:
    """The words right before a citation: at most `width` characters, cut at `floor` (the previous
    citation), at the end of a sentence, at a table cell and at a blank line."""
    lo = max(floor, start - width, 0)
    piece = text[lo:start]
    cuts = [m.end() for m in SENTENCE_END.finditer(piece)] + [m.end() for m in CELL_OR_PARAGRAPH.finditer(piece)]
    return piece[max(cuts, default=0):]


# ----------------------------------------------------------------------------- checking them


def related(kind: str, a: str, b: str) -> bool:
    """Equal, or (for sections and appendices) one contains the other."""
    if a == b:
        return True
    if kind not in ("section", "appendix"):
        return False
    return a.startswith(b + ".") or b.startswith(a + ".") or (kind == "appendix" and "A" in (a, b))


def named_parts(parts: dict, kind: str, words: str) -> list[Part]:
    """The parts of this kind named by the word nearest the end of `words` (empty when none is)."""
    best, named = -1, []
    for part in (p for p in parts.values() if p.kind == kind):
        for name in part.names:
            for m in keyword_pattern(name).finditer(words):
                if len(words) - m.end() > GAP:
                    continue
                if m.end() > best:
                    best, named = m.end(), [part]
                elif m.end() == best and part not in named:
                    named.append(part)
    return named


def check_text(text: str, parts: dict, where: str = "<text>", python: bool = False) -> list[str]:
    """Problems as `file:line: found X, should be Y`; an empty list when every citation is right."""
    flat = flatten(text, python)
    line_starts = [0] + [i + 1 for i, ch in enumerate(flat) if ch == "\n"]
    problems, floor, read_at, named = [], {}, -1, []  # floor: where the last citation of each kind ended
    for c in find_citations(flat):
        line = bisect.bisect_right(line_starts, c.start)
        if c.start != read_at:  # the numbers of one list share the words before it
            named, read_at = named_parts(parts, c.kind, window(flat, c.start, floor.get(c.kind, 0))), c.start
        floor[c.kind] = c.end
        listed = [cite(k, n) for (k, n) in parts if k == c.kind]
        if (c.kind, c.number) not in parts:
            should = (" or ".join(f"{cite(p.kind, p.number)} ({p.what})" for p in named) if named
                      else f"one of {', '.join(listed)} (book/paper_map.md)")
            problems.append(f"{where}:{line}: found {c.text!r} ({c.kind} {c.number}, not in arXiv v6), "
                            f"should be {should}")
        elif named and not any(related(c.kind, c.number, p.number) for p in named):
            got = parts[c.kind, c.number]
            problems.append(f"{where}:{line}: found {c.text!r} ({cite(c.kind, c.number)} is {got.what}), should be "
                            + " or ".join(f"{cite(p.kind, p.number)} ({p.what})" for p in named))
    return problems


# ----------------------------------------------------------------------------- numbers quoted from Table 4

ROW_LABELS = {"−(EMD+C2P)": "−(EMD+C2P)", "−(EMD+P2C)": "−(EMD+P2C)", "−EMD": "−EMD", "−C2P": "−C2P",
              "−P2C": "−P2C", "RoBERTa-ReImp": "RoBERTa-ReImp (base)"}
LABEL = re.compile("|".join(re.escape(k).replace("−", "[−-]") for k in ROW_LABELS))
SCORE = re.compile(r"(?<![\d.])\d\d\.\d(?![\d])")


def table4(text: str) -> dict[str, tuple[float, ...]]:
    """paper_map's copy of Table 4: row label -> (MNLI-m, MNLI-mm, SQuAD v1.1 F1, SQuAD v2.0 F1, RACE)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 6 and cells[0] in {*ROW_LABELS.values(), "DeBERTa (base)"}:
            rows[cells[0]] = tuple(float(c) for c in cells[1:])
    return rows


def check_quoted_scores(text: str, scores: dict, where: str = "<text>", python: bool = False) -> list[str]:
    flat = flatten(text, python)
    problems = []
    for m in LABEL.finditer(flat):
        row = ROW_LABELS[m.group(0).replace("-", "−", 1) if m.group(0).startswith("-") else m.group(0)]
        tail = flat[m.end():m.end() + 40]
        nxt = LABEL.search(tail)
        tail = tail[:nxt.start()] if nxt else tail
        tail = re.split(r"\|[ \t]*\n|\n[ \t]*\n", tail)[0]
        line = flat.count("\n", 0, m.start()) + 1
        for s in SCORE.finditer(tail):
            if float(s.group(0)) not in scores[row]:
                problems.append(f"{where}:{line}: found {s.group(0)} after {m.group(0)!r}, should be one of Table 4's "
                                f"{row} scores {scores[row]} (MNLI-m, MNLI-mm, SQuAD v1.1 F1, SQuAD v2.0 F1, RACE)")
    return problems


# ----------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def parts() -> dict:
    return parse_parts(PAPER_MAP.read_text(encoding="utf-8"))


def test_the_table_holds_the_facts_checked_against_the_paper(parts):
    """A few anchors read off arXiv v6 itself, so that the table cannot drift while the test passes."""
    facts = {("section", "3.2"): "Enhanced Mask Decoder", ("section", "4"): "SiFT",
             ("section", "5.2.1"): "Ablation", ("section", "3.1.1"): "Algorithm 1",
             ("equation", "1"): "MLM objective", ("equation", "3"): "relative distance",
             ("table", "4"): "ablation", ("table", "8"): "batch 2K", ("table", "10"): "Wikitext-103",
             ("algorithm", "1"): "gathering", ("appendix", "A.7"): "Model complexity",
             ("appendix", "A.8"): "Enhanced Mask Decoder", ("appendix", "A.9"): "Attention patterns"}
    for (kind, number), words in facts.items():
        assert (kind, number) in parts, f"book/paper_map.md's parts table lacks {kind} {number}"
        assert words.lower() in parts[kind, number].what.lower(), (
            f"book/paper_map.md: {kind} {number} reads {parts[kind, number].what!r}; arXiv v6 has {words!r} there")
    counts = {k: sum(1 for (kind, _) in parts if kind == k) for k in KINDS}
    assert counts == {"section": 18, "equation": 4, "table": 15, "figure": 5, "algorithm": 1, "appendix": 13}, (
        f"arXiv v6 has 18 sections, 4 equations, 15 tables, 5 figures, 1 algorithm, appendix A with A.1–A.11 "
        f"and A.3.1; the parts table counts {counts}")
    assert ("section", "3.3") not in parts and ("section", "4.1") not in parts and ("section", "3.4") not in parts


@pytest.mark.parametrize("page", [*sorted((ROOT / "book").glob("*.md")), ROOT / "README.md", ROOT / "results" / "README.md"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_book_pages_point_at_files_that_exist(page):
    """"where the course builds it" must be true too: every `wing/module.py` and lesson link resolves (the
    README's too, whose `build_book.py` and the like are in scripts/)."""
    text = page.read_text(encoding="utf-8")
    paths = re.findall(r"`((?:\w+/)*\w+\.py)`", text)  # library paths; DeBERTa/... is microsoft/DeBERTa's
    missing = [p for p in paths if not p.startswith("DeBERTa/") and not (ROOT / "deberta_edu" / p).exists()
               and not (ROOT / p).exists() and not (ROOT / "scripts" / p).exists()
               and not p.startswith("NN_")]  # NN_name.py: how a lesson's file is named
    missing += [p for p in re.findall(r"\]\(lessons/(\w+)\.ipynb\)", text)
                if not (ROOT / "notebooks" / f"{p}.py").exists()]
    assert not missing, (f"{page.relative_to(ROOT)} names files that do not exist: {sorted(set(missing))}; write library "
                         f"paths relative to deberta_edu/ (e.g. `model/emd.py`) and lessons as notebooks/NN_name")


@pytest.mark.parametrize("path", scanned_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_citation_is_in_the_table(path, parts):
    problems = check_text(path.read_text(encoding="utf-8"), parts, str(path.relative_to(ROOT)), path.suffix == ".py")
    assert not problems, ("citations that do not match book/paper_map.md's table of the paper's parts (arXiv v6):\n"
                          + "\n".join(problems) + "\nFix the citation; if the table is wrong, check the paper first.")


def test_the_paper_is_cited_with_the_year_of_its_entry_in_references_bib():
    """The lessons said "He et al., 2020" (the first arXiv version) where the book cites the ICLR paper of 2021:
    every "He et al., YEAR" names a year of one of references.bib's entries by He, Pengcheng et al."""
    bib = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    entries = re.findall(r"author\s*=\s*\{He, Pengcheng.*?year\s*=\s*\{(\d{4})\}", bib, flags=re.S)
    assert "2021" in entries, "references.bib has lost the DeBERTa paper (ICLR 2021)"
    wrong = [f"{path.relative_to(ROOT)}: He et al., {year}" for path in scanned_files()
             for year in re.findall(r"He et al\.,? \(?(\d{4})", path.read_text(encoding="utf-8")) if year not in entries]
    assert not wrong, f"years of no He et al. entry in book/references.bib ({sorted(set(entries))}): {wrong}"


@pytest.mark.parametrize("path", scanned_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_scores_quoted_from_table_4_are_the_papers(path):
    scores = table4(PAPER_MAP.read_text(encoding="utf-8"))
    problems = check_quoted_scores(path.read_text(encoding="utf-8"), scores, str(path.relative_to(ROOT)),
                                   path.suffix == ".py")
    assert not problems, "\n".join(problems)


def test_the_ablation_report_quotes_table_4():
    scores = table4(PAPER_MAP.read_text(encoding="utf-8"))
    assert len(scores) == 7, f"book/paper_map.md's copy of Table 4 should have 7 rows, found {sorted(scores)}"
    tree = ast.parse((ROOT / "deberta_edu" / "ablation" / "report.py").read_text(encoding="utf-8"))
    paper = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                 and any(getattr(t, "id", "") == "PAPER" for t in n.targets))
    rows = {"RoBERTa-ReImp_base": "RoBERTa-ReImp (base)", "DeBERTa_base": "DeBERTa (base)"}
    for variant, entry in paper.items():
        row = rows.get(entry["paper_row"], entry["paper_row"])
        m, race = scores[row][0], scores[row][-1]
        assert (entry["MNLI-m"], entry["RACE"]) == (m, race), (
            f"ablation/report.py PAPER[{variant!r}] quotes {entry['MNLI-m']}/{entry['RACE']}; Table 4's {row} "
            f"row is {m} MNLI-m / {race} RACE")


def test_lesson_6s_reading_of_the_two_piece_rows():
    """Lesson 6's exercise 3: each double removal scores below both of its single removals on MNLI-m and RACE,
    but not on MNLI-mm, where −(EMD+C2P) is above −C2P."""
    scores = table4(PAPER_MAP.read_text(encoding="utf-8"))
    for both, singles in {"−(EMD+C2P)": ("−EMD", "−C2P"), "−(EMD+P2C)": ("−EMD", "−P2C")}.items():
        for column in (0, 2, 3, 4):  # MNLI-m, SQuAD v1.1, SQuAD v2.0, RACE ("even more substantial loss", §5.2.1)
            assert all(scores[both][column] < scores[one][column] for one in singles), (both, column)
    assert scores["−(EMD+C2P)"][1] > scores["−C2P"][1]  # MNLI-mm
    text = re.sub(r"\n# ?", " ", (ROOT / "notebooks" / "06_pretraining_reproduction.py").read_text(encoding="utf-8"))
    assert "as the paper's two-piece rows are on MNLI-m and RACE" in text


def quoted_numbers(text: str) -> dict[str, str]:
    """paper_map's table of other quoted numbers: what -> value."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()]
    return {r[0]: r[1] for r in rows if len(r) == 2 and r[0].startswith("Table ")}


def test_lesson_3_quotes_tables_4_and_10_as_paper_map_has_them():
    scores, other = table4(PAPER_MAP.read_text(encoding="utf-8")), quoted_numbers(PAPER_MAP.read_text(encoding="utf-8"))
    text = re.sub(r"\s*\n# ?", " ", (ROOT / "notebooks" / "03_enhanced_mask_decoder.py").read_text(encoding="utf-8"))
    base, no_emd = scores["DeBERTa (base)"], scores["−EMD"]
    fmt = "{:.1f}".format
    assert (f"RACE {fmt(base[4])} → {fmt(no_emd[4])}, SQuAD v2.0 F1 {fmt(base[3])} → {fmt(no_emd[3])}, SQuAD v1.1 F1 "
            f"{fmt(base[2])} → {fmt(no_emd[2])}, MNLI-m/mm {fmt(base[0])}/{fmt(base[1])} → "
            f"{fmt(no_emd[0])}/{fmt(no_emd[1])}") in text
    assert (f"{other['Table 10, DeBERTa']} for DeBERTa against {other['Table 10, DeBERTa-AP']} for DeBERTa-AP "
            f"(RoBERTa {other['Table 10, RoBERTa']})") in text


def test_lesson_5_quotes_table_12_as_paper_map_has_it():
    other = quoted_numbers(PAPER_MAP.read_text(encoding="utf-8"))
    text = re.sub(r"\s*\n# ?", " ", (ROOT / "notebooks" / "05_virtual_adversarial_training.py").read_text(encoding="utf-8"))
    assert (f"{other['Table 12, DeBERTa 1.5B']} without SiFT and {other['Table 12, DeBERTa 1.5B + SiFT']} "
            "with it") in text


def test_a_wrong_number_is_caught(parts):
    """Take correct citations from the course, change one number in memory: the checker must say so."""
    glossary = (ROOT / "book" / "glossary.md").read_text(encoding="utf-8")
    right = "*Enhanced Mask Decoder* (§3.2, A.8)"
    assert right in glossary, "the glossary's EMD entry moved; pick another correct citation for this test"
    assert check_text(glossary, parts) == []
    wrong = check_text(glossary.replace(right, right.replace("§3.2", "§3.3")), parts, "glossary.md")
    assert len(wrong) == 1 and "§3.3" in wrong[0] and "should be §3.2" in wrong[0], wrong
    other_part = check_text(glossary.replace(right, right.replace("§3.2", "§3.1")), parts)
    assert len(other_part) == 1 and "should be §3.2" in other_part[0], other_part
    appendix = check_text(glossary.replace(right, right.replace("A.8", "A.9")), parts)
    assert len(appendix) == 1 and "should be A.8" in appendix[0], appendix
    emd = (ROOT / "deberta_edu" / "model" / "emd.py").read_text(encoding="utf-8")
    assert "(paper §3.2 and A.8)" in emd, "emd.py's docstring moved; pick another correct citation for this test"
    assert check_text(emd, parts, python=True) == []
    wrong = check_text(emd.replace("(paper §3.2 and A.8)", "(paper sec. 3.3 and A.8)"), parts, "emd.py", True)
    assert len(wrong) == 1 and wrong[0].startswith("emd.py:1: found 'sec. 3.3'") and "should be §3.2" in wrong[0]
    for text, fix in [("its ablation (Table 5) shows", "Table 4"), ("SiFT (sec. 3.4)", "§4"),
                      ("the EMD (§3.3)", "§3.2"), ("the MLM objective, eq. (2)", "eq. (1)"),
                      ("as in Algorithm 2", "Algorithm 1"), ("see appendix A.12", "A.")]:
        found = check_text(text, parts)
        assert len(found) == 1 and fix in found[0].split("should be")[1], (text, found)


def test_a_wrong_quoted_score_is_caught():
    scores = table4(PAPER_MAP.read_text(encoding="utf-8"))
    right = "−(EMD+C2P) (85.8 MNLI-m,\n# 68.1 RACE) and −(EMD+P2C) (85.8, 68.5)"
    assert check_quoted_scores(right, scores, python=True) == []
    wrong = check_quoted_scores(right.replace("68.5", "69.2"), scores, python=True)
    assert len(wrong) == 1 and "69.2" in wrong[0] and "−(EMD+P2C)" in wrong[0], wrong


@pytest.mark.parametrize("text, expected", [
    ("section 3.1, equation (3)", [("section", "3.1"), ("equation", "3")]),
    ("§5.2.1 and Table 4", [("section", "5.2.1"), ("table", "4")]),
    ("Tables 1–3", [("table", "1"), ("table", "2"), ("table", "3")]),
    ("eq. (2)–(4)", [("equation", "2"), ("equation", "3"), ("equation", "4")]),
    ("eq. 2 and 4", [("equation", "2"), ("equation", "4")]),
    ("section 4.1 and appendix\nA.2; the objective", [("section", "4.1"), ("appendix", "A.2")]),
    ("(appendix A.7's cost argument)", [("appendix", "A.7")]),
    ("§2.2; A.2, A.3", [("section", "2.2"), ("appendix", "A.2"), ("appendix", "A.3")]),
    ("Figures 3–5", [("figure", "3"), ("figure", "4"), ("figure", "5")]),
    ("our Table 2 and this section 5", []),
    ("Table 1 (ours) and Table 3 below", []),
    ("Miyato et al. (2017), section 3", []),
    ("the Transformer-XL paper's eq. 7", []),
    ("(Table 4, 85.8 MNLI-m)", [("table", "4")]),
    ("a table of 2k rows; x.eq(3); A.T @ B", []),
])
def test_what_counts_as_a_citation(text, expected):
    assert [(c.kind, c.number) for c in find_citations(text)] == expected
