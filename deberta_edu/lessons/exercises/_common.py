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
    """The learner's function on one case; NotImplementedError means "not attempted yet". Any other error is
    raised again with the case it happened on (the learner's own traceback stays above it)."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise _NotYet from None
    except Exception as err:
        shown = ", ".join(_describe(a) for a in args)
        raise AssertionError(f"your function raised {type(err).__name__}: {err}\n  when called with ({shown})") from err


def _describe(arg) -> str:
    """One argument of a case, short: a tensor or array by its shape and dtype, anything else by its repr."""
    if isinstance(arg, (torch.Tensor, np.ndarray)):
        return f"{type(arg).__name__} of shape {tuple(arg.shape)}, {arg.dtype}"
    text = repr(arg)
    return text if len(text) <= 60 else f"{type(arg).__name__}"


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
    wrong = {k: v for k, v in answers.items() if not isinstance(v, (bool, np.bool_))}
    if wrong:  # "False" is a string, and a non-empty string is true
        raise AssertionError(f"{name}: answer each with True or False (no quotes); got {wrong!r}")
    return None


def _one_mistake(found: list[list[str]]) -> str | None:
    """The known mistake that fits every failing case (``found``: the names each one fits), or None: one that
    fits a single case may do so by chance (a batch of one, a config where two terms cost the same)."""
    return next((m for m in found[0] if all(m in f for f in found[1:])), None) if found else None


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


def _as_number(x) -> float | None:
    """A number (an int, a float, a tensor or array holding one number), else None: a string such as "5" is
    text, not a number, and an array of several is not one."""
    if isinstance(x, (str, bytes)):
        return None
    if isinstance(x, (np.ndarray, np.generic, torch.Tensor)):  # numpy and torch alike, whatever their shape
        arr = _as_array(x)
        return float(arr.reshape(())) if arr.size == 1 and np.issubdtype(arr.dtype, np.number) else None
    try:
        return float(x)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of more than one number
        return None


def _as_int(x) -> int | None:
    """A whole number (an int, a 0-d tensor, or a float such as 3.0), else None: 3.5 is not rounded to 3."""
    value = _as_number(x)
    return int(value) if value is not None and value.is_integer() else None


def _shown_int(got: int | None, answer) -> str:
    """How a message shows an answer that ``_as_int`` read as ``got``."""
    return str(got) if got is not None else f"{answer!r}, not a whole number"


def _as_array(x) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):  # numpy has no such type
            x = x.float()
        return x.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        return None
