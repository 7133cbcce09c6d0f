"""Every generation on disk, so an evaluation re-runs identically and offline.

One SQLite file holds rows keyed by sha256 of (model identity, prompt, decoding settings). The
shared one (:func:`default_store`) is the ``generations`` entry of :mod:`cormorant.cache`:
marked used whenever it is opened, and, like every entry, evicted whole only when the cache
is over its limit and everything else was used more recently.
A :class:`CachedModel` wraps any backend: it answers hits from the file and sends only the
misses to the model, in one batch.

Example:
    >>> from cormorant.llm.fake import EchoModel
    >>> model = CachedModel(EchoModel(), ":memory:")
    >>> model.generate(["Query: cats"], GenerationParams())
    ['cats']
    >>> model.hits, model.misses
    (0, 1)
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from cormorant import cache as disk_cache
from cormorant.llm.base import GenerationParams, LanguageModel

SCHEMA = """CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, prompt TEXT NOT NULL, params TEXT NOT NULL,
    text TEXT NOT NULL, created REAL NOT NULL)"""
DB_NAME = "generations.sqlite"
SQLITE_FILES = ("", "-wal", "-shm")  # a WAL database is these files together


def default_store() -> Path:
    """The shared generation store, ``$CORMORANT_CACHE/generations/default/generations.sqlite``.

    A store from before the cache had kinds (``$CORMORANT_CACHE/generations.sqlite``) is
    moved in, because its generations are the slowest thing to compute again.
    """
    db = disk_cache.store("generations", "default") / DB_NAME
    legacy = disk_cache.root() / DB_NAME
    if legacy.is_file() and not db.exists():
        for suffix in SQLITE_FILES:
            if Path(f"{legacy}{suffix}").exists():
                os.replace(f"{legacy}{suffix}", f"{db}{suffix}")
    return db


def generation_key(model: str, prompt: str, params: GenerationParams) -> str:
    """The cache key of one generation: any change to model, prompt or settings changes it."""
    return disk_cache.key([model, prompt, params.key()], length=64)


class GenerationCache:
    """A SQLite table of generations; safe to share between threads of one process."""

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        if self.path != ":memory:":
            # WAL lets a benchmark read the cache while another process writes to it.
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
                chunk = list(keys[start:start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, text FROM generations WHERE key IN ({marks})", chunk)
                found.update(rows.fetchall())
        return found

    def put_many(self, rows: Sequence[tuple[str, str, str, GenerationParams, str]]) -> None:
        """Store (key, model, prompt, params, text) rows in one transaction."""
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?, ?)",
                [(k, m, p, json.dumps(par.key(), sort_keys=True), t, now)
                 for k, m, p, par, t in rows])

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedModel:
    """``inner`` with its generations read from and written to a :class:`GenerationCache`.

    ``offline=True`` refuses to call the model on a miss: an evaluation meant to replay cached
    generations then fails loudly instead of silently generating new ones.
    """

    def __init__(self, inner: LanguageModel, cache: GenerationCache | str | Path,
                 offline: bool = False, chunk: int = 20) -> None:
        self.inner = inner
        self.chunk = chunk
        self.cache = cache if isinstance(cache, GenerationCache) else GenerationCache(cache)
        self.offline = offline
        self.name = inner.name
        self.hits = 0
        self.misses = 0
        self.generate_seconds = 0.0

    @property
    def identity(self) -> str:
        return self.inner.identity

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        identity = self.identity
        keys = [generation_key(identity, p, params) for p in prompts]
        found = self.cache.get_many(list(dict.fromkeys(keys)))
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        self.hits += len(prompts) - sum(1 for k in keys if k not in found)
        if missing:
            if self.offline:
                from cormorant.errors import CormorantError

                raise CormorantError(f"{len(missing)} generation(s) of {self.name} are not in"
                                     f" the cache {self.cache.path} and offline mode is on")
            found.update(self._fill(missing, dict(zip(keys, prompts, strict=True)), params))
        return [found[k] for k in keys]

    def _fill(self, missing: list[str], prompt_of: dict[str, str],
              params: GenerationParams) -> dict[str, str]:
        """Generate the misses in chunks, storing each chunk at once: an interrupted long run
        keeps what it generated, and a progress bar shows how far it is."""
        from tqdm import tqdm

        identity, out = self.identity, {}
        with tqdm(total=len(missing), desc=f"generating ({self.name})", unit="text",
                  disable=len(missing) <= self.chunk, leave=False) as bar:
            for start in range(0, len(missing), self.chunk):
                part = missing[start:start + self.chunk]
                began = time.perf_counter()
                texts = self.inner.generate([prompt_of[k] for k in part], params)
                self.generate_seconds += time.perf_counter() - began
                self.misses += len(part)
                self.cache.put_many([(k, identity, prompt_of[k], params, t)
                                     for k, t in zip(part, texts, strict=True)])
                out.update(zip(part, texts, strict=True))
                bar.update(len(part))
        return out
