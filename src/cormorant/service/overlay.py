"""The live part of an index's documents: what was added, replaced or deleted since the build.

The built index directory stays as ``cormorant index build`` wrote it (checksums intact). Live
writes land in ``<index>/live/docs.sqlite``: a row per written id (a tombstone for a delete),
the vectors each dense stage computed for it (so a restart does not encode again), and the
sequence number of the last write log record applied, all changed in one transaction.

Example:
    >>> store = OverlayStore("/tmp/idx/live/docs.sqlite")  # doctest: +SKIP
    >>> store.apply(1, puts=[Document("d9", "new text")], deletes=[], vectors={})  # doctest: +SKIP
    >>> store.get("d9").text  # doctest: +SKIP
    'new text'
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cormorant.types import Document

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (doc_id TEXT PRIMARY KEY, title TEXT, text TEXT, fields TEXT,
                                 deleted INTEGER NOT NULL DEFAULT 0, in_base INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (stage INTEGER, doc_id TEXT, vec BLOB,
                                    PRIMARY KEY (stage, doc_id));
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER);
"""

Missing = object()


class OverlayStore:
    """Live documents and tombstones over a base document store, in SQLite (WAL mode)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()  # one reading connection per thread
        self._writer = self._connect()
        self._writer.executescript(_SCHEMA)
        self._writer.commit()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is enough: the write log is fsynced first and replays whatever SQLite lost.
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _reader(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    @property
    def applied_seq(self) -> int:
        """The sequence number of the last write log record this store holds."""
        row = self._reader().execute("SELECT value FROM state WHERE key = 'seq'").fetchone()
        return int(row[0]) if row else 0

    def apply(self, seq: int, puts: list[Document], deletes: list[tuple[str, bool]],
              vectors: dict[int, np.ndarray], in_base: dict[str, bool]) -> None:
        """Record one write in one transaction: ``puts`` (with ``vectors[stage]`` row i for
        ``puts[i]``), ``deletes`` as (id, in_base), and ``seq``."""
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?, 0, ?)",
                [(d.doc_id, d.title, d.text, json.dumps(dict(d.fields)), int(in_base[d.doc_id]))
                 for d in puts])
            db.executemany("INSERT OR REPLACE INTO docs VALUES (?, '', '', '{}', 1, ?)",
                           [(doc_id, int(base)) for doc_id, base in deletes])
            gone = [(doc_id,) for doc_id, _ in deletes]
            db.executemany("DELETE FROM vectors WHERE doc_id = ?", gone)
            for stage, matrix in vectors.items():
                db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                               [(stage, d.doc_id, np.asarray(v, np.float32).tobytes())
                                for d, v in zip(puts, matrix, strict=True)])
            db.execute("INSERT OR REPLACE INTO state VALUES ('seq', ?)", (seq,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def lookup(self, doc_id: str) -> Document | None | object:
        """The live document, None if deleted, or ``Missing`` if this id was never written."""
        row = self._reader().execute(
            "SELECT doc_id, title, text, fields, deleted FROM docs WHERE doc_id = ?",
            (doc_id,)).fetchone()
        if row is None:
            return Missing
        return None if row[4] else Document(row[0], row[2], title=row[1], fields=json.loads(row[3]))

    def live_documents(self) -> Iterator[Document]:
        """Every live (not deleted) document, in the order they were last written."""
        for row in self._reader().execute(
                "SELECT doc_id, title, text, fields FROM docs WHERE deleted = 0 ORDER BY rowid"):
            yield Document(row[0], row[2], title=row[1], fields=json.loads(row[3]))

    def shadowed_base_ids(self) -> set[str]:
        """Base documents that a live write replaced or deleted."""
        return {r[0] for r in self._reader().execute("SELECT doc_id FROM docs WHERE in_base = 1")}

    def vectors(self, stage: int, dim: int) -> dict[str, np.ndarray]:
        """The stored vectors of one dense stage, by document id."""
        rows = self._reader().execute("SELECT doc_id, vec FROM vectors WHERE stage = ?", (stage,))
        return {doc_id: np.frombuffer(blob, dtype=np.float32) for doc_id, blob in rows
                if len(blob) == 4 * dim}

    def close(self) -> None:
        self._writer.close()
