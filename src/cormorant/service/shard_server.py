"""One shard of a sharded index as a Ray Serve replica holds it: the shard's writer, or a
reader that follows the writer's write-ahead log.

Each shard has exactly one writer (a deployment of one replica): it opens the shard for
writing (its lock, log and document store), so a write is acknowledged only once it is in the
log and fsynced, as for any index (:mod:`cormorant.retrieval.live`). Readers (a deployment of
R replicas) open the shard without the lock. Every read carries ``at_least``, the shard
version the router has seen acknowledged; a reader behind it first shows the records the log
holds past its own version (:meth:`LiveIndex.follow`), or, when the writer has committed
since, opens the shard again. So a client reads its own writes, on whichever replica.

Nothing here imports Ray: :mod:`cormorant.service.ray_serve` makes deployments of this class.

Example:
    >>> writer = ShardServer("indexes/scifact-2/shard-000", "bm25", write=True)  # doctest: +SKIP
    >>> reader = ShardServer("indexes/scifact-2/shard-000", "bm25", write=False)  # doctest: +SKIP
    >>> state = writer.add([Document("new-1", "Cormorants dive.")])  # doctest: +SKIP
    >>> reader.get_many(["new-1"], at_least=state["version"])  # doctest: +SKIP
    {'new-1': Document(doc_id='new-1', ...)}
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np

from cormorant import registry
from cormorant.errors import CormorantError
from cormorant.pipeline import Flow, Stage
from cormorant.pipeline_syntax import Leaf, parse
from cormorant.retrieval.assemble import IndexHandle, open_index
from cormorant.retrieval.live import WriteResult
from cormorant.service.served import ThreadSafety
from cormorant.types import Document, Queries, Run

CATCH_UP_SECONDS = 10.0
"""How long a reader waits for the writer's log to show a version the router asks for (on a
shared file system a write may reach another host's view a little later)."""


