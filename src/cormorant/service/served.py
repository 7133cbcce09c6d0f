"""A served index: the library's writable index (:mod:`cormorant.retrieval.live`) with the
pipelines the service allows over it.

Writes, their log, the document store, segments and the write lock all live in the index;
this class only names the index, matches requested pipeline strings to the allow-list, and
adapts stored stages for threads (encoders shared by micro-batching; stages whose libraries are
not thread-safe searched one at a time).

Example:
    >>> served = ServedIndex.open("scifact", "indexes/scifact", pipelines=["bm25"])  # doctest: +SKIP
    >>> served.put([Document("new-1", "Cormorants dive for fish.")])  # doctest: +SKIP
    >>> served.search(["diving birds"], k=3)[0][0]  # doctest: +SKIP
    ('new-1', 0.71...)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cormorant.errors import CormorantError, IndexLocked
from cormorant.index.format import FORMAT_VERSION, read_meta
from cormorant.pipeline import Flow, Stage
from cormorant.pipeline_syntax import Spec
from cormorant.retrieval.assemble import IndexHandle, open_index
from cormorant.retrieval.base import Retriever
from cormorant.retrieval.dense import DenseRetriever
from cormorant.retrieval.live import LiveIndex, WriteResult
from cormorant.types import Document

__all__ = ["ServedIndex", "WriteResult", "pipeline_key"]


def pipeline_key(text: str) -> str:
    """How a requested pipeline string is matched to the allow-list: whitespace ignored."""
    return "".join(text.split())


class ServedIndex:
    """One index directory served with writes (see the module docstring)."""

    def __init__(self, name: str, handle: IndexHandle, pipelines: dict[str, Stage],
                 describe: list[dict[str, Any]]) -> None:
        self.name, self.handle = name, handle
        self.path, self.meta = handle.path, handle.meta
        self.default = handle.meta["pipeline"]
        self.pipelines = pipelines
        self.stages = describe

    @classmethod
    def open(cls, name: str, path: str | Path, pipelines: list[str] | None = None,
             verify: bool = True, encoder_wrapper: Callable[[Any], Any] | None = None
             ) -> ServedIndex:
        """Open ``path`` for writing (its own pipeline and the allow-listed ``pipelines``);
        a directory the process may not write is served read-only. ``encoder_wrapper`` wraps
        each dense stage's encoder (micro-batching).

        Raises:
            CormorantError: the directory is not an index, a pipeline does not fit it, or
            another process writes to it.
        """
        path = Path(path)
        read_meta(path, verify=False)  # a clear error for a path that is not an index
        wrap = ThreadSafety(encoder_wrapper)
        try:
            handle = open_index(path, None, verify=verify, wrap=wrap, write=True)
        except IndexLocked:
            raise CormorantError(f"index {path} is already served or written by another"
                                 " process (two writers would corrupt it)") from None
        except OSError as exc:  # a read-only mount, a file where live/ should be
            handle = open_index(path, None, verify=verify, wrap=wrap)
            handle.live.read_only_reason = (f"index {name!r} is read-only: cannot write {path}"
                                            f" ({exc.strerror or exc})")
        return cls.from_handle(name, handle, pipelines)

    @classmethod
    def from_handle(cls, name: str, handle: IndexHandle | Any,
                    pipelines: list[str] | None = None) -> ServedIndex:
        """Serve an opened index (or a sharded one whose shards are served elsewhere, as on
        Ray Serve) with its own pipeline and the allow-listed ``pipelines``; closes the handle
        if one of them does not fit it.

        Raises:
            CormorantError: a pipeline does not fit the index.
        """
        stages = {pipeline_key(handle.meta["pipeline"]): handle.pipeline}
        try:
            for text in pipelines or []:
                stages[pipeline_key(text)] = handle.open_pipeline(text)
        except BaseException:
            handle.close()
            raise
        describe = [{"name": rec["name"], "kind": rec["kind"], "params": rec["params"],
                     **_leaf_details(folder)} for rec, folder in handle.stored_leaves()]
        return cls(name, handle, stages, describe)

    @property
    def live(self) -> LiveIndex:
        return self.handle.live

    # -- reading ---------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return self.live.count

    @property
    def version(self) -> int:
        return self.live.version

    @property
    def writable(self) -> bool:
        return self.live.writable

    @property
    def read_only_reason(self) -> str | None:
        return self.live.read_only_reason

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
        run = stage.search(queries, k=k)
        return [run.ranked(str(i)) for i in range(len(texts))]

    def get(self, doc_id: str) -> Document | None:
        return self.live.get(doc_id)

    def get_many(self, doc_ids: list[str]) -> dict[str, Document]:
        return self.live.get_many(doc_ids)

    # -- writing ---------------------------------------------------------------------------

    def put(self, documents: list[Document]) -> WriteResult:
        """Add or replace ``documents``; durable and searchable when this returns."""
        return self.live.add(documents)

    def delete(self, doc_ids: list[str]) -> WriteResult:
        """Delete the documents with these ids; ids not present are reported."""
        return self.live.delete(doc_ids)

    # -- describing and closing ------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/indexes/{name}`` answers."""
        encoders = [s["encoder"] for s in self.stages if s.get("encoder")]
        return {"name": self.name, "pipeline": self.default,
                "kind": "+".join(s["kind"] for s in self.stages),
                "encoder": encoders[0] if encoders else None, "count": self.count,
                "version": self.version, "format_version": FORMAT_VERSION,
                "built_count": int(self.meta.get("count", 0)), "writable": self.writable,
                "read_only_reason": self.read_only_reason, "stages": self.stages,
                "pipelines": self.allowed_pipelines()}

    def close(self) -> None:
        """Commit what writes hold in memory; release the index and its lock."""
        self.handle.close()


class ThreadSafety:
    """The service's view of each loaded stage: dense encoders wrapped (one micro-batcher per
    model), and stages not marked ``thread_safe`` searched one at a time."""

    def __init__(self, encoder_wrapper: Callable[[Any], Any] | None) -> None:
        self.encoder_wrapper = encoder_wrapper
        self.wrapped: dict[int, Any] = {}

    def __call__(self, position: int, leaf: Retriever) -> Stage:
        if isinstance(leaf, DenseRetriever) and self.encoder_wrapper is not None:
            # Document and query towers may be one model or two: one wrapper per model.
            for attribute in ("encoder", "query_encoder"):
                encoder = getattr(leaf, attribute)
                if id(encoder) not in self.wrapped:
                    self.wrapped[id(encoder)] = self.encoder_wrapper(encoder)
                setattr(leaf, attribute, self.wrapped[id(encoder)])
        return leaf if leaf.thread_safe else LockedStage(leaf)


class LockedStage(Stage):
    """A read-only leaf whose library may not be thread-safe (Pyserini's JVM searcher, token
    encoders): one search at a time."""

    stores_index = True

    def __init__(self, inner: Retriever) -> None:
        self.inner = inner
        self.settings = inner.settings
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # rocchio(dense) and the like read the stage's own methods; the lock guards searches.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def transform(self, flow: Flow) -> Flow:
        with self._lock:
            return self.inner.transform(flow)

    def spec(self) -> Spec:
        return self.inner.spec()


def _leaf_details(directory: Path) -> dict[str, Any]:
    meta = read_meta(directory, verify=False)
    encoder = meta.get("encoder") or {}
    index = meta.get("index") if isinstance(meta.get("index"), dict) else {}
    return {"encoder": encoder.get("model"), "count": meta.get("count") or index.get("count"),
            "factory": index.get("factory")}
