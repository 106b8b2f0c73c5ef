"""Files written never half-written, and one builder at a time: what the data pipeline and the checkpoints share.

Every file is written to a temporary name in its own folder and renamed onto its final name
(``os.replace``, atomic on POSIX): a reader, or a second process, sees the old file or the whole new
one, never a torn one, and a process killed mid-write leaves only a hidden ``.<name>.<pid>.*.tmp``.
Builds that several processes may start at once (a packed dataset, a tokenizer, a prepared corpus)
hold an exclusive ``fcntl.flock`` on a hidden lock file: the second waits, then finds the work done.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

TEMP_SUFFIX = ".tmp"


def temp_name(path: Path) -> Path:
    """A fresh hidden name beside ``path``: ``.<name>.<pid>.<random>.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write; it becomes ``path`` only when the block ends without an error.

    Created with mode 0o666, so the umask decides the permissions, as for any file the user writes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def as_saved(value):
    """``value`` as a JSON file gives it back (tuples become lists, keys strings): what to compare a file with."""
    return json.loads(json.dumps(value))


def check_not_a_file(folder: str | Path, option: str = "--out") -> None:
    """Refuse a folder argument that names an existing file (ValueError, saying so); a missing one is fine."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option} {folder} is a file; name a folder")


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, array)


def copy(src: str | Path, dst: str | Path) -> None:
    with open(src, "rb") as source, atomic_write(dst) as f:
        shutil.copyfileobj(source, f, 1 << 20)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(folder: Path, name: str = "") -> int:
    """Remove the temporary files of ``name`` (default: of any file) in ``folder`` that a killed process left.

    A temporary name carries its writer's pid (``temp_name``): the file of a process that is still running
    is kept, so this is safe without a lock. Returns how many were removed.
    """
    removed = 0
    if folder.is_dir():
        for tmp in folder.glob(f".{name}*{TEMP_SUFFIX}"):
            pid = tmp.name[: -len(TEMP_SUFFIX)].split(".")[-2]
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                continue
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


@contextlib.contextmanager
def locked(lock_file: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` for the block; a second process waits here, saying so.

    The lock belongs to the open file: it is released when the block ends or the process dies (even by
    kill -9), so a crash never leaves a stale lock behind.
    """
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that is building {what} (lock: {lock_file})", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive(lock_file: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` for the block, or fail at once naming the process that holds it.

    For work that must not wait its turn (two trainers writing one output folder): the second is refused
    with a ``RuntimeError``. The file records the holder's pid; the lock goes when the process dies.
    """
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().decode("ascii", "replace").strip() or "unknown"
            raise RuntimeError(f"{what} is in use by another process (pid {holder}; lock: {lock_file}); "
                               "wait for it to finish, or use another folder") from None
        f.truncate(0)
        f.write(str(os.getpid()).encode())
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


def lock_file(folder: Path) -> Path:
    """The hidden lock file beside ``folder`` (outside it, so exporting the folder never carries it)."""
    return folder.parent / f".{folder.name}.lock"
