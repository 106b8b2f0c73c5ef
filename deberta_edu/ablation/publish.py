"""Lesson 6, a report's files: results.json, comparison.md and the two figures, rebuilt from the run files.

``write_report(folder)`` is called after every run that ends (without the figures, which take a few seconds)
and once at the end; ``python -m deberta_edu.reproduce --rebuild DIR`` calls it too.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import markdown, plots, report


def write_report(folder: str | Path, figures: bool = True) -> dict:
    """Rebuild results.json and comparison.md (and the figures) of ``folder`` from its run files."""
    folder = Path(folder)
    results = report.summarize(folder)
    results["files"] = [report.RESULTS_FILE, report.COMPARISON_FILE]
    results["files"] += [report.CURVES_FILE, report.SUMMARY_FILE] if figures else []
    (folder / report.COMPARISON_FILE).write_text(markdown.comparison(results), encoding="utf-8")
    if figures:
        plots.save(results, folder / report.CURVES_FILE, folder / report.SUMMARY_FILE)
    tmp = folder / f".{report.RESULTS_FILE}.tmp"
    tmp.write_text(json.dumps(results, indent=1, ensure_ascii=False, allow_nan=False, default=_refuse) + "\n",
                   encoding="utf-8")
    tmp.replace(folder / report.RESULTS_FILE)
    return results


def _refuse(value):
    raise TypeError(f"cannot write {value!r} to results.json")
