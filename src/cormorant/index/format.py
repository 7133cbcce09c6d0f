"""The on-disk index directory: ``meta.json`` with checksums, written atomically.

An index is a directory. Everything is first written into a temporary sibling directory, then
``meta.json`` (holding a SHA-256 of every other file) is written last and the directory renamed
into place, so a crash leaves either the old index or the new one, never half of one. Loading
checks the format version and every checksum and says what is wrong.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cormorant.errors import IndexFormatError

FORMAT_VERSION = 1
META = "meta.json"
MAGIC = "cormorant-index"
TMP_SUFFIX = ".tmp"
OLD_MARK = ".old-"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    """Write ``meta.json`` with the checksums of every other file under ``directory``."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != META
                   and p.parent == directory)
    record = {"format": MAGIC, "version": FORMAT_VERSION, **meta,
              "checksums": {p.name: sha256_file(p) for p in files}}
    (directory / META).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_meta(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """Read and check ``meta.json``: magic, version, and (if ``verify``) every file's checksum.

    Raises:
        IndexFormatError: a message naming the missing, foreign, outdated or corrupt part.
    """
    directory = Path(directory)
    if not directory.is_dir():
        moved = [p for p in leftovers(directory) if OLD_MARK in p.name]
        hint = (f"; a replace of it was cut off and left the previous one at {moved[-1]}:"
                f" rename that back to {directory.name}") if moved else ""
        raise IndexFormatError(f"index not found: {directory} is not a directory{hint}")
    meta_path = directory / META
    if not meta_path.is_file():
        raise IndexFormatError(f"{directory} is not a cormorant index (no {META})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IndexFormatError(f"{meta_path} is corrupt (not valid JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != MAGIC:
        raise IndexFormatError(f"{directory} is not a cormorant index ({META} is foreign)")
    if meta.get("version") != FORMAT_VERSION:
        raise IndexFormatError(f"{directory} has index format version {meta.get('version')};"
                               f" this cormorant reads version {FORMAT_VERSION}: rebuild it")
    if verify:
        for name, expected in meta.get("checksums", {}).items():
            path = directory / name
            if not path.is_file():
                raise IndexFormatError(f"{directory} is incomplete: {name} is missing")
            if sha256_file(path) != expected:
                raise IndexFormatError(f"{path} is corrupt or truncated (checksum mismatch)")
    return meta


@contextmanager
def atomic_directory(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` once the block succeeds.

    A directory that ``target`` already names is swapped out in one step where the system can
    (Linux), so a crash at any moment leaves ``target`` naming the old directory or the new
    one; elsewhere the old one is moved aside first, and a crash between the two renames
    leaves it at ``.NAME.old-PID`` (:func:`read_meta` then says so).

    Example:
        >>> with atomic_directory("/tmp/idx", overwrite=True) as tmp:  # doctest: +SKIP
        ...     (tmp / "meta.json").write_text("{}")

    Raises:
        IndexFormatError: ``target`` exists and ``overwrite`` is false.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise IndexFormatError(f"{target} already exists (use --overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX,
                                dir=target.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it private; an index is shared data
        if not target.exists():
            os.replace(tmp, target)
        elif exchange_paths(tmp, target):
            pass  # tmp names the old directory now; the finally below removes it
        else:
            # Move the old one aside first: rename cannot replace a non-empty directory.
            old = target.with_name(f".{target.name}{OLD_MARK}{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        fsync_dir(target.parent)  # the rename itself must survive a power cut
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap what two paths name in one atomic step; False where the system or its file
    system cannot (the caller then renames twice).

    Written by hand because Python's ``os`` has no ``renameat2`` and no maintained package
    offers it: this is the one libc call, through ctypes (Linux 3.15+, glibc 2.28+).
    """
    rename = _renameat2()
    if rename is None:
        return False
    if rename(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
              _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # an old kernel, or a file system without the flag
    raise OSError(code, os.strerror(code), str(second))


@functools.cache
def _renameat2() -> Any:
    """libc's ``renameat2`` with its argument types set, once; None where libc lacks it."""
    rename = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if rename is not None:
        rename.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
    return rename


def leftovers(target: str | Path) -> list[Path]:
    """What replacing ``target`` left beside it when a process was killed mid-way: a
    temporary directory being written or being removed, or (where the swap takes two
    renames) the old directory moved aside. Only the holder of ``target``'s write lock may
    remove them: anyone replacing ``target`` holds that lock while its temporary exists.

    Example:
        >>> leftovers("/tmp/no-such-index")
        []
    """
    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.name)}"
                         rf"(\.[A-Za-z0-9_]{{8}}{re.escape(TMP_SUFFIX)}|{OLD_MARK}\d+)")
    if not target.parent.is_dir():
        return []
    return sorted(p for p in target.parent.iterdir() if pattern.fullmatch(p.name))


def fsync_dir(directory: Path) -> None:
    """Make the names in ``directory`` (a file created, renamed or removed) survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
