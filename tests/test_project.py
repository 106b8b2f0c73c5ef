"""Project hygiene: the conda and pip routes list the same packages."""

import re
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_requirements() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta.get("optional-dependencies", {}).values():
        reqs += extra
    return {_name(r): r.replace(" ", "") for r in reqs}


def _environment_pip_requirements() -> dict[str, str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    reqs = []
    for line in lines[start + 1:]:
        m = re.match(r"^\s+- (.+)$", line)
        if not m:
            break
        if not m.group(1).startswith("-"):  # skip "-e ." and other options
            reqs.append(m.group(1).strip())
    return {_name(r): r.replace(" ", "") for r in reqs}


def test_environment_yml_and_pyproject_list_the_same_packages():
    pip_route, conda_route = _pyproject_requirements(), _environment_pip_requirements()
    assert set(pip_route) == set(conda_route), (
        f"only in pyproject.toml: {sorted(set(pip_route) - set(conda_route))}; "
        f"only in environment.yml: {sorted(set(conda_route) - set(pip_route))}"
    )
    for name in pip_route:
        assert pip_route[name] == conda_route[name], f"{name}: {pip_route[name]} vs {conda_route[name]}"


def test_torch_is_pinned():
    assert _pyproject_requirements()["torch"] == "torch==2.13.0"
