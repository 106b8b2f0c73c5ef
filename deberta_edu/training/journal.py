"""A long experiment's finished draws, kept as each ends, so that a cut run resumes where it stopped.

``downstream`` (26 minutes on 2 cores), ``selection`` (19) and lesson 5's ``finetune`` command (22) are loops
over draws or runs that write one JSON at the end. With a journal, each finished draw is also one line of a
JSON-lines file beside that JSON (the first line holds the settings the draws depend on). Run the same command
again in the same folder and the draws already there are read back instead of recomputed. Every draw seeds all it
draws (its labels, its random weights, its fine-tuning), so a resumed run writes the numbers an uncut one would
(tests/test_journal.py and tests/test_finetune.py check it on small experiments). A command whose settings differ
refuses the file rather than mixing two experiments (the settings are what the command records, not its code:
after changing the code, remove the file); the file is removed once the JSON is written. Lines are appended one by
one as draws end: a crash loses at most the draw it was in (and a line it cut short is dropped on reading).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from deberta_edu import files

T = TypeVar("T")


@dataclass
class Journal:
    """Finished draws by key (``within`` gives a view whose keys carry a prefix, sharing the same file and draws).
    ``Journal()`` keeps nothing on disk: every draw is computed, as without a journal."""

    path: Path | None = None
    kept: dict = field(default_factory=dict)  # key -> {"value", "seconds"[, "read back": True if from the file]}
    prefix: str = ""

    @classmethod
    def open(cls, path: str | Path, settings: dict) -> Journal:
        """The journal at ``path``: its draws if it was written with the same ``settings``, else a new file.
        Raises ValueError when the file holds draws made with other settings."""
        path, settings = Path(path), files.as_saved(settings)
        lines = []
        for text in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:  # the line a crash cut short: that draw is made again
                continue
        if not lines or "settings" not in lines[0]:  # no file, or cut before its first line was whole
            files.write_text(path, json.dumps({"settings": settings}) + "\n")
            return cls(path)
        saved = lines[0]["settings"]
        if saved != settings:
            differ = sorted(k for k in set(settings) | set(saved) if saved.get(k) != settings.get(k))
            raise ValueError(f"{path} holds draws made with other settings (differing: {', '.join(differ)}); "
                             "remove it to start afresh, or rerun the command that wrote it to resume")
        # rewritten whole (atomically: a kill leaves the old file), so that the next draw does not land on the end
        # of a line cut short
        files.write_text(path, "".join(json.dumps(line) + "\n" for line in lines))
        return cls(path, {e["key"]: {"value": e["value"], "seconds": e["seconds"], "read back": True}
                          for e in lines[1:] if "key" in e})

    @classmethod
    def for_command(cls, path: str | Path, settings: dict, tell: Callable[[str], None] = print) -> Journal:
        """``open`` for a command line: a refusal ends the command with its one-line reason, and the command says
        where its draws are kept."""
        try:
            journal = cls.open(path, settings)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        tell(f"each draw is kept in {journal.path} as it ends ({len(journal.kept)} there already)")
        return journal

    def within(self, prefix: str) -> Journal:
        """A view of the same journal whose keys start with ``prefix`` (an experiment inside the command)."""
        return replace(self, prefix=self.prefix + prefix)

    def __contains__(self, key: str) -> bool:
        return self.prefix + key in self.kept

    def run(self, key: str, compute: Callable[[], T]) -> T:
        """The kept value of draw ``key``, or ``compute()``, appended to the file as soon as it is made."""
        if key in self:
            return self.kept[self.prefix + key]["value"]
        start = time.time()
        value = compute()
        entry = {"value": value, "seconds": round(time.time() - start, 1)}
        self.kept[self.prefix + key] = entry
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"key": self.prefix + key, **entry}) + "\n")
        return value

    def read_back(self) -> dict:
        """What a result should say about the draws an earlier command made: {} for an uncut run, else how many
        were read back and the seconds they had taken."""
        before = [e["seconds"] for e in self.kept.values() if e.get("read back")]
        return {"draws": len(before), "seconds": round(sum(before))} if before else {}

    def wall_time(self, started: float) -> float:
        """The experiment's seconds: since ``started`` (a time.time() of this command), and those of the draws an
        earlier, cut command made."""
        return time.time() - started + self.read_back().get("seconds", 0)

    def finish(self, path: str | Path, result: dict) -> dict:
        """Write ``result`` to ``path`` atomically, with ``read_back`` as "resumed" if draws were read back; the
        journal's file goes. Returns what was written."""
        resumed = self.read_back()
        written = {**result, **({"resumed": resumed} if resumed else {})}
        files.write_text(path, json.dumps(written, indent=2) + "\n")
        self.close()
        return written

    def close(self) -> None:
        """The experiment is written: the journal's file goes."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def replaced_by_other_settings(parser, args, path=None, ignore=("out", "overwrite")) -> str | None:
    """What is wrong if ``path`` (default ``args.out``) holds the results of another command line (read back with
    ``parser`` from its "command" and compared flag by flag, ``ignore`` aside): this run would replace them. None
    when it does not, or when ``args.overwrite`` asks to replace them."""
    import shlex

    if args.overwrite:
        return None
    try:
        command = shlex.split(json.loads(Path(path or args.out).read_text())["command"])
        before = parser.parse_args(command[3 if command[:2] == ["python", "-m"] else 1:])
    except (OSError, ValueError, KeyError, TypeError, SystemExit):  # no such file, or not a results file
        return None
    differ = [k for k, v in vars(args).items() if k not in ignore and vars(before).get(k) != v]
    if not differ:
        return None
    return (f"{path or args.out} holds results of other settings (" + ", ".join("--" + k.replace("_", "-") for k in differ)
            + "); choose another --out, or add --overwrite to replace them")
