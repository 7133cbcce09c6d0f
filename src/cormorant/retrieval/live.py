"""An index directory and the writes made to it since it was built: adding, replacing and
deleting documents, committing them, merging them into a fresh build.

On disk, beside what ``cormorant index build`` wrote (which a write never changes):

- ``write.lock``: held (``flock``) by the one process that writes: ``cormorant serve``, a
  Python ``open_index(..., write=True)``, ``cormorant index add/delete/merge``, and
  ``index build --overwrite``, which refuses to replace an index someone is writing to;
- ``live/log.jsonl``: every acknowledged write since the last commit (:mod:`cormorant.index.wal`);
- ``live/docs.sqlite``: the written documents and tombstones (:mod:`cormorant.index.overlay`);
- ``live/segments/<stage>/``: each stage's committed segments and deletion masks (for
  ``bm25.lucene``, a hard-linked copy of its Lucene index that Lucene's own writer commits
  every write to), and ``live/manifest.json``, which names them and the last write they include.

A write is validated, prepared by every stage (documents analysed, encoded, indexed into a new
segment; nothing shown yet), appended to the log and fsynced, recorded in the document store,
and shown to searches by every stage at once; only then is it answered. A failure before the
log append changes nothing; a failure after it leaves a write that the next opening replays.
A commit writes the segments held in memory and empties the log, so opening reads the
segments and replays only what came after. A merge writes the index again, one segment per
stage with deleted documents gone, and swaps it into place; a crash at any point leaves the
old index with its log, or the new one.

Opening without ``write`` (``cormorant search --index`` beside a running server) takes no lock
and reads the committed segments and the log as they are.

Example:
    >>> handle = open_index("indexes/scifact", write=True)  # doctest: +SKIP
    >>> handle.live.add([Document("new-1", "Cormorants dive for fish.")])  # doctest: +SKIP
    >>> handle.pipeline.search("diving birds", k=3)  # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cormorant.data.files import atomic_write
from cormorant.errors import CormorantError, IndexFormatError, IndexLocked, ReadOnlyIndex
from cormorant.index.docstore import FILENAME as DOCSTORE_FILE
from cormorant.index.docstore import DocStore
from cormorant.index.format import atomic_directory, fsync_dir, leftovers, write_meta
from cormorant.index.overlay import Missing, OverlayStore
from cormorant.index.wal import WriteLog
from cormorant.retrieval.base import Retriever, save_leaf
from cormorant.types import Document

log = logging.getLogger(__name__)
LIVE_DIR = "live"
LOCK_FILE = "write.lock"
MANIFEST = "manifest.json"
SEGMENTS_DIR = "segments"
AUTO_COMMIT_DOCUMENTS = 50_000
"""Documents written since the last commit after which a write commits: the log and the
segments held in memory stay bounded, and so does the replay at the next opening."""


@dataclass(frozen=True)
class WriteResult:
    """What a write did: the index version after it and the ids it changed or did not find."""

    version: int
    changed: list[str]
    not_found: list[str]


def take_lock(index: Path) -> int:
    """Hold ``index``'s write lock; returns the descriptor that holds it (close to release).

    Raises:
        IndexLocked: another process holds it.
    """
    fd = os.open(index / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise IndexLocked(f"index {index} is being written by another process (a server, or"
                          " cormorant index add/delete/merge); stop it first") from None
    return fd


class LiveIndex:
    """The writes over one opened index directory (see the module docstring).

    ``owners`` maps each stored stage's position in ``meta.json`` to the loaded retriever
    that holds its segments (other loaded copies share them); a writer needs every stored
    stage, so that each write reaches all of them.
    """

    def __init__(self, path: Path, meta: dict[str, Any], base_docs: DocStore,
                 owners: dict[int, Retriever], write: bool) -> None:
        self.path, self.meta, self.base_docs, self.owners = path, meta, base_docs, owners
        self.write = write
        self.version = 0
        self.read_only_reason: str | None = None if write else "opened for reading"
        fixed = sorted({o.name for o in owners.values() if not o.writable})
        if write and fixed:
            reasons = "; ".join(f"{o.name}: {o.read_only_reason}" for o in owners.values()
                                if not o.writable)
            self.read_only_reason = f"index {path} holds {', '.join(fixed)} ({reasons})"
        self._written: set[str] = set()
        self._shadowed: set[str] = set()
        self._pending: dict[str, Document | None] = {}  # a reader's view of unapplied records
        self._pending_delta = 0  # documents the pending records add (puts) or remove (deletes)
        self._base_count = int(meta.get("count", len(base_docs)))
        self._uncommitted = 0
        self._generation = 0
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._overlay: OverlayStore | None = None
        self._log: WriteLog | None = None

    @property
    def live_dir(self) -> Path:
        return self.path / LIVE_DIR

    # -- opening ---------------------------------------------------------------------------

    def open(self, verify: bool = True) -> LiveIndex:
        """Take the lock (when writing), read the committed segments, replay the log."""
        if self.write:
            self._lock_fd = take_lock(self.path)
            self._remove_leftovers()
            self.live_dir.mkdir(exist_ok=True)
        manifest = self._read_manifest()
        seq = int(manifest.get("seq", 0))
        self._generation = int(manifest.get("generation", 0))
        for position, owner in self.owners.items():
            record = manifest.get("leaves", {}).get(self._leaf_dir(position))
            if record:
                owner.restore_segments(self._segments_dir(position), record, verify)
        self._overlay = OverlayStore(self.live_dir / "docs.sqlite", read_only=not self.write)
        self._written, self._shadowed = self._overlay.written_ids()
        self.version = max(seq, self._overlay.applied_seq)
        self._log = WriteLog(self.live_dir / "log.jsonl")
        records = self._log.read(repair=self.write)
        replayed = 0
        for record in records:
            if record["seq"] > seq:
                self._apply(record, logged=True, stages=True,
                            documents=record["seq"] > self._overlay.applied_seq)
                replayed += 1
        if replayed:
            log.info("index %s: replayed %d write(s) from the log", self.path, replayed)
        if self.write:
            self._remove_unused()
            for owner in self.owners.values():
                owner.ready_for_writes()
        return self

    def _remove_leftovers(self) -> None:
        """Delete what a merge (or ``index build --overwrite``) killed mid-way left beside the
        index: a copy as large as the index each time. Safe under the lock, which whoever
        replaces the index holds while its temporary exists."""
        for path in leftovers(self.path):
            log.warning("index %s: removing %s, left by a merge or rebuild that was cut off",
                        self.path, path.name)
            shutil.rmtree(path, ignore_errors=True)

    def _read_manifest(self) -> dict[str, Any]:
        path = self.live_dir / MANIFEST
        if not path.is_file():
            return {}
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{path} cannot be read ({exc})") from None
        if not isinstance(found, dict):
            raise IndexFormatError(f"{path} is not a manifest")
        return found

    def _leaf_dir(self, position: int) -> str:
        return str(self.meta["leaves"][position]["dir"])

    def _segments_dir(self, position: int) -> Path:
        return self.live_dir / SEGMENTS_DIR / self._leaf_dir(position)

    # -- reading ---------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Documents searchable now: built ones not replaced or deleted, plus written ones."""
        return self._base_count - len(self._shadowed) + len(self._written) + self._pending_delta

    @property
    def writable(self) -> bool:
        return self.read_only_reason is None

    def get(self, doc_id: str) -> Document | None:
        """The current document with this id, or None."""
        return self.get_many([doc_id]).get(doc_id)

    def get_many(self, doc_ids: list[str]) -> dict[str, Document]:
        """The current documents among ``doc_ids``."""
        found: dict[str, Document] = {}
        rest = []
        for doc_id in doc_ids:
            if doc_id in self._pending:
                doc = self._pending[doc_id]
            elif self._overlay is not None and (doc_id in self._written
                                                or doc_id in self._shadowed):
                doc = self._overlay.lookup(doc_id)  # type: ignore[assignment]
            else:
                rest.append(doc_id)
                continue
            if doc is not None and doc is not Missing:
                found[doc_id] = doc
        found.update(self.base_docs.get_many(rest))
        return found

    def documents(self) -> Iterator[Document]:
        """Every current document: the built ones not replaced or deleted, then the written."""
        hidden = self._shadowed | set(self._pending)
        for doc in self.base_docs.documents():
            if doc.doc_id not in hidden:
                yield doc
        if self._overlay is not None:
            for doc in self._overlay.live_documents():
                if doc.doc_id not in self._pending:
                    yield doc
        yield from (d for d in self._pending.values() if d is not None)

    def follow(self) -> bool:
        """A reader's catch-up with the writer: show the writes it has logged since this
        opening (or the last ``follow``). Returns False when the writer has committed since
        (the log was emptied into segments this reader has not read): reopen the index then.

        Example:
            >>> reader = open_index("indexes/scifact").live  # beside a writer  # doctest: +SKIP
            >>> reader.follow() or "reopen"  # doctest: +SKIP
            True
        """
        if self.write:
            raise CormorantError("follow() is for a reader; the writer shows its own writes")
        assert self._log is not None
        with self._lock:
            # The manifest first: a commit writes it before it empties the log, so a commit
            # that lands between the two reads shows as a changed generation next time.
            if int(self._read_manifest().get("generation", 0)) != self._generation:
                return False
            for record in self._log.read(repair=False):
                if record["seq"] > self.version:
                    self._apply(record, logged=True, stages=True, documents=True)
        return True

    # -- writing ---------------------------------------------------------------------------

    def add(self, documents: list[Document]) -> WriteResult:
        """Add ``documents``, replacing any with the same id; durable and searchable when this
        returns. Within one call the last document with an id wins."""
        latest = {d.doc_id: d for d in documents}
        if not latest:
            return WriteResult(self.version, [], [])
        record = {"op": "put", "docs": [_doc_json(d) for d in latest.values()]}
        with self._lock:
            return self._write(record)

    def delete(self, doc_ids: list[str]) -> WriteResult:
        """Delete the documents with these ids; ids not present are reported, not logged."""
        with self._lock:
            present = list(dict.fromkeys(d for d in doc_ids if self.get(d) is not None))
            missing = [d for d in doc_ids if d not in set(present)]
            if not present:
                return WriteResult(self.version, [], missing)
            result = self._write({"op": "delete", "ids": present})
        return WriteResult(result.version, present, missing)

    def _write(self, record: dict[str, Any]) -> WriteResult:
        if self.read_only_reason is not None:
            raise ReadOnlyIndex(self.read_only_reason)
        result = self._apply({"seq": self.version + 1, **record}, logged=False, stages=True,
                             documents=True)
        if self._uncommitted >= AUTO_COMMIT_DOCUMENTS:
            self._commit()
        return result

    def _apply(self, record: dict[str, Any], logged: bool, stages: bool,
               documents: bool) -> WriteResult:
        """Prepare every stage, log (unless ``logged``), store, then show one write."""
        puts = [_doc_from_json(d) for d in record.get("docs", [])]
        deletes = list(record.get("ids", []))
        # A reader replays into the stages that hold writes in memory only; one whose publish
        # commits its own files (Lucene) shows the writer's writes already.
        taking = {pos: owner for pos, owner in self.owners.items()
                  if stages and (self.write or not owner.durable_writes)}
        prepared = {pos: owner.prepare_write(puts, deletes) for pos, owner in taking.items()}
        if not logged:
            assert self._log is not None
            self._log.append(record)  # the point of no return: on disk before anything shows
        touched = [p.doc_id for p in puts] + deletes
        if documents:
            self._store_documents(record["seq"], puts, deletes, touched)
        try:
            for pos, owner in self.owners.items():
                if pos in prepared:
                    owner.publish(prepared[pos])
        except BaseException:
            if not logged:  # logged but not shown by every stage: as for the document store
                self.read_only_reason = f"index {self.path}: a stage failed to show a write;" \
                                        " reopen it"
            raise
        self.version = max(self.version, record["seq"])
        self._uncommitted += len(touched)
        return WriteResult(self.version, touched, [])

    def _store_documents(self, seq: int, puts: list[Document], deletes: list[str],
                         touched: list[str]) -> None:
        if not self.write:  # a reader keeps what the writer has not stored yet in memory
            # Counted against what this reader showed before the record: a put that replaces
            # a document, or a delete of one, changes the count by its difference only.
            ids = list(dict.fromkeys(touched))
            before = self.get_many(ids)
            self._pending.update({d.doc_id: d for d in puts})
            self._pending.update(dict.fromkeys(deletes))
            self._pending_delta += sum((self._pending[d] is not None) - (d in before)
                                       for d in ids)
            return
        assert self._overlay is not None
        in_base = {d: d in self._shadowed or self.base_docs.get(d) is not None for d in touched}
        try:
            self._overlay.apply(seq, puts, deletes, in_base)
        except BaseException:
            # Logged but not stored: refuse writes until a restart replays the log, rather
            # than let a later write reuse this sequence number.
            self.read_only_reason = f"index {self.path}: the document store failed; reopen it"
            raise
        self._shadowed |= {d for d, base in in_base.items() if base}
        self._written = (self._written - set(deletes)) | {p.doc_id for p in puts}

    # -- committing and merging --------------------------------------------------------------

    def commit(self) -> None:
        """Write the segments held in memory and empty the log: the next opening reads them
        instead of replaying every write."""
        with self._lock:
            self._commit()

    def _commit(self) -> None:
        if not self.write:
            raise ReadOnlyIndex(f"index {self.path} was opened for reading")
        assert self._overlay is not None and self._log is not None
        self._generation += 1
        leaves = {self._leaf_dir(pos): owner.commit_segments(self._segments_dir(pos),
                                                             self._generation)
                  for pos, owner in self.owners.items()}
        self._overlay.checkpoint()
        manifest = {"seq": self.version, "generation": self._generation, "leaves": leaves}
        with atomic_write(self.live_dir / MANIFEST) as handle:
            json.dump(manifest, handle)
        fsync_dir(self.live_dir)
        self._log.reset()  # every record is in the segments now
        self._uncommitted = 0
        self._remove_unused()

    def _remove_unused(self) -> None:
        """Delete segment files no manifest names (left by a commit or merge a crash cut off)."""
        for pos, owner in self.owners.items():
            folder = self._segments_dir(pos)
            if not folder.is_dir():
                continue
            used = owner.referenced_files()
            for entry in folder.iterdir():
                if entry.name not in used:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def merge(self, retrain: bool | None = None) -> None:
        """Write the index again from its current documents, one segment per stage with
        deleted documents gone, and swap it into place (nothing is encoded again).

        ``retrain``: learn IVF centroids and PQ codebooks again from the documents now held
        (None: once the collection has grown to 4x what they were learnt from).
        """
        with self._lock:
            if not self.write or self.read_only_reason is not None:
                raise ReadOnlyIndex(self.read_only_reason or "opened for reading")
            before = {pos: owner.snapshot() for pos, owner in self.owners.items()}
            try:
                self._swap_in_merged(retrain)
            except BaseException:
                for pos, snapshot in before.items():
                    self.owners[pos].publish(snapshot)
                raise

    def _swap_in_merged(self, retrain: bool | None) -> None:
        assert self._lock_fd is not None
        for owner in self.owners.values():
            owner.compact(retrain)
        new_lock: int | None = None
        with atomic_directory(self.path, overwrite=True) as tmp:
            count = DocStore.create(tmp / DOCSTORE_FILE, self.documents())
            records = [save_leaf(tmp / rec["dir"], self.owners[pos])
                       for pos, rec in enumerate(self.meta["leaves"])]
            meta = {k: v for k, v in self.meta.items()
                    if k not in ("checksums", "format", "version")}
            write_meta(tmp, {**meta, "count": count, "leaves": records})
            new_lock = take_lock(tmp)  # ours before anyone can see the new directory
        os.close(self._lock_fd)
        self._lock_fd = new_lock
        self._reopen_after_merge(count)

    def _reopen_after_merge(self, count: int) -> None:
        """Point everything at the swapped-in directory; searches go on meanwhile."""
        assert self._overlay is not None and self._log is not None
        self._overlay.close()
        self._log.close()
        self.meta = {**self.meta, "count": count}
        self.base_docs = DocStore(self.path / DOCSTORE_FILE)
        self.live_dir.mkdir(exist_ok=True)
        self._overlay = OverlayStore(self.live_dir / "docs.sqlite")
        self._log = WriteLog(self.live_dir / "log.jsonl")
        self._written, self._shadowed, self._pending = set(), set(), {}
        self._pending_delta = 0
        self._base_count, self._uncommitted, self._generation = count, 0, 0
        for pos, owner in self.owners.items():
            owner.reopen(self.path / self._leaf_dir(pos))

    # -- closing -----------------------------------------------------------------------------

    def close(self, commit: bool = True) -> None:
        """Commit what is held in memory (when writing; ``commit=False`` leaves it to the log,
        to replay at the next opening) and release files and the lock."""
        if commit and self.write and self._lock_fd is not None and self.read_only_reason is None \
                and self._uncommitted:
            try:
                self.commit()
            except CormorantError as exc:  # the log still holds every write
                log.warning("index %s: commit on close failed (%s); the log keeps the writes",
                            self.path, exc)
        if self._log is not None:
            self._log.close()
        if self._overlay is not None:
            self._overlay.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _doc_json(doc: Document) -> dict[str, Any]:
    return {"doc_id": doc.doc_id, "title": doc.title, "text": doc.text,
            "fields": dict(doc.fields)}


def _doc_from_json(data: dict[str, Any]) -> Document:
    return Document(data["doc_id"], data.get("text", ""), title=data.get("title", ""),
                    fields=data.get("fields") or {})
