"""A Sphinx extension of the book: the references page labels its entries as the pages cite them.

The pages cite author-year ("He et al. [2021]", ``bibtex_reference_style: author_year``), but pybtex's styles
label the list alphabetically ("[HLGC21]"), so a reader could not match a citation with its entry by eye.
The ``authoryear`` style here is pybtex's ``plain`` (sorted by author, then year) with labels "He et al.,
2021", "Kudo and Richardson, 2018", "Ba et al., 2016"; a label two entries would share gets a, b.
"""

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def author_year(entry) -> str:
    """ "Surname, year", "A and B, year" or "A et al., year" of one pybtex entry (its editors if no authors)."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [" ".join(p.last_names) or " ".join(p.first_names) for p in people]
    year = entry.fields.get("year", "n.d.")
    if not names:
        return year
    who = names[0] if len(names) == 1 else " and ".join(names) if len(names) == 2 else f"{names[0]} et al."
    return f"{who}, {year}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [author_year(e) for e in entries]
        counts, seen = Counter(labels), Counter()
        for label in labels:
            if counts[label] > 1:  # "Jiang et al., 2020a", "… 2020b"
                seen[label] += 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            else:
                yield label


class AuthorYearStyle(PlainStyle):
    default_label_style = AuthorYearLabels


def setup(app):
    register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabels)
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
