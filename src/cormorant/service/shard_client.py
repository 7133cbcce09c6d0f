"""The router's client of a shard served on Ray Serve: the same calls an opened in-process
shard answers (:class:`cormorant.retrieval.shard_index.ShardClient`), each sent to the shard's
deployments through their ``DeploymentHandle``s.

Reads go to the reader deployment (Serve picks a replica) and carry ``at_least``, the shard
version the writer last acknowledged to this router; writes go to the writer, whose answer
moves that version on. So a search after a write shows the write, whichever replica serves it
(:mod:`cormorant.service.shard_server`). The router itself
(:mod:`cormorant.retrieval.sharded`) and the write routing (``ShardedLive``) are unchanged.

Nothing here imports Ray: a handle is anything whose ``method.remote(...)`` returns an object
with ``result(timeout_s=...)``.

Example:
    >>> shards = [ServeShard(folder, writer, reader) for folder, writer, reader in served]  # doctest: +SKIP
    >>> handle = open_served_sharded("indexes/scifact-2", shards)  # doctest: +SKIP
    >>> handle.pipeline.search("vitamin d", k=10)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cormorant.errors import CormorantError, ReadOnlyIndex
from cormorant.index.format import read_meta
from cormorant.pipeline import Flow, Stage
from cormorant.pipeline_syntax import Leaf
from cormorant.retrieval.assemble import validate
from cormorant.retrieval.live import WriteResult
from cormorant.retrieval.shard_index import ShardedHandle, shard_folders
from cormorant.types import Document, Queries, Run

CALL_TIMEOUT_S = 120.0
"""The longest a call to a shard replica may take before the router gives up on it."""


class ServeShard:
    """One shard reached through its writer and reader deployments (see module docstring)."""

    def __init__(self, folder: str | Path, writer: Any, reader: Any,
                 timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.folder, self.writer, self.reader = Path(folder), writer, reader
        self.timeout_s = timeout_s
        self.live = ServeLive(self)
        self.live.update(self.call(self.writer, "state"))

    @property
    def opener(self) -> ServeShard:
        return self

    def open(self, leaf: Leaf, cls: type[Stage]) -> ServePart:
        """The shard's copy of the stored stage ``leaf`` names."""
        text = str(leaf)
        info = self.read("describe", text)
        return (ServeVectorPart if info["vector"] else ServePart)(self, text, info)

    def stored_leaves(self) -> list[tuple[dict[str, Any], Path]]:
        """Each stored stage's record and folder (read from the shared index directory)."""
        meta = read_meta(self.folder, verify=False)
        return [(record, self.folder / record["dir"]) for record in meta["leaves"]]

    def call(self, deployment: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        """``method`` on one replica of ``deployment``; its errors raised here."""
        try:
            return getattr(deployment, method).remote(*args, **kwargs).result(
                timeout_s=self.timeout_s)
        except CormorantError:
            raise
        except TimeoutError:
            raise CormorantError(f"shard {self.folder}: {method} took over"
                                 f" {self.timeout_s:g} s") from None

    def read(self, method: str, *args: Any) -> Any:
        """``method`` on a reader replica that shows every write acknowledged so far."""
        return self.call(self.reader, method, *args, at_least=self.live.version)


class ServePart:
    """A shard's copy of one stored stage, as the router (``ShardedStage``) calls it."""

    thread_safe = True  # each call is a request to a replica

    def __init__(self, shard: ServeShard, text: str, info: dict[str, Any],
                 statistics: Any = None) -> None:
        self.shard, self.text, self.info, self.collection = shard, text, info, statistics
        self.name, self.settings = info["name"], info["settings"]

    def __str__(self) -> str:
        return self.text

    def spec(self) -> Any:
        return self.info["spec"]

    def statistics(self, queries: Queries) -> Any:
        return self.shard.read("statistics", self.text, queries)

    def with_statistics(self, statistics: Any) -> ServePart:
        """This part, scoring with the whole collection's ``statistics`` (sent with each call)."""
        return type(self)(self.shard, self.text, self.info, statistics)

    def transform(self, flow: Flow) -> Flow:
        # Document text stays with the shard: the replica binds its own store.
        sent = replace(flow, documents=None)
        return flow.with_run(self.shard.read("rank", self.text, sent, self.collection))


class ServeVectorPart(ServePart):
    """A served ``dense`` part: the vector methods ``rocchio(dense)`` and the router use."""

    def encode_queries(self, queries: Queries) -> np.ndarray:
        return self.shard.read("encode_queries", self.text, queries)

    def document_vectors(self, doc_ids: list[str]) -> np.ndarray:
        return self.shard.read("document_vectors", self.text, doc_ids)

    def search_vectors(self, qids: list[str], vectors: np.ndarray, k: int) -> Run:
        return self.shard.read("search_vectors", self.text, qids, vectors, k)

    def score_candidates(self, qids: list[str], query_vectors: np.ndarray,
                         candidates: Run) -> Run:
        return self.shard.read("score_candidates", self.text, qids, query_vectors, candidates)


class ServeLive:
    """A served shard's writes and documents. ``version`` and ``count`` are the writer's as of
    its last answer to this router (read without a call: the service reads them on its event
    loop, where waiting on a replica would stall every request)."""

    @property
    def owners(self) -> dict[int, Any]:
        """None here: the stages that hold the shard's segments live in its replicas."""
        return {}

    def __init__(self, shard: ServeShard) -> None:
        self.shard = shard
        self.version, self.count = 0, 0
        self.read_only_reason: str | None = None

    def update(self, state: dict[str, Any]) -> None:
        # Answers may arrive out of order (two write threads): the version only moves on.
        if state["version"] >= self.version:
            self.version, self.count = state["version"], state["count"]
        self.read_only_reason = self.read_only_reason or state["read_only_reason"]

    @property
    def writable(self) -> bool:
        return self.read_only_reason is None

    def get(self, doc_id: str) -> Document | None:
        return self.get_many([doc_id]).get(doc_id)

    def get_many(self, doc_ids: list[str]) -> dict[str, Document]:
        return self.shard.read("get_many", doc_ids)

    def documents(self) -> Iterator[Document]:
        yield from self.shard.read("documents")

    def add(self, documents: list[Document]) -> WriteResult:
        return self._written(self.shard.call(self.shard.writer, "add", documents))

    def delete(self, doc_ids: list[str]) -> WriteResult:
        return self._written(self.shard.call(self.shard.writer, "delete", doc_ids))

    def _written(self, answer: dict[str, Any]) -> WriteResult:
        self.update(answer)
        return WriteResult(answer["version"], answer["changed"], answer["not_found"])

    def commit(self) -> None:
        self.update(self.shard.call(self.shard.writer, "commit"))

    def merge(self, retrain: bool | None = None) -> None:
        raise ReadOnlyIndex("a sharded index served on Ray Serve is not merged while served:"
                            " stop serving, then run cormorant index merge")

    def close(self, commit: bool = True) -> None:
        """Nothing to release here: the writer replica commits when Serve stops it."""


def open_served_sharded(path: str | Path, shards: list[ServeShard],
                        pipeline: str | None = None) -> ShardedHandle:
    """A sharded index whose shards are served by Ray Serve deployments, opened as
    ``open_index`` opens one in process (the same :class:`ShardedHandle` and router).

    Raises:
        IndexFormatError: the manifest or a shard does not check out.
        CormorantError: ``shards`` is not one client per shard.
    """
    path = Path(path)
    meta = read_meta(path, verify=False)
    folders = shard_folders(path, meta)
    if [f for f, _ in folders] != [s.folder for s in shards]:
        raise CormorantError(f"{path}: the served shards are not this index's"
                             f" {len(folders)} shards in order")
    text = pipeline or meta["pipeline"]
    validate(text)
    handle = ShardedHandle(path, meta, list(shards))
    handle.pipeline = handle.open_pipeline(text)
    return handle
