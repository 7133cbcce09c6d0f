"""A served index: its pipelines, its documents, and the live writes made since it was built.

Opening replays the write log over the overlay store, so every acknowledged write is back
after a crash or restart. A write is validated, prepared (documents encoded, BM25 re-indexed),
appended to the log and fsynced, recorded in the overlay store, then published to searches;
the answer goes out after all of that. Writes to one index are serialised; searches never wait
for them.

Example:
    >>> live = LiveIndex.open("scifact", "indexes/scifact", pipelines=["bm25"])  # doctest: +SKIP
    >>> live.put([Document("new-1", "Cormorants dive for fish.")])  # doctest: +SKIP
    >>> live.search(["diving birds"], k=3)[0][0]  # doctest: +SKIP
    ('new-1', 0.71...)
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cormorant.errors import CormorantError
from cormorant.index.docstore import FILENAME as DOCSTORE_FILE
from cormorant.index.docstore import DocStore
from cormorant.index.format import FORMAT_VERSION, read_meta
from cormorant.pipeline import Stage
from cormorant.retrieval.assemble import open_index
from cormorant.retrieval.base import Retriever
from cormorant.retrieval.bm25 import BM25Retriever
from cormorant.retrieval.dense import DenseRetriever
from cormorant.service.live_stages import (
    WRITABLE_KINDS,
    BM25State,
    Change,
    DenseState,
    LiveState,
    LockedStage,
)
from cormorant.service.overlay import Missing, OverlayStore
from cormorant.service.wal import WriteLog
from cormorant.types import Document

log = logging.getLogger(__name__)
LIVE_DIR = "live"


class ReadOnlyIndex(CormorantError):
    """A write to an index that cannot take one (its stages, or its directory)."""


@dataclass(frozen=True)
class WriteResult:
    """What a write did: the index version after it and the ids it changed or did not find."""

    version: int
    changed: list[str]
    not_found: list[str]


def pipeline_key(text: str) -> str:
    """How a requested pipeline string is matched to the allow-list: whitespace ignored."""
    return "".join(text.split())


class LiveIndex:
    """One index directory served with live writes (see the module docstring)."""

    def __init__(self, name: str, path: Path, meta: dict[str, Any], base_docs: DocStore,
                 pipelines: dict[str, Stage], default: str, states: dict[int, LiveState],
                 describe: list[dict[str, Any]]) -> None:
        self.name, self.path, self.meta = name, path, meta
        self.base_docs = base_docs
        self.pipelines, self.default = pipelines, default
        self.states = states
        self.stages = describe
        self.version = 0
        self._shadowed: set[str] = set()
        self._live_ids: set[str] = set()
        self._base_count = int(meta.get("count", len(base_docs)))
        self._write_lock = threading.Lock()
        self._overlay: OverlayStore | None = None
        self._log: WriteLog | None = None
        self._lock_fd: int | None = None
        kinds = {rec["kind"] for rec in meta["leaves"]}
        self.read_only_reason: str | None = None
        if not kinds <= set(WRITABLE_KINDS):
            self.read_only_reason = (f"index {name!r} holds {', '.join(sorted(kinds))} stages;"
                                     f" live writes work for {' and '.join(WRITABLE_KINDS)} only")

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, name: str, path: str | Path, pipelines: list[str] | None = None,
             verify: bool = True, encoder_wrapper: Callable[[Any], Any] | None = None
             ) -> LiveIndex:
        """Open ``path``, its own pipeline and the allow-listed ``pipelines``, then replay
        live writes. ``encoder_wrapper`` wraps each dense stage's encoder (micro-batching).

        Raises:
            CormorantError: the directory is not an index, a pipeline does not fit it, or
            another process already serves it.
        """
        path = Path(path)
        read_meta(path, verify=False)  # a clear error for a path that is not an index
        # Opened once open_index has checked the checksums, so a damaged store is reported
        # as a checksum mismatch, not as whatever SQLite makes of it.
        opened: list[DocStore] = []

        def docs() -> DocStore:
            if not opened:
                opened.append(DocStore(path / DOCSTORE_FILE))
            return opened[0]
        states: dict[int, LiveState] = {}
        loaded: dict[tuple[int, str], Stage] = {}
        wrapped_encoders: dict[int, Any] = {}

        def wrap(position: int, leaf: Retriever) -> Stage:
            if isinstance(leaf, DenseRetriever) and encoder_wrapper is not None:
                # Document and query towers may be one model or two: one wrapper per model.
                for attribute in ("encoder", "query_encoder"):
                    encoder = getattr(leaf, attribute)
                    if id(encoder) not in wrapped_encoders:
                        wrapped_encoders[id(encoder)] = encoder_wrapper(encoder)
                    setattr(leaf, attribute, wrapped_encoders[id(encoder)])
            if position not in states:
                state = _state_for(position, leaf, docs())
                if state is None:
                    return LockedStage(leaf)
                states[position] = state
            return states[position].stage(leaf)

        first = open_index(path, None, verify=verify, loaded=loaded, wrap=wrap)
        base_docs = docs()
        default = first.meta["pipeline"]
        stages = {pipeline_key(default): first.pipeline}
        for text in pipelines or []:
            handle = open_index(path, text, verify=False, loaded=loaded, wrap=wrap)
            stages[pipeline_key(text)] = handle.pipeline
        describe = [{"name": rec["name"], "kind": rec["kind"], "params": rec["params"],
                     **_leaf_details(path / rec["dir"])} for rec in first.meta["leaves"]]
        index = cls(name, path, first.meta, base_docs, stages, default, states, describe)
        index._restore()
        return index

    def _restore(self) -> None:
        """Bring back live writes: the overlay store, then log records it does not hold yet."""
        live = self.path / LIVE_DIR
        if self.read_only_reason is None:
            try:
                live.mkdir(exist_ok=True)
                self._take_lock(live)
            except OSError as exc:
                self.read_only_reason = (f"index {self.name!r} is read-only: cannot write {live}"
                                         f" ({exc.strerror or exc})")
        if self.read_only_reason is not None:
            if (live / "log.jsonl").exists():
                raise CormorantError(f"index {self.path} has live writes in {live} that cannot"
                                     f" be opened: {self.read_only_reason}")
            return
        self._overlay = OverlayStore(live / "docs.sqlite")
        self._log = WriteLog(live / "log.jsonl")
        self._shadowed = self._overlay.shadowed_base_ids()
        docs = list(self._overlay.live_documents())
        self._live_ids = {d.doc_id for d in docs}
        self.version = self._overlay.applied_seq
        if docs or self._shadowed:
            vectors = {pos: self._stored_vectors(pos, state, docs) for pos, state in self.states.items()
                       if isinstance(state, DenseState)}
            change = Change(docs, [], frozenset(self._shadowed), vectors)
            for state in self.states.values():
                state.commit(state.prepare(change))
        replayed = 0
        for record in self._log.read():
            if record["seq"] > self.version:
                self._apply(record, durable=False)
                replayed += 1
        if replayed:
            log.info("index %s: replayed %d write(s) from the log", self.name, replayed)

    def _stored_vectors(self, position: int, state: DenseState, docs: list[Any]) -> np.ndarray | None:
        stored = self._overlay.vectors(position, state.dim) if self._overlay else {}
        if not docs or any(d.doc_id not in stored for d in docs):
            return None  # e.g. a stage first served after the writes: encode them again
        return np.stack([stored[d.doc_id] for d in docs])

    def _take_lock(self, live: Path) -> None:
        fd = os.open(live / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CormorantError(f"index {self.path} is already served by another process"
                                 " (two writers would corrupt its live log)") from None
        self._lock_fd = fd

    # -- reading ---------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Documents searchable now: built ones not replaced or deleted, plus live ones."""
        return self._base_count - len(self._shadowed) + len(self._live_ids)

    @property
    def writable(self) -> bool:
        return self.read_only_reason is None

    def stage(self, pipeline: str | None) -> Stage | None:
        """The stage for a requested pipeline string, or None if it is not allowed."""
        return self.pipelines.get(pipeline_key(pipeline or self.default))

    def allowed_pipelines(self) -> list[str]:
        return [str(stage) for stage in self.pipelines.values()]

    def search(self, texts: list[str], k: int, pipeline: str | None = None
               ) -> list[list[tuple[str, float]]]:
        """The top ``k`` (doc id, score) per query text, best first."""
        stage = self.stage(pipeline)
        if stage is None:
            raise CormorantError(f"pipeline {pipeline!r} is not served for index {self.name!r}")
        queries = {str(i): text for i, text in enumerate(texts)}
        # Stages that read text (rerank, feedback) see live writes through this index.
        run = stage.search(queries, k=k, documents=self)
        return [run.ranked(str(i)) for i in range(len(texts))]

    def get(self, doc_id: str) -> Document | None:
        """The current document with this id, or None."""
        if self._overlay is not None:
            found = self._overlay.lookup(doc_id)
            if found is not Missing:
                return found  # type: ignore[return-value]
        return self.base_docs.get(doc_id)

    def get_many(self, doc_ids: list[str]) -> dict[str, Document]:
        """The current documents among ``doc_ids``."""
        found: dict[str, Document] = {}
        rest = doc_ids
        if self._overlay is not None and (self._live_ids or self._shadowed):
            rest = []
            for doc_id in doc_ids:
                doc = self._overlay.lookup(doc_id)
                if doc is Missing:
                    rest.append(doc_id)
                elif doc is not None:
                    found[doc_id] = doc
        found.update(self.base_docs.get_many(rest))
        return found

    # -- writing ---------------------------------------------------------------------------

    def put(self, documents: list[Document]) -> WriteResult:
        """Add or replace ``documents``; durable and searchable when this returns."""
        return self._write({"op": "put", "docs": [_doc_json(d) for d in documents]})

    def delete(self, doc_ids: list[str]) -> WriteResult:
        """Delete the documents with these ids; ids not present are reported, not logged."""
        with self._write_lock:
            present = [d for d in doc_ids if self.get(d) is not None]
            found = set(present)
            missing = [d for d in doc_ids if d not in found]
            if not present:
                return WriteResult(self.version, [], missing)
            result = self._write_locked({"op": "delete", "ids": present})
        return WriteResult(result.version, present, missing)

    def _write(self, record: dict[str, Any]) -> WriteResult:
        with self._write_lock:
            return self._write_locked(record)

    def _write_locked(self, record: dict[str, Any]) -> WriteResult:
        if self.read_only_reason is not None:
            raise ReadOnlyIndex(self.read_only_reason)
        record = {"seq": self.version + 1, **record}
        return self._apply(record, durable=True)

    def _apply(self, record: dict[str, Any], durable: bool) -> WriteResult:
        """Prepare every stage, log (if ``durable``), store, then publish one write."""
        assert self._overlay is not None and self._log is not None
        puts = [_doc_from_json(d) for d in record.get("docs", [])]
        deletes = list(record.get("ids", []))
        in_base = {d: self._in_base(d) for d in [p.doc_id for p in puts] + deletes}
        shadowed = self._shadowed | {d for d, base in in_base.items() if base}
        change = Change(puts, deletes, frozenset(shadowed))
        prepared = {pos: state.prepare(change) for pos, state in self.states.items()}
        if durable:
            self._log.append(record)  # the point of no return: fsynced before anything shows
        vectors = {pos: v for pos, state in self.states.items()
                   if (v := state.vectors(prepared[pos])) is not None}
        try:
            self._overlay.apply(record["seq"], puts, [(d, in_base[d]) for d in deletes],
                                vectors, in_base)
        except BaseException:
            # The record is logged but not stored; a later write would reuse its sequence
            # number and hide it on replay. Refuse writes until a restart replays the log.
            self.read_only_reason = f"index {self.name!r}: the live store failed; restart to replay"
            raise
        for pos, state in self.states.items():
            state.commit(prepared[pos])
        self._shadowed = shadowed
        self._live_ids = (self._live_ids - set(deletes)) | {p.doc_id for p in puts}
        self.version = record["seq"]
        return WriteResult(self.version, [p.doc_id for p in puts] or deletes, [])

    def _in_base(self, doc_id: str) -> bool:
        return doc_id in self._shadowed or self.base_docs.get(doc_id) is not None

    # -- describing and closing ------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/indexes/{name}`` answers."""
        encoders = [s["encoder"] for s in self.stages if s.get("encoder")]
        return {"name": self.name, "pipeline": self.default,
                "kind": "+".join(s["kind"] for s in self.stages),
                "encoder": encoders[0] if encoders else None, "count": self.count,
                "version": self.version, "format_version": FORMAT_VERSION,
                "built_count": self._base_count, "writable": self.writable,
                "read_only_reason": self.read_only_reason, "stages": self.stages,
                "pipelines": self.allowed_pipelines()}

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
        if self._overlay is not None:
            self._overlay.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _state_for(position: int, leaf: Retriever, base_docs: DocStore) -> LiveState | None:
    if isinstance(leaf, DenseRetriever):
        return DenseState(position, leaf)
    if isinstance(leaf, BM25Retriever):
        return BM25State(position, leaf, base_docs)
    return None


def _leaf_details(directory: Path) -> dict[str, Any]:
    meta = read_meta(directory, verify=False)
    encoder = meta.get("encoder") or {}
    index = meta.get("index") if isinstance(meta.get("index"), dict) else {}
    return {"encoder": encoder.get("model"), "count": meta.get("count") or index.get("count"),
            "factory": index.get("factory")}


def _doc_json(doc: Document) -> dict[str, Any]:
    return {"doc_id": doc.doc_id, "title": doc.title, "text": doc.text,
            "fields": dict(doc.fields)}


def _doc_from_json(data: dict[str, Any]) -> Document:
    return Document(data["doc_id"], data.get("text", ""), title=data.get("title", ""),
                    fields=data.get("fields") or {})
