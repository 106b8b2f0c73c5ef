"""Shards: packed arrays and tokenizers carried to a machine without network in one checked .tar.xz.

An archive holds ``MANIFEST.json`` first, {name: {"sha256", "size"}}, then the files under those names
(their place below the data root). ``import_shard`` trusts nothing in it until it has checked it:

1. the manifest is read (at most 1 MB) and every name checked as a plain relative path: no ``..``, no
   absolute path (``/dev/zero``), no backslash; nothing is opened under a name from the archive;
2. every other member must be a regular file listed in the manifest, once, of the listed size: links,
   devices, folders and unlisted files are refused, and the sizes must fit on the disk;
3. the files are extracted into a hidden temporary folder inside the destination, hashed as they are
   written, and only when every hash matches are they moved onto their final names.

So a damaged archive changes nothing, and an archive cannot write outside its destination.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from deberta_edu import files
from deberta_edu.facts import data_root

MANIFEST = "MANIFEST.json"
MAX_MANIFEST_BYTES = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _arcname(path: Path) -> str:
    """Inside the archive, files keep their place under the data root, so an import restores the cache."""
    try:
        return path.resolve().relative_to(data_root().resolve()).as_posix()
    except ValueError:
        return path.name


def export_shard(paths: Iterable[str | Path], out_file: str | Path) -> Path:
    """Write files (or folders) into one .tar.xz with a manifest of SHA-256 sums and sizes.

    A packed .npy brings its JSON sidecar along; hidden files (locks, temporary files) stay behind.
    The archive is written under a temporary name and renamed when complete.
    """
    found_files: list[Path] = []
    for p in map(Path, paths):
        found = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")) if p.is_dir() else [p]
        if not found or not all(f.is_file() for f in found):
            raise FileNotFoundError(f"Nothing to export at {p}: expected a file or a folder of files.")
        for f in found:
            found_files.append(f)
            if f.suffix == ".npy" and f.with_suffix(".json").exists():
                found_files.append(f.with_suffix(".json"))
    names: dict[str, Path] = {}
    for f in found_files:
        if names.setdefault(_arcname(f), f).resolve() != f.resolve():
            raise ValueError(
                f"Two files would share the name {_arcname(f)!r} in the archive: "
                f"{names[_arcname(f)]} and {f}. Export them in separate archives."
            )
    manifest = {name: {"sha256": sha256_file(f), "size": f.stat().st_size} for name, f in names.items()}

    out_file = Path(out_file)
    start = time.time()
    with files.atomic_write(out_file) as raw, tarfile.open(fileobj=raw, mode="w:xz", preset=6) as tar:
        body = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
        for name, f in tqdm(names.items(), desc="compressing", unit="file"):
            tar.add(f, arcname=name)
    size = out_file.stat().st_size
    raw_size = sum(entry["size"] for entry in manifest.values())
    print(
        f"{out_file}: {len(names)} files, {raw_size / 1e6:.1f} MB -> {size / 1e6:.1f} MB "
        f"in {time.time() - start:.0f} s"
    )
    return out_file


def check_name(name) -> str:
    """A manifest name: a plain relative POSIX path below the destination, or a ValueError."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise ValueError(f"the manifest names {name!r}, which is not a plain relative path")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or path.as_posix() != name or name == MANIFEST:
        raise ValueError(
            f"the manifest names {name!r}: only relative paths below the destination are accepted "
            "(no '..', no absolute path such as /dev/zero); this archive was not written by export_shard"
        )
    return name


def _read_manifest(tar: tarfile.TarFile, file) -> tuple[tarfile.TarInfo, dict[str, tuple[str, int | None]]]:
    """MANIFEST.json's member and {name: (sha256, size or None)}, every entry checked before anything else."""
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isreg() or first.size > MAX_MANIFEST_BYTES:
        raise ValueError(f"{file} does not start with a {MANIFEST} of at most 1 MB: it is not a shard of export_shard")
    try:
        manifest = json.loads(tar.extractfile(first).read())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"the {MANIFEST} of {file} is not valid JSON ({err}); copy the archive again") from err
    if not isinstance(manifest, dict) or not manifest:
        raise ValueError(f"the {MANIFEST} of {file} lists no files")
    checked = {}
    for name, entry in manifest.items():
        sha, size = (entry, None) if isinstance(entry, str) else (  # older shards list the hash alone
            (entry.get("sha256"), entry.get("size")) if isinstance(entry, dict) else (None, None))
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha) or not (
                size is None or (isinstance(size, int) and size >= 0)):
            raise ValueError(f"the {MANIFEST} of {file} has a malformed entry for {name!r}: {entry!r}")
        checked[check_name(name)] = (sha, size)
    return first, checked


