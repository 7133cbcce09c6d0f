"""How each kind of stage sees live writes, without touching the index as built.

- ``dense``: the built FAISS index stays as it is. Replaced and deleted documents become
  tombstones that searches skip (the base index is asked for ``k`` plus the number of
  tombstones, so the top ``k`` survive the filter), and added or replaced documents are encoded
  once and searched exactly in a small in-memory matrix whose scores merge with the base ones.
  This works for every FAISS kind (flat, HNSW, IVF, PQ), none of which needs to support removal.
- ``bm25``: BM25 scores depend on the whole collection (IDF, average length), so a delta index
  would score differently from a fresh build. Each write instead re-indexes the current
  collection from cached token ids (the base documents are tokenised once, on the first write)
  and swaps the new model in: results equal a fresh build over the same documents. The cost
  is linear in the collection (about 0.1-0.5 s for SciFact's 5,183 documents), paid by the write.
- other stages (Lucene, chamfer, muvera) are served read-only.

Each state publishes an immutable snapshot that a write replaces in one assignment, so a search
never sees half a write.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cormorant.index.docstore import DocStore
from cormorant.pipeline import Flow, Stage
from cormorant.pipeline_syntax import Spec
from cormorant.retrieval.base import Retriever
from cormorant.retrieval.bm25 import BM25Retriever, analyzer, index_tokens
from cormorant.retrieval.dense import DenseRetriever
from cormorant.types import Document, Queries, Run

WRITABLE_KINDS = ("dense", "bm25")


@dataclass(frozen=True)
class Change:
    """One write as every stage sees it: documents put, ids deleted, and the base ids that are
    hidden by live writes once it is applied."""

    puts: list[Document]
    deletes: list[str]
    shadowed: frozenset[str]
    vectors: dict[int, np.ndarray] = field(default_factory=dict)  # known vectors (replay)

    @property
    def touched(self) -> set[str]:
        return {d.doc_id for d in self.puts} | set(self.deletes)


class LiveState:
    """What one stored stage holds beyond its built index; shared by every loaded copy."""

    position: int

    def prepare(self, change: Change) -> Any:
        """Do the expensive part of a write (encode, re-index) without publishing it."""
        raise NotImplementedError

    def commit(self, prepared: Any) -> None:
        """Publish what :meth:`prepare` made."""
        raise NotImplementedError

    def vectors(self, prepared: Any) -> np.ndarray | None:
        """Vectors to persist for the write's documents, row i for ``puts[i]``."""
        return None

    def retrieve(self, inner: Retriever, queries: Queries, k: int) -> Run:
        raise NotImplementedError

    def rescore(self, inner: Retriever, queries: Queries, candidates: Run) -> Run:
        raise NotImplementedError

    def stage(self, inner: Retriever) -> Stage:
        """The stage that answers for ``inner`` through this state."""
        return LiveStage(inner, self)


@dataclass(frozen=True)
class _DenseSnapshot:
    tombstones: frozenset[str]
    ids: list[str]
    matrix: np.ndarray


