"""The on-disk index directory: ``meta.json`` with checksums, written atomically.

An index is a directory. Everything is first written into a temporary sibling directory, then
``meta.json`` (holding a SHA-256 of every other file) is written last and the directory renamed
into place, so a crash leaves either the old index or the new one, never half of one. Loading
checks the format version and every checksum and says what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
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
        raise IndexFormatError(f"index not found: {directory} is not a directory")
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

    Raises:
        IndexFormatError: ``target`` exists and ``overwrite`` is false.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise IndexFormatError(f"{target} already exists (use --overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it private; an index is shared data
        if target.exists():
            # Move the old index aside first: rename cannot replace a non-empty directory.
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
