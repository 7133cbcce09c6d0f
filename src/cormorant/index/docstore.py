"""A SQLite store of document text and fields, kept beside every index.

Indexes know vectors and ids only; the store answers "what is document X" for search results,
the CLI and the service.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import threading
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cormorant.errors import IndexFormatError
from cormorant.types import Document

FILENAME = "docs.sqlite"


class DocStore:
    """Document text and fields by id.

    Example:
        >>> store = DocStore.create("/tmp/docs.sqlite", [Document("d1", "text", "Title")])  # doctest: +SKIP
        >>> store.get("d1").title  # doctest: +SKIP
        'Title'
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # check_same_thread=False: the service reads from worker threads; reads do not race.
        self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        self._query("SELECT doc_id, title, text, fields FROM docs LIMIT 1")  # fail at open

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql``; a damaged file (which checksums only catch when verified, and
        not when recomputed after the damage) is one IndexFormatError, never a traceback."""
        try:
            return self._db.execute(sql, tuple(args)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(f"{self.path} is damaged ({exc}): rebuild the index"
                                   ) from None

    @staticmethod
    def create(path: str | Path, documents: Iterable[Document], batch: int = 2048) -> int:
        """Write a new store at ``path`` from ``documents``; returns how many were written."""
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE docs (doc_id TEXT PRIMARY KEY, title TEXT, text TEXT,"
                   " fields TEXT)")
        rows: list[tuple[str, str, str, str]] = []
        count = 0
        for doc in documents:
            rows.append((doc.doc_id, doc.title, doc.text, json.dumps(dict(doc.fields))))
            if len(rows) >= batch:
                db.executemany("INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?)", rows)
                count += len(rows)
                rows.clear()
        db.executemany("INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?)", rows)
        count += len(rows)
        db.commit()
        db.close()
        return count

    def get(self, doc_id: str) -> Document | None:
        """The document with this id, or None."""
        rows = self._query("SELECT doc_id, title, text, fields FROM docs WHERE doc_id = ?",
                           (doc_id,))
        return _document(rows[0], self.path) if rows else None

    def get_many(self, doc_ids: list[str]) -> dict[str, Document]:
        """The documents with these ids that exist."""
        found: dict[str, Document] = {}
        for start in range(0, len(doc_ids), 500):
            chunk = doc_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._query(
                    f"SELECT doc_id, title, text, fields FROM docs WHERE doc_id IN ({marks})", chunk):
                found[row[0]] = _document(row, self.path)
        return found

    def __len__(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM docs")[0][0])

    def documents(self, batch: int = 2048) -> Iterator[Document]:
        """Every document, in the order they were stored, read a batch at a time."""
        last = 0
        while True:
            rows = self._query("SELECT rowid, doc_id, title, text, fields FROM docs"
                               " WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, batch))
            if not rows:
                return
            for row in rows:
                yield _document(row[1:], self.path)
            last = rows[-1][0]


def _document(row: tuple[Any, ...], path: Path | None = None) -> Document:
    doc_id, title, text, fields = row
    try:
        extra = json.loads(fields)
    except (TypeError, json.JSONDecodeError):
        extra = None
    if not (isinstance(doc_id, str) and isinstance(title, str) and isinstance(text, str)
            and isinstance(extra, dict)):
        raise IndexFormatError(f"{path or 'the document store'} is damaged: document"
                               f" {str(doc_id)[:40]!r} is malformed; rebuild the index")
    return Document(doc_id, text, title=title, fields=extra)


class CorpusDocuments:
    """Document text by id for a corpus that streams: on the first lookup the corpus is written
    to a SQLite store in a temporary folder (removed when this object goes), so lookups are
    random access while memory stays flat, however large the corpus.

    Example:
        >>> from cormorant.types import Corpus
        >>> docs = CorpusDocuments(Corpus.from_documents([Document("d1", "text")]))
        >>> docs.get_many(["d1", "nope"])["d1"].text
        'text'
    """

    def __init__(self, corpus: Iterable[Document]) -> None:
        self.corpus = corpus
        self._store: DocStore | None = None
        self._lock = threading.Lock()

    def get_many(self, doc_ids: list[str]) -> dict[str, Document]:
        return self.store().get_many(doc_ids)

    def store(self) -> DocStore:
        with self._lock:  # two searching threads must not both write the store
            if self._store is None:
                folder = Path(tempfile.mkdtemp(prefix="cormorant-docs-"))
                weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
                DocStore.create(folder / FILENAME, self.corpus)
                self._store = DocStore(folder / FILENAME)
            return self._store