def _members(tar: tarfile.TarFile, first: tarfile.TarInfo, manifest: dict, file) -> dict[str, tarfile.TarInfo]:
    """The archive's members, each a regular file the manifest lists once with that size; nothing else."""
    members: dict[str, tarfile.TarInfo] = {}
    for m in tar:
        if m is first:
            continue
        if m.name not in manifest:
            raise ValueError(f"{file} holds {m.name!r}, which its {MANIFEST} does not list; nothing was imported")
        if not m.isreg():
            raise ValueError(f"{file} holds {m.name!r} as a link, device or folder, not a file; nothing was imported")
        if m.name in members:
            raise ValueError(f"{file} holds {m.name!r} twice; nothing was imported")
        if manifest[m.name][1] not in (None, m.size):
            raise ValueError(
                f"{file}: {m.name!r} is {m.size:,} bytes, its {MANIFEST} says {manifest[m.name][1]:,}; "
                "the archive is damaged; copy it again"
            )
        members[m.name] = m
    missing = sorted(set(manifest) - set(members))
    if missing:
        raise ValueError(f"{file} lacks {', '.join(missing)}, which its {MANIFEST} lists; copy the archive again")
    return members


def import_shard(file: str | Path, dest: str | Path | None = None) -> list[Path]:
    """Unpack an export_shard archive into dest (default: the data root), each file checked before it lands."""
    dest = Path(dest) if dest is not None else data_root()
    if not Path(file).is_file():
        raise FileNotFoundError(f"No archive at {file}; write one with `python -m deberta_edu.packing export`.")
    try:
        with tarfile.open(file, "r:xz") as tar:
            return _import(tar, file, dest)
    except (tarfile.TarError, EOFError, lzma.LZMAError) as err:
        raise ValueError(
            f"{file} is not a readable .tar.xz shard ({type(err).__name__}: {err}); copy it again. Nothing was imported."
        ) from err


def _import(tar: tarfile.TarFile, file, dest: Path) -> list[Path]:
    first, manifest = _read_manifest(tar, file)
    members = _members(tar, first, manifest, file)
    targets = [_target(dest, name) for name in members]
    dest.mkdir(parents=True, exist_ok=True)
    need, free = sum(m.size for m in members.values()), shutil.disk_usage(dest).free
    if need > free:
        raise ValueError(f"{file} unpacks to {need / 1e6:,.1f} MB, but {dest} has {free / 1e6:,.1f} MB free")
    with tempfile.TemporaryDirectory(dir=dest, prefix=".import-") as tmp:
        staged = [_stage(tar, m, Path(tmp) / str(i), manifest[m.name][0], file) for i, m in enumerate(members.values())]
        for path, target in zip(staged, targets, strict=True):  # every file checked: now they land
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    return targets


def _target(dest: Path, name: str) -> Path:
    """``dest / name``, refused when a link already there (the file, or a folder on the way) leads elsewhere."""
    path = dest
    for part in PurePosixPath(name).parts:
        path = path / part
        if path.is_symlink():
            raise ValueError(f"{path} is a link; an import never writes through links. Remove it and import again.")
    return path


def _stage(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path, sha: str, file) -> Path:
    """Extract one member to ``path`` (a name of ours, never the archive's), hashing as it is written."""
    digest = hashlib.sha256()
    source = tar.extractfile(member)
    with open(path, "wb") as out:
        while block := source.read(CHUNK):
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != sha:
        raise ValueError(
            f"{member.name} does not match its checksum in {file}: the archive is damaged; copy it again. "
            "Nothing was imported."
        )
    return path