class DenseState(LiveState):
    """Tombstones over the built FAISS index plus an exact in-memory delta."""

    def __init__(self, position: int, retriever: DenseRetriever) -> None:
        self.position = position
        self.encoder = retriever.encoder  # the document tower (queries may have their own)
        self.dim = retriever.index.dim
        self.snapshot = _DenseSnapshot(frozenset(), [], np.zeros((0, self.dim), np.float32))

    def prepare(self, change: Change) -> tuple[_DenseSnapshot, np.ndarray]:
        known = change.vectors.get(self.position)
        if known is None:
            known = self.encoder.encode_documents([d.contents for d in change.puts])
        new = np.asarray(known, dtype=np.float32).reshape(len(change.puts), self.dim)
        old = self.snapshot
        touched = change.touched
        keep = [i for i, doc_id in enumerate(old.ids) if doc_id not in touched]
        snapshot = _DenseSnapshot(change.shadowed, [old.ids[i] for i in keep]
                                  + [d.doc_id for d in change.puts],
                                  np.vstack([old.matrix[keep], new]))
        return snapshot, new

    def commit(self, prepared: tuple[_DenseSnapshot, np.ndarray]) -> None:
        self.snapshot = prepared[0]

    def vectors(self, prepared: tuple[_DenseSnapshot, np.ndarray]) -> np.ndarray:
        return prepared[1]

    def stage(self, inner: Retriever) -> Stage:
        assert isinstance(inner, DenseRetriever)
        return LiveDenseStage(inner, self)

    def retrieve(self, inner: Retriever, queries: Queries, k: int) -> Run:
        assert isinstance(inner, DenseRetriever)
        return self.search_vectors(inner, list(queries), inner.encode_queries(queries), k)

    def search_vectors(self, inner: DenseRetriever, qids: list[str], vectors: np.ndarray,
                       k: int) -> Run:
        """The top ``k`` of the live collection for already encoded queries."""
        snap = self.snapshot
        base = Run({q: {} for q in qids})
        base_k = min(k + len(snap.tombstones), len(inner.index.ids))
        if base_k > 0:
            scores, rows = inner.index.search(vectors, base_k)
            base = Run.from_arrays(qids, scores, rows, inner.index.ids)
        delta = vectors @ snap.matrix.T if snap.ids else None
        run = Run()
        for i, qid in enumerate(qids):
            hits = {d: s for d, s in base[qid].items() if d not in snap.tombstones}
            if delta is not None:
                hits.update(zip(snap.ids, delta[i].tolist(), strict=True))
            run[qid] = hits
        return run.topk(k)

    def rescore(self, inner: Retriever, queries: Queries, candidates: Run) -> Run:
        assert isinstance(inner, DenseRetriever)
        return self.score_vectors(inner, list(queries), inner.encode_queries(queries), candidates)

    def document_vectors(self, inner: DenseRetriever, doc_ids: list[str]) -> np.ndarray:
        """Current vectors of ``doc_ids``: written ones from the delta, others as built."""
        snap = self.snapshot
        live = {d: i for i, d in enumerate(snap.ids)}
        rows = [snap.matrix[live[d]] if d in live else inner.document_vectors([d])[0]
                for d in doc_ids]
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)

    def score_vectors(self, inner: DenseRetriever, qids: list[str], vectors: np.ndarray,
                      candidates: Run) -> Run:
        """Scores of each query's live candidates for already encoded queries."""
        snap = self.snapshot
        hidden = snap.tombstones | set(snap.ids)
        base = inner.score_candidates(qids, vectors, Run(
            {q: {d: s for d, s in docs.items() if d not in hidden} for q, docs in candidates.items()}))
        if not snap.ids:
            return base
        position = {d: i for i, d in enumerate(snap.ids)}
        for qid, qvec in zip(qids, vectors, strict=True):
            live = [d for d in candidates.get(qid, {}) if d in position]
            if live:
                scores = snap.matrix[[position[d] for d in live]] @ qvec
                base.setdefault(qid, {}).update(zip(live, scores.tolist(), strict=True))
        return base