class ShardServer:
    """A shard opened for writing (``write``) or reading, answering the router's calls."""

    def __init__(self, folder: str, leaves: str, write: bool, verify: bool = True,
                 catch_up_s: float = CATCH_UP_SECONDS) -> None:
        self.folder, self.leaves, self.write = folder, leaves, write
        self.verify, self.catch_up_s = verify, catch_up_s
        self._lock = threading.Lock()
        self._handle = self._open()
        self._earlier: IndexHandle | None = None
        self._parts: dict[str, Stage] = {}

    def _open(self) -> IndexHandle:
        # Stages whose libraries are not thread-safe are searched one at a time: Serve runs a
        # replica's calls in a thread pool.
        return open_index(self.folder, self.leaves, self.verify, ThreadSafety(None),
                          write=self.write)

    # -- following the writer ----------------------------------------------------------------

    def caught_up(self, at_least: int) -> IndexHandle:
        """The shard, showing at least version ``at_least``.

        Raises:
            CormorantError: the writer's log does not show that version within
                ``catch_up_s`` (the index is not on a file system this replica shares).
        """
        if self.write or self._handle.live.version >= at_least:
            return self._handle
        deadline = time.monotonic() + self.catch_up_s
        with self._lock:
            while self._handle.live.version < at_least:
                if not self._handle.live.follow():
                    self._reopen()
                    continue
                if self._handle.live.version >= at_least:
                    break
                if time.monotonic() > deadline:
                    raise CormorantError(
                        f"shard {self.folder}: this replica shows writes up to version"
                        f" {self._handle.live.version}, the router asks for {at_least}; is"
                        " the index on a file system every Ray node shares?")
                time.sleep(0.01)
        return self._handle

    def _reopen(self) -> None:
        """Open the shard again (the writer committed: its log was emptied into segments).
        The handle before is closed one reopening later, so searches still running on it
        finish."""
        fresh = self._open()
        if self._earlier is not None:
            self._earlier.close()
        self._earlier, self._handle, self._parts = self._handle, fresh, {}

    def part(self, text: str) -> Stage:
        """The shard's copy of the stored stage ``text`` names (``"bm25"``, ...)."""
        handle = self._handle
        stage = self._parts.get(text)
        if stage is None:
            leaf = parse(text)
            if not isinstance(leaf, Leaf):
                raise CormorantError(f"{text!r} is not one stage")
            stage = handle.opener.open(leaf, registry.stage_class(leaf.name))
            self._parts[text] = stage
        return stage

    # -- reading ----------------------------------------------------------------------------

    def state(self, at_least: int = 0) -> dict[str, Any]:
        """The shard's version, live document count and why it refuses writes (or None)."""
        live = self.caught_up(at_least).live
        return {"version": live.version, "count": live.count,
                "read_only_reason": live.read_only_reason}

    def describe(self, text: str, at_least: int = 0) -> dict[str, Any]:
        """What the router needs of a stored stage without loading it."""
        self.caught_up(at_least)
        stage = self.part(text)
        return {"name": stage.name, "settings": dict(stage.settings), "spec": stage.spec(),
                "vector": hasattr(stage, "search_vectors")}

    def statistics(self, text: str, queries: Queries, at_least: int) -> Any:
        self.caught_up(at_least)
        return self.part(text).statistics(queries)  # type: ignore[attr-defined]

    def rank(self, text: str, flow: Flow, statistics: Any, at_least: int) -> Run:
        """The stage's ranking of ``flow`` on this shard, scoring with the collection's
        ``statistics`` where its scores need them."""
        handle = self.caught_up(at_least)
        stage: Any = self.part(text)
        if statistics is not None:
            stage = stage.with_statistics(statistics)
        return stage.transform(replace(flow, documents=handle.live)).ranking(stage)

    def encode_queries(self, text: str, queries: Queries, at_least: int = 0) -> np.ndarray:
        return self.part(text).encode_queries(queries)  # type: ignore[attr-defined]

    def document_vectors(self, text: str, doc_ids: list[str], at_least: int) -> np.ndarray:
        self.caught_up(at_least)
        return self.part(text).document_vectors(doc_ids)  # type: ignore[attr-defined]

    def search_vectors(self, text: str, qids: list[str], vectors: np.ndarray, k: int,
                       at_least: int) -> Run:
        self.caught_up(at_least)
        return self.part(text).search_vectors(qids, vectors, k)  # type: ignore[attr-defined]

    def score_candidates(self, text: str, qids: list[str], vectors: np.ndarray,
                         candidates: Run, at_least: int) -> Run:
        self.caught_up(at_least)
        return self.part(text).score_candidates(  # type: ignore[attr-defined]
            qids, vectors, candidates)

    def get_many(self, doc_ids: list[str], at_least: int) -> dict[str, Document]:
        return self.caught_up(at_least).live.get_many(doc_ids)

    def documents(self, at_least: int) -> list[Document]:
        return list(self.caught_up(at_least).live.documents())

    # -- writing (the writer only) ----------------------------------------------------------

    def add(self, documents: list[Document]) -> dict[str, Any]:
        """Add or replace ``documents``; answered once they are in the fsynced log."""
        return self._acknowledge(self._handle.live.add(documents))

    def delete(self, doc_ids: list[str]) -> dict[str, Any]:
        return self._acknowledge(self._handle.live.delete(doc_ids))

    def commit(self) -> dict[str, Any]:
        self._handle.live.commit()
        return self.state()

    def _acknowledge(self, result: WriteResult) -> dict[str, Any]:
        return {**self.state(), "changed": result.changed, "not_found": result.not_found}

    def close(self) -> None:
        """Commit (the writer) and release the shard's files and lock."""
        self._handle.close()
        if self._earlier is not None:
            self._earlier.close()

    def __del__(self) -> None:
        # Serve calls this when it stops a replica on purpose; a killed writer commits
        # nothing, and its log is replayed by the next one.
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the process is going away; the log holds the writes
            pass
