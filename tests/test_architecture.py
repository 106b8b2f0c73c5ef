"""The house rules of deberta_edu/, checked on its source: wings, arrows, sizes; and what notebooks may hold.

Wings, from the bottom up (deberta_edu/__init__.py says the same in words):

    facts, figures, files   shared by every wing; import nothing of the package
    model, data      side by side: neither imports the other
    training         imports model and data
    ablation         imports training (and what training may import)
    lessons          imports anything; nothing imports it

The façade (deberta_edu/__init__.py and the thin command aliases beside it) re-exports; no wing imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "deberta_edu"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))

SHARED = {"facts", "figures", "files"}
MAY_IMPORT = {
    "shared": set(),
    "model": {"shared", "model"},
    "data": {"shared", "data"},
    "training": {"shared", "model", "data", "training"},
    "ablation": {"shared", "model", "data", "training", "ablation"},
    "lessons": {"shared", "model", "data", "training", "ablation", "lessons"},
}
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60
LONG_NOTE = "# long:"  # a function may run longer when the line before its def says why
MAX_NOTEBOOK_FUNCTION_LINES = 30
# modules still being split during the re-house (emptied by its last commit)
PENDING: set[str] = set()


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def wing(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "facade"
    if parts[1] in SHARED:
        return "shared"
    if parts[1] in MAY_IMPORT:
        return parts[1]
    return "facade"  # a command alias beside __init__.py


def imports_of(path: Path) -> set[str]:
    """Every deberta_edu module a file imports, at the top or inside a function, resolved to its full name."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "deberta_edu"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "deberta_edu":
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                sub = f"{target}.{alias.name}"
                found.add(sub if _is_module(sub) else target)
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


SOURCES = sorted(PACKAGE.rglob("*.py"))
GRAPH = {module_name(p): imports_of(p) for p in SOURCES}


def test_the_wings_exist():
    for name in ("model", "data", "training", "ablation", "lessons"):
        init = PACKAGE / name / "__init__.py"
        assert init.exists(), f"deberta_edu/{name}/ is a wing and needs an __init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 80, f"deberta_edu/{name}/__init__.py must say what lives in the wing"


@pytest.mark.parametrize("module", sorted(GRAPH), ids=str)
def test_arrows_point_down(module):
    here = wing(module)
    for target in sorted(GRAPH[module]):
        there = wing(target)
        if here == "facade":
            continue
        assert there != "facade", (
            f"{module} imports {target}: wings never import the façade (deberta_edu/__init__.py or a "
            "command alias); import the module from its wing"
        )
        assert there in MAY_IMPORT[here], (
            f"{module} ({here}) imports {target} ({there}): against the wing order. "
            f"A {here} module may import only {sorted(MAY_IMPORT[here])}."
        )


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    # a package's __init__ importing its own modules is not a cycle of modules; leave those edges out
    graph = {m: {t for t in ts if not (m.startswith(t + ".") and _is_package(t))} for m, ts in GRAPH.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _is_package(name: str) -> bool:
    return (ROOT.joinpath(*name.split(".")) / "__init__.py").exists()


def test_the_checks_can_fail():
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert wing("deberta_edu.data.corpus") == "data" and wing("deberta_edu.facts") == "shared"
    assert "lessons" not in MAY_IMPORT["training"] and "model" not in MAY_IMPORT["data"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_are_short(path):
    if str(path.relative_to(PACKAGE)) in PENDING:
        pytest.skip("being split")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_MODULE_LINES, (
        f"{path.relative_to(ROOT)} has {len(lines)} lines (at most {MAX_MODULE_LINES}): split it by concept"
    )
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            noted = first >= 2 and lines[first - 2].strip().startswith(LONG_NOTE)
            assert length <= MAX_FUNCTION_LINES or noted, (
                f"{path.relative_to(ROOT)}:{node.lineno} {node.name} has {length} lines (at most "
                f"{MAX_FUNCTION_LINES}, or a '{LONG_NOTE} why' comment on the line before it)"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_narrate_and_the_library_computes(path):
    if path.stem in PENDING:
        pytest.skip("being moved into the library")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        assert not isinstance(node, ast.ClassDef), (
            f"{path.name}:{node.lineno} defines class {node.name}: classes live in the library"
        )
        if isinstance(node, ast.FunctionDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_NOTEBOOK_FUNCTION_LINES, (
                f"{path.name}:{node.lineno} {node.name} has {length} lines (at most "
                f"{MAX_NOTEBOOK_FUNCTION_LINES} in a notebook): move it into deberta_edu/"
            )
    assert "DEBERTA_EDU_SMOKE\")" not in path.read_text() and "environ" not in path.read_text(), (
        f"{path.name} reads the environment itself: use deberta_edu.facts.smoke()"
    )