class BM25State(LiveState):
    """A BM25 model re-indexed over the current collection on every write."""

    def __init__(self, position: int, retriever: BM25Retriever, base_docs: DocStore) -> None:
        self.position = position
        self.current: BM25Retriever | None = retriever
        self._base_ids = list(retriever.doc_ids)
        self._base_docs = base_docs
        self._settings = retriever.settings
        self._tokenizer: Any = None
        self._base_tokens: dict[str, list[int]] | None = None
        self._live_tokens: dict[str, list[int]] = {}
        # PyStemmer's stemmers are not thread-safe; queries are cheap next to encoding.
        self._lock = threading.Lock()

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if self._tokenizer is None:
            self._tokenizer = analyzer(self._settings)
        return [list(ids) for ids in self._tokenizer.streaming_tokenize(texts)]

    def _ensure_base_tokens(self) -> dict[str, list[int]]:
        # The built bm25s model keeps no per-document tokens; tokenise the base documents once,
        # in build order, the way BM25Retriever.build did.
        if self._base_tokens is None:
            tokens: dict[str, list[int]] = {}
            for start in range(0, len(self._base_ids), 2048):
                chunk = self._base_ids[start:start + 2048]
                docs = self._base_docs.get_many(chunk)
                texts = [docs[d].contents if d in docs else "" for d in chunk]
                tokens.update(zip(chunk, self._tokenize(texts), strict=True))
            self._base_tokens = tokens
        return self._base_tokens

    def prepare(self, change: Change) -> tuple[BM25Retriever | None, dict[str, list[int]]]:
        base = self._ensure_base_tokens()
        live = {d: t for d, t in self._live_tokens.items() if d not in change.touched}
        live.update(zip([d.doc_id for d in change.puts],
                        self._tokenize([d.contents for d in change.puts]), strict=True))
        ids = [d for d in self._base_ids if d not in change.shadowed] + list(live)
        if not ids:
            return None, live
        token_ids = [base[d] for d in ids[:len(ids) - len(live)]] + list(live.values())
        model = index_tokens(self._tokenizer, token_ids, self._settings)
        return BM25Retriever(model, ids, dict(self._settings)), live

    def commit(self, prepared: tuple[BM25Retriever | None, dict[str, list[int]]]) -> None:
        self.current, self._live_tokens = prepared

    def retrieve(self, inner: Retriever, queries: Queries, k: int) -> Run:
        current = self.current
        if current is None:
            return Run({q: {} for q in queries})
        with self._lock:
            return current.retrieve(queries, k)

    def rescore(self, inner: Retriever, queries: Queries, candidates: Run) -> Run:
        current = self.current
        if current is None:
            return Run({q: {} for q in queries})
        with self._lock:
            return current.rescore(queries, candidates)


class LiveStage(Stage):
    """A loaded leaf that answers through its stored stage's live state."""

    stores_index = True

    def __init__(self, inner: Retriever, state: LiveState) -> None:
        self.inner, self.state = inner, state
        self.settings = inner.settings

    def transform(self, flow: Flow) -> Flow:
        if flow.run is None:
            return flow.with_run(self.state.retrieve(self.inner, flow.queries,
                                                     flow.depth(self.inner.depth)))
        return flow.with_run(self.state.rescore(self.inner, flow.queries, flow.run))

    def spec(self) -> Spec:
        return self.inner.spec()


class LiveDenseStage(LiveStage):
    """A live dense leaf that also searches with given query vectors (``rocchio(dense)``)."""

    state: DenseState

    def __init__(self, inner: DenseRetriever, state: DenseState) -> None:
        super().__init__(inner, state)
        self.dense = inner

    @property
    def depth(self) -> int:
        return self.dense.depth

    def encode_queries(self, queries: Queries) -> np.ndarray:
        return self.dense.encode_queries(queries)

    def document_vectors(self, doc_ids: list[str]) -> np.ndarray:
        return self.state.document_vectors(self.dense, doc_ids)

    def search_vectors(self, qids: list[str], vectors: np.ndarray, k: int) -> Run:
        return self.state.search_vectors(self.dense, qids, vectors, k)

    def score_candidates(self, qids: list[str], query_vectors: np.ndarray,
                         candidates: Run) -> Run:
        return self.state.score_vectors(self.dense, qids, query_vectors, candidates)


class LockedStage(Stage):
    """A read-only leaf whose library may not be thread-safe (Pyserini's JVM searcher, token
    encoders): one search at a time."""

    stores_index = True

    def __init__(self, inner: Retriever) -> None:
        self.inner = inner
        self.settings = inner.settings
        self._lock = threading.Lock()

    def transform(self, flow: Flow) -> Flow:
        with self._lock:
            return self.inner.transform(flow)

    def spec(self) -> Spec:
        return self.inner.spec()
