"""The one on-disk cache: everything cormorant computes once and reuses, under one size limit.

Every entry is a file or a folder ``<root>/<kind>/<name>``, where the root is
``$CORMORANT_CACHE`` (default ``~/.cache/cormorant``) and the kind says what it holds (see
:data:`KINDS`). Names are content keys (:func:`key`), so an entry never goes stale: anything
that changes the result changes the name. This module owns the rules all of them share:

- **Atomic writes.** :func:`write` hands out a hidden temporary path beside the entry and
  renames it into place only when the block succeeds, so no reader ever sees a partial entry.
- **Least-recently-used eviction.** A hit (:func:`lookup`) marks the entry used (its mtime).
  After every write the cache is cut back to its limit, oldest use first; the entry just
  written is always kept. The limit is ``$CORMORANT_CACHE_LIMIT`` (``20G``, ``500M``,
  ``none``), read at each call; the default is :data:`DEFAULT_LIMIT`, 20 GiB.
- **Info and prune**, for ``cormorant cache info`` and ``cormorant cache prune``.

Removal is safe for readers in other processes: a memory map or an open file outlives the
unlink, and a folder is renamed aside before it is deleted, so it is never seen half gone.

Example:
    >>> import numpy as np
    >>> from cormorant import cache
    >>> name = cache.key({"model": "m", "corpus": "c"}) + ".npy"
    >>> path = cache.lookup("embeddings", name)  # doctest: +SKIP
    >>> if path is None:  # doctest: +SKIP
    ...     with cache.write("embeddings", name) as tmp:
    ...         np.save(tmp, np.zeros((3, 4), dtype=np.float32))
    ...     path = cache.entry("embeddings", name)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cormorant.errors import CormorantError

log = logging.getLogger(__name__)

ROOT_ENV = "CORMORANT_CACHE"
LIMIT_ENV = "CORMORANT_CACHE_LIMIT"
# 20 GiB holds every artefact of the BEIR-sized datasets many times over (SciFact's MiniLM
# embeddings are 8 MB, its token store about 1 GB, the converted SmolLM2 about 0.5 GB) and
# one MS MARCO embedding matrix of a 384-dimensional model (13.5 GB), while leaving most of a
# 64 GB disk free. Larger work raises it with $CORMORANT_CACHE_LIMIT.
DEFAULT_LIMIT = 20 * 1024**3

KINDS: dict[str, str] = {
    "embeddings": "corpus embeddings (.npy per encoder and corpus)",
    "tokens": "token-vector stores (chamfer, muvera)",
    "runs": "evaluation runs (TREC run and timing per system and split)",
    "generations": "language-model generations (one SQLite store)",
    "teacher": "teacher scores for distillation (.npy per teacher and pairs)",
    "models": "GGUF models converted once into transformers folders",
    "exports": "encoders exported to ONNX (per model fingerprint and precision)",
}
STALE_PARTIAL_S = 24 * 3600  # a hidden temporary this old belongs to a write that died
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


@dataclass(frozen=True)
class Entry:
    """One cache entry: a file or a folder, its size in bytes and when it was last used."""

    kind: str
    path: Path
    size: int
    used: float


@dataclass
class CacheInfo:
    """What :func:`info` reports: the root, the limit, and per-kind entry counts and sizes."""

    root: Path
    limit: int | None
    kinds: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind -> (entries, bytes)
    partial: int = 0  # hidden temporaries of unfinished (or crashed) writes

    @property
    def total(self) -> int:
        return sum(size for _, size in self.kinds.values())


# Set only by `rooted`, for the code running in its block (a context variable, so other
# threads and the process's environment are untouched).
_ROOT_HERE: ContextVar[Path | None] = ContextVar("cormorant_cache_root", default=None)


def root() -> Path:
    """The cache root: ``rooted``'s inside its block, else ``$CORMORANT_CACHE`` or
    ``~/.cache/cormorant``, read at each call."""
    here = _ROOT_HERE.get()
    if here is not None:
        return here
    return Path(os.environ.get(ROOT_ENV) or Path.home() / ".cache" / "cormorant")


@contextmanager
def rooted(path: str | Path) -> Iterator[None]:
    """Use ``path`` as the cache root inside the block: a Ray shard task reads the entries its
    driver filled, on a file system the cluster shares, whatever the worker's own environment
    says. Only this context sees it (``os.environ`` is not touched: a library does not change
    its process's environment).

    Example:
        >>> with rooted("/shared/cache"):
        ...     root()
        PosixPath('/shared/cache')
    """
    token = _ROOT_HERE.set(Path(path))
    try:
        yield
    finally:
        _ROOT_HERE.reset(token)


def size_limit() -> int | None:
    """The size limit in bytes (``$CORMORANT_CACHE_LIMIT``, read at each call), None for none.

    Raises:
        CormorantError: the variable is set to something that is not a size.
    """
    text = os.environ.get(LIMIT_ENV, "").strip()
    if not text:
        return DEFAULT_LIMIT
    if text.lower() in ("none", "off", "unlimited"):
        return None
    try:
        return parse_size(text)
    except CormorantError as exc:
        raise CormorantError(f"${LIMIT_ENV}: {exc}") from None


def parse_size(text: str) -> int:
    """Bytes in a size such as ``500M``, ``20G``, ``1.5GiB`` or ``4096`` (binary units).

    Example:
        >>> parse_size("1.5G")
        1610612736
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise CormorantError(f"{text!r} is not a size (examples: 500M, 20G, 1.5T, 4096)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_size(size: int) -> str:
    """``size`` bytes for a person: ``8.0 MiB``.

    Example:
        >>> format_size(3 * 1024**3)
        '3.0 GiB'
    """
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def key(payload: Any, length: int = 24) -> str:
    """A content key: sha256 of ``payload`` as canonical JSON, ``length`` hex digits.

    24 digits (96 bits) make a collision between entries of one cache implausible; a caller
    that needs the full digest asks for 64.

    Example:
        >>> key({"b": 1, "a": [2, 3]}) == key({"a": [2, 3], "b": 1})
        True
    """
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def entry(kind: str, name: str) -> Path:
    """Where the entry ``name`` of ``kind`` lives (whether or not it exists)."""
    for part in (kind, name):
        if not _NAME.fullmatch(part):
            raise ValueError(f"cache kind and entry names are plain file names, got {part!r}")
    return root() / kind / name


def lookup(kind: str, name: str) -> Path | None:
    """The entry's path if it exists, marked as used now; None on a miss."""
    path = entry(kind, name)
    if not path.exists():
        return None
    touch(path)
    return path


def touch(path: Path) -> None:
    """Mark an entry used now, so eviction takes it last."""
    with suppress(OSError):  # a concurrent prune removed it: the caller's read will say so
        os.utime(path)


@contextmanager
def write(kind: str, name: str, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path for the entry (a created folder if ``directory``, else a file
    path that does not exist yet and ends like ``name``, so ``np.save`` keeps it); on success
    it is renamed into place, marked used and the cache cut back to its limit.

    An exception leaves no entry and no temporary behind.

    Example:
        >>> with write("runs", "abc123", directory=True) as tmp:  # doctest: +SKIP
        ...     (tmp / "run.trec").write_text("q1 Q0 d1 1 1.0 x\\n")
    """
    target = entry(kind, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{secrets.token_hex(4)}-{os.getpid()}.{name}")
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        _fsync(tmp)
        _replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    touch(target)
    enforce_limit(keep=target)


def store(kind: str, name: str) -> Path:
    """A folder entry its owner updates in place with its own atomicity (SQLite), created if
    missing and marked used; the cache is cut back to its limit without touching it."""
    path = entry(kind, name)
    path.mkdir(parents=True, exist_ok=True)
    touch(path)
    enforce_limit(keep=path)
    return path


def entries(kind: str | None = None) -> list[Entry]:
    """Every finished entry (of ``kind``, or of all kinds), least recently used first."""
    base = root()
    kinds = [kind] if kind else sorted(p.name for p in _subdirs(base))
    found: list[Entry] = []
    for name in kinds:
        for path in _children(base / name):
            if path.name.startswith("."):
                continue  # a write in progress or a folder being removed
            with suppress(OSError):
                found.append(Entry(name, path, _size(path), path.stat().st_mtime))
    return sorted(found, key=lambda e: e.used)


def info() -> CacheInfo:
    """Per-kind entry counts and sizes, the root and the limit.

    Example:
        >>> report = info()  # doctest: +SKIP
        >>> report.kinds["embeddings"]  # doctest: +SKIP
        (3, 25165952)
    """
    report = CacheInfo(root(), size_limit(), {k: (0, 0) for k in KINDS})
    for item in entries():
        count, size = report.kinds.get(item.kind, (0, 0))
        report.kinds[item.kind] = (count + 1, size + item.size)
    report.partial = sum(1 for p in _partials())
    return report


def prune(max_size: int | None = None, kind: str | None = None,
          everything: bool = False, keep: Path | None = None) -> list[Entry]:
    """Remove least-recently-used entries until those selected total at most ``max_size``
    (default: the configured limit; ``everything`` removes them all), and temporaries of
    writes that died. ``kind`` selects one kind; ``keep`` is never removed. Returns what went.

    Example:
        >>> removed = prune(max_size=parse_size("1G"), kind="runs")  # doctest: +SKIP
    """
    for path in _partials():
        with suppress(OSError):
            if time.time() - path.lstat().st_mtime > STALE_PARTIAL_S:
                _remove(path)
    budget = 0 if everything else (size_limit() if max_size is None else max_size)
    if budget is None:
        return []
    selected = entries(kind)
    total = sum(e.size for e in selected)
    removed = []
    for item in selected:
        if total <= budget:
            break
        if keep is not None and item.path == keep:
            continue
        _remove(item.path)
        total -= item.size
        removed.append(item)
        log.info("cache: evicted %s (%s)", item.path, format_size(item.size))
    return removed


def enforce_limit(keep: Path | None = None) -> list[Entry]:
    """Cut the whole cache back to the configured limit, keeping ``keep``."""
    return prune(keep=keep)


def _subdirs(path: Path) -> list[Path]:
    return [p for p in _children(path) if p.is_dir() and not p.name.startswith(".")]


def _children(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except OSError:  # missing, or removed by a concurrent prune
        return []


def _partials() -> Iterator[Path]:
    for kind_dir in _subdirs(root()):
        yield from (p for p in _children(kind_dir) if p.name.startswith("."))


def _size(path: Path) -> int:
    if not path.is_dir():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _fsync(path: Path) -> None:
    """Flush to disk before the rename, so a power cut cannot leave a named empty entry."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for item in files:
        with open(item, "rb") as handle:
            os.fsync(handle.fileno())


def _replace(tmp: Path, target: Path) -> None:
    if tmp.is_dir() and target.exists():
        # rename cannot replace a non-empty folder: the old entry (a twin written by another
        # process, or a damaged one) goes first, renamed aside so it is never seen half gone.
        _remove(target)
    os.replace(tmp, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        aside = path.with_name(f".{secrets.token_hex(4)}-removing.{path.name}")
        try:
            os.replace(path, aside)
        except OSError:
            return  # already gone
        shutil.rmtree(aside, ignore_errors=True)
    else:
        with suppress(OSError):
            path.unlink()


__all__ = ["DEFAULT_LIMIT", "KINDS", "CacheInfo", "Entry", "entries", "entry", "format_size",
           "info", "key", "lookup", "parse_size", "prune", "root", "size_limit", "store",
           "touch", "write"]
