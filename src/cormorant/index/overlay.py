"""The written part of an index's documents: what was added, replaced or deleted since the
index was built (or last merged).

The built document store stays as ``cormorant index build`` wrote it (checksums intact).
Writes land in ``<index>/live/docs.sqlite``: a row per written id (a tombstone for a delete)
and the sequence number of the last write log record applied, changed in one transaction.
The stages keep their own copies of what they index, in segments; this store answers "what is
document X now" for search results, re-rankers and the service.

Example:
    >>> store = OverlayStore("/tmp/idx/live/docs.sqlite")  # doctest: +SKIP
    >>> store.apply(1, puts=[Document("d9", "new text")], deletes=[], in_base={"d9": False})  # doctest: +SKIP
    >>> store.lookup("d9").text  # doctest: +SKIP
    'new text'
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from cormorant.errors import IndexFormatError
from cormorant.types import Document

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (doc_id TEXT PRIMARY KEY, title TEXT, text TEXT, fields TEXT,
                                 deleted INTEGER NOT NULL DEFAULT 0, in_base INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER);
"""

Missing = object()
"""What :meth:`OverlayStore.lookup` answers for an id never written."""


class OverlayStore:
    """Written documents and tombstones over a base document store, in SQLite (WAL mode).

    ``read_only`` opens an existing store without writing to it (a reader beside a writer);
    a missing store then reads as empty.
    """

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._local = threading.local()  # one reading connection per thread
        self._writer: sqlite3.Connection | None = None
        if not read_only:
            self._writer = self._connect()
            self._writer.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is enough: the write log is fsynced first and replays whatever SQLite
            # lost; a commit checkpoints before the log is emptied.
            db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        if self.read_only and not self.path.exists():
            return []
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if self.read_only and "no such table" in str(exc):
                return []  # created by a writer that has not finished its first write
            raise IndexFormatError(f"{self.path} cannot be read ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(f"{self.path} is damaged ({exc})") from None

    @property
    def applied_seq(self) -> int:
        """The sequence number of the last write log record this store holds."""
        rows = self._rows("SELECT value FROM state WHERE key = 'seq'")
        return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]

    def apply(self, seq: int, puts: list[Document], deletes: list[str],
              in_base: dict[str, bool]) -> None:
        """Record one write in one transaction: ``puts``, ``deletes`` and ``seq``;
        ``in_base[id]`` says whether the id is also in the base store."""
        db = self._writer
        assert db is not None, "a read-only overlay takes no writes"
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?, 0, ?)",
                [(d.doc_id, d.title, d.text, json.dumps(dict(d.fields)), int(in_base[d.doc_id]))
                 for d in puts])
            db.executemany("INSERT OR REPLACE INTO docs VALUES (?, '', '', '{}', 1, ?)",
                           [(doc_id, int(in_base[doc_id])) for doc_id in deletes])
            db.execute("INSERT OR REPLACE INTO state VALUES ('seq', ?)", (seq,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def checkpoint(self) -> None:
        """Make every applied write durable in the main database file (before a commit
        empties the write log that would otherwise replay it)."""
        if self._writer is not None:
            self._writer.execute("PRAGMA wal_checkpoint(FULL)")

    def lookup(self, doc_id: str) -> Document | None | object:
        """The written document, None if deleted, or ``Missing`` if this id was never written."""
        rows = self._rows("SELECT doc_id, title, text, fields, deleted FROM docs WHERE doc_id = ?",
                          (doc_id,))
        if not rows:
            return Missing
        row = rows[0]
        return None if row[4] else Document(row[0], row[2], title=row[1],  # type: ignore[arg-type]
                                            fields=json.loads(row[3]))  # type: ignore[arg-type]

    def live_documents(self) -> Iterator[Document]:
        """Every written document not deleted since, in the order they were last written."""
        for row in self._rows("SELECT doc_id, title, text, fields FROM docs WHERE deleted = 0"
                              " ORDER BY rowid"):
            yield Document(row[0], row[2], title=row[1], fields=json.loads(row[3]))  # type: ignore[arg-type]

    def written_ids(self) -> tuple[set[str], set[str]]:
        """(ids written and live, base ids that a write replaced or deleted)."""
        live, shadowed = set(), set()
        for doc_id, deleted, in_base in self._rows("SELECT doc_id, deleted, in_base FROM docs"):
            if not deleted:
                live.add(doc_id)
            if in_base:
                shadowed.add(doc_id)
        return live, shadowed  # type: ignore[return-value]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
