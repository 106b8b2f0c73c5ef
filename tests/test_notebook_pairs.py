"""Every lesson is a jupytext pair: notebooks/NN_name.py (edited by people) and NN_name.ipynb (opened by learners).

The test regenerates each notebook from its .py in memory and compares cell types, sources and tags with the
committed .ipynb, so an edit on one side without `jupytext --sync` fails here. Committed notebooks carry no
outputs and no execution counts: CI and learners run them, git stores only the source.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
IPYNBS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
SYNC = "run `.venv/bin/jupytext --sync notebooks/{name}.py` (or --to ipynb) to bring the pair back in sync"


def _cells(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def test_there_are_lessons():
    assert SOURCES, f"no notebooks/NN_*.py found in {NOTEBOOKS}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_py_has_a_paired_ipynb_in_sync(source: Path):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing; " + SYNC.format(name=source.stem)
    text = source.read_text(encoding="utf-8")
    assert "formats: ipynb,py:percent" in text, (
        f"{source.name}: the jupytext header must pair ipynb,py:percent"
    )
    expected = jupytext.reads(text, fmt="py:percent")
    committed = nbformat.read(ipynb, as_version=4)
    want, have = _cells(expected), _cells(committed)
    for n, (a, b) in enumerate(zip(want, have, strict=False)):
        assert a == b, (
            f"{source.stem}: cell {n} differs between .py and .ipynb\n  .py:    {a[0]} {a[2]} {a[1][:200]!r}\n"
            f"  .ipynb: {b[0]} {b[2]} {b[1][:200]!r}\n" + SYNC.format(name=source.stem)
        )
    assert len(want) == len(have), (
        f"{source.stem}: {len(want)} cells in .py, {len(have)} in .ipynb; " + SYNC.format(name=source.stem)
    )
    assert committed.metadata.get("kernelspec", {}).get("name") == "python3", (
        f"{ipynb.name}: kernelspec python3"
    )


@pytest.mark.parametrize("ipynb", IPYNBS, ids=lambda p: p.stem)
def test_ipynb_has_a_py_and_no_outputs(ipynb: Path):
    assert ipynb.with_suffix(".py").exists(), f"{ipynb.name} has no paired .py source"
    nb = nbformat.read(ipynb, as_version=4)
    dirty = [n for n, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, (
        f"{ipynb.name}: cells {dirty} carry outputs or execution counts; commit notebooks without outputs "
        f"(`jupyter nbconvert --clear-output --inplace {ipynb.relative_to(NOTEBOOKS.parent)}`)"
    )


def test_the_check_catches_a_drift(tmp_path: Path):
    """The comparison itself works: an edited .py no longer matches its old .ipynb."""
    py = "# %%\nx = 1\n\n# %% [markdown]\n# hello\n"
    nb = jupytext.reads(py, fmt="py:percent")
    edited = jupytext.reads(py.replace("x = 1", "x = 2"), fmt="py:percent")
    assert _cells(nb) != _cells(edited)
    assert _cells(nb) == _cells(jupytext.reads(jupytext.writes(nb, fmt="ipynb"), fmt="ipynb"))
