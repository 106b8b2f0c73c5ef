"""What every checker shares: running the learner's function, collecting failures, the result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

SHOW = 5  # failing cases listed in a message


@dataclass
class CheckResult:
    name: str
    cases: int
    passed: bool
    attempted: bool = True
    failures: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    def _ipython_display_(self):
        """In a notebook the checker has already printed its verdict; show nothing more."""


class _NotYet(Exception):
    pass


def _call(fn, *args):
    """The learner's function on one case; NotImplementedError means "not attempted yet"."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise _NotYet from None


def _finish(name: str, cases: int, failures: list[str], hint: str = "") -> CheckResult:
    if failures:
        shown = "\n".join(f"  - {f}" for f in failures[:SHOW])
        more = f"\n  … and {len(failures) - SHOW} more" if len(failures) > SHOW else ""
        raise AssertionError(
            f"{name}: {len(failures)} of {cases} cases fail.\n{shown}{more}"
            + (f"\nHint: {hint}" if hint else "")
        )
    print(f"✓ {name}: all {cases} cases pass")
    return CheckResult(name, cases, True)


def _not_attempted(name: str, why: str = "your function raises NotImplementedError") -> CheckResult:
    print(f"… {name}: not attempted yet ({why}). Write your answer, then run this cell again.")
    return CheckResult(name, 0, False, attempted=False)


def _answers_pending(name: str, answers, questions: dict, meaning: str) -> CheckResult | None:
    """Check the form of a dict of True/False answers: a "not attempted" result while any is None, else None."""
    if not isinstance(answers, dict) or set(answers) != set(questions):
        raise AssertionError(
            f"{name}: give a dict with exactly the keys {list(questions)}, each {meaning}; got {answers!r}"
        )
    if any(v is None for v in answers.values()):
        return _not_attempted(name, "some answers are still None")
    return None


def _checker(run: Callable[[Callable], CheckResult]):
    """Wrap a checker so that an unfinished function gives a friendly note instead of an error."""

    def check(fn):
        try:
            return run(fn)
        except _NotYet:
            return _not_attempted(run.__name__)

    check.__name__ = run.__name__
    check.__doc__ = run.__doc__
    return check


def _as_int(x) -> int | None:
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


def _as_array(x) -> np.ndarray | None:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        return None
