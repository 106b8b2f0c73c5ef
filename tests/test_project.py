"""Project hygiene: the conda and pip routes list the same packages; the Makefile sets the smoke size where it should."""

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


def _smoke_seen_by(target: str, tmp_path, **env) -> str:
    """What DEBERTA_EDU_SMOKE the commands of ``make target`` see, with a stand-in .venv whose jupyter and
    python print it (and an install stamp newer than the Makefile, so nothing is installed)."""
    import os
    import subprocess

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    for tool in ("jupyter", "python"):
        (venv / "bin" / tool).write_text('#!/bin/sh\necho "smoke=[${DEBERTA_EDU_SMOKE-unset}]"\n')
        (venv / "bin" / tool).chmod(0o755)
    (venv / ".installed").touch()
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBERTA_EDU_SMOKE", "MAKEFLAGS", "MAKELEVEL")}
    out = subprocess.run(["make", "-s", "-C", str(ROOT), target, f"VENV={venv}"], env={**clean, **env},
                         capture_output=True, text=True, check=True).stdout
    return re.search(r"smoke=\[(\w*)\]", out).group(1)


def test_make_lab_runs_the_lessons_at_full_size_and_the_checks_at_smoke_size(tmp_path):
    assert _smoke_seen_by("lab", tmp_path) == "unset"  # the README: `make lab` leaves it unset
    assert _smoke_seen_by("lab", tmp_path, DEBERTA_EDU_SMOKE="1") == "1"  # a learner's own choice is kept
    assert _smoke_seen_by("notebooks", tmp_path) == "1" and _smoke_seen_by("unit", tmp_path) == "1"
    assert _smoke_seen_by("notebooks", tmp_path, DEBERTA_EDU_SMOKE="0") == "0"


def test_pages_print_paths_inside_the_project_relative_to_it(tmp_path, monkeypatch):
    """A built page shows data/checkpoints/lesson4, not the folder of the machine (a CI clone) that built it."""
    from deberta_edu import facts

    assert facts.shown_path(ROOT / "data" / "checkpoints" / "lesson4") == "data/checkpoints/lesson4"
    monkeypatch.chdir(ROOT / "notebooks")  # where the pages run: a relative path is resolved first
    assert facts.shown_path("../results/course-model") == "results/course-model"
    assert facts.shown_path(tmp_path / "run") == str(tmp_path / "run")  # outside the project: as it is


def test_lesson_6_says_no_gpu_run_is_committed_only_while_none_is():
    """Lesson 6 says the GPU path "has not yet been run on a GPU, so there is no results/ablation-gpu/ to read".
    Checked against what git holds (a learner's own run into results/ must not break the lesson): when a GPU run
    is committed, this fails until the sentence changes."""
    import subprocess

    lesson = (ROOT / "notebooks" / "06_pretraining_reproduction.py").read_text(encoding="utf-8")
    says_none = "there is no\n# `results/ablation-gpu/` to read" in lesson
    try:
        tracked = subprocess.run(["git", "ls-files", "results/ablation-gpu"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # a copy without git: what the folder holds
        tracked = [str(p) for p in (ROOT / "results" / "ablation-gpu").glob("**/*")]
    assert says_none != bool(tracked), (says_none, tracked[:3])
