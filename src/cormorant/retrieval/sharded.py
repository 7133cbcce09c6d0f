"""One stored stage of a sharded index, searched as one: the router.

A sharded index's pipeline is the pipeline as built, with each stored stage (a leaf:
``bm25``, ``dense``, ...) replaced by a :class:`ShardedStage` over every shard's copy of it.
Everything else (fusion, ``>>``, cut-offs, re-rankers, query rewriters) is the ordinary stage,
run once, on the merged rankings: ``rrf(bm25, dense)`` fuses the collection's ranks, not each
shard's (fusing per shard would mix local ranks).

- Ranking the collection, each shard ranks its own documents to the same depth and the lists
  are merged by score (ties as trec_eval orders them, as one index cuts its own ranking), so
  the top k of the merged list is the top k of one index over all documents.
- Scores that depend on the collection (BM25's N, document frequencies, average length) are
  gathered first: each shard counts its own (:meth:`Retriever.statistics`), the router adds
  them up and every shard scores with the sum (:meth:`Retriever.with_statistics`): Lucene's
  distributed-frequency search, so a shard's BM25 score is the unsharded one.
- Re-scoring (``a >> b``), each candidate goes to the shard that holds it
  (:func:`cormorant.index.sharding.shard_of`).

Each step calls every shard at once (:func:`cormorant.retrieval.fanout.fan_out`: a shared
thread pool; one after another where the parts are not ``thread_safe`` or their work holds
the GIL, as in-process ``bm25``'s does) and gathers the answers, in process and for shards
served on Ray Serve alike: a search waits for the slowest shard at each step, not for the
sum of them.

Example:
    >>> handle = open_index("indexes/scifact-4")  # a sharded index  # doctest: +SKIP
    >>> handle.pipeline.search("vitamin d", k=10)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import numpy as np

from cormorant import pipeline_syntax as syntax
from cormorant.errors import PipelineError
from cormorant.index.sharding import shard_of
from cormorant.pipeline import Flow, Stage
from cormorant.retrieval.fanout import fan_out
from cormorant.types import Queries, Run


class ShardedStage(Stage):
    """Every shard's copy of one stored stage (``parts[i]`` in shard ``i``), as one stage.

    Example:
        >>> from cormorant.retrieval.bm25 import BM25Retriever
        >>> from cormorant.types import Corpus, Document
        >>> docs = [Document(f"d{i}", text) for i, text in enumerate(
        ...     ["cats purr", "dogs bark", "cats and dogs", "birds sing"])]
        >>> whole = BM25Retriever.build(Corpus.from_documents(docs))
        >>> parts = [whole.part(lambda d, s=s: shard_of(d, 2) == s) for s in range(2)]
        >>> ShardedStage(parts).search("cats", k=2) == whole.search("cats", k=2)
        True
    """

    stores_index = True

    def __init__(self, parts: list[Any]) -> None:
        if not parts:
            raise PipelineError("a sharded stage needs at least one shard")
        self.parts = parts
        self.name = parts[0].name  # type: ignore[misc]
        self.settings = parts[0].settings

    @property
    def depth(self) -> int:
        return int(self.settings["depth"])

    @property
    def thread_safe(self) -> bool:
        return all(getattr(p, "thread_safe", False) for p in self.parts)

    def spec(self) -> syntax.Spec:
        return self.parts[0].spec()

    def transform(self, flow: Flow) -> Flow:
        scoring = self.scoring(flow.queries)
        if flow.run is None:
            k = flow.depth(self.depth)
            ranked = flow.with_k(k)
            runs = self.each([lambda p=p: p.transform(ranked).ranking(p) for p in scoring])
            return flow.with_run(merge(runs, k))
        routed = self.route(flow.run)
        runs = self.each([lambda p=p, part=part: p.transform(flow.with_run(part)).ranking(p)
                          for p, part in zip(scoring, routed, strict=True)])
        return flow.with_run(merge(runs))

    def each(self, calls: list[Any]) -> list[Any]:
        """``calls`` (one per shard) made at once; one after another where a part is not
        safe to call from another thread, or says (``overlaps = False``) that its work
        holds the GIL, so threads would only add hand-offs (in-process ``bm25``)."""
        parallel = self.thread_safe and all(getattr(p, "overlaps", True) for p in self.parts)
        return fan_out(calls, parallel=parallel)

    def scoring(self, queries: Queries) -> list[Any]:
        """Each shard's part, scoring with the whole collection's statistics where its scores
        need them (BM25), as is where they do not (dense)."""
        found = self.each([lambda p=p: p.statistics(queries) for p in self.parts])
        if any(s is None for s in found):
            return list(self.parts)
        total = functools.reduce(operator.add, found)
        return [p.with_statistics(total) for p in self.parts]

    def route(self, run: Run) -> list[Run]:
        """``run`` split by the shard that holds each document (every query in every part,
        possibly with no candidates)."""
        count = len(self.parts)
        routed = [Run({q: {} for q in run}) for _ in range(count)]
        for qid, docs in run.items():
            for doc_id, score in docs.items():
                routed[shard_of(doc_id, count)][qid][doc_id] = score
        return routed


def merge(runs: list[Run], k: int | None = None) -> Run:
    """Shards' rankings as one: every query's hits from every shard, the top ``k`` by score
    (all of them with no ``k``). Shards hold disjoint documents, so nothing is summed.

    Example:
        >>> merge([Run({"q": {"a": 1.0, "b": 0.5}}), Run({"q": {"c": 0.7}})], k=2)
        {'q': {'a': 1.0, 'c': 0.7}}
    """
    merged = Run()
    for run in runs:
        for qid, docs in run.items():
            merged.setdefault(qid, {}).update(docs)
    return merged if k is None else merged.topk(k)


class ShardedVectorStage(ShardedStage):
    """A sharded ``dense`` stage, with the vector methods ``rocchio(dense)`` moves queries
    through (:class:`cormorant.retrieval.reformulate.VectorSearch`), each sent where the
    documents are. Queries are encoded once, here, not once per shard."""

    def transform(self, flow: Flow) -> Flow:
        qids = list(flow.queries)
        vectors = self.encode_queries(flow.queries)
        if flow.run is None:
            return flow.with_run(self.search_vectors(qids, vectors, flow.depth(self.depth)))
        return flow.with_run(self.score_candidates(qids, vectors, flow.run))

    def encode_queries(self, queries: Queries) -> np.ndarray:
        # Every shard holds the same encoder (the manifest checks its fingerprint).
        return self.parts[0].encode_queries(queries)

    def document_vectors(self, doc_ids: list[str]) -> np.ndarray:
        count = len(self.parts)
        owners = [shard_of(d, count) for d in doc_ids]
        groups = [(part, [i for i, owner in enumerate(owners) if owner == number])
                  for number, part in enumerate(self.parts)]
        groups = [(part, rows) for part, rows in groups if rows]
        found = self.each([lambda p=p, rows=rows: p.document_vectors([doc_ids[i] for i in rows])
                           for p, rows in groups])
        if not found:
            return np.zeros((0, 0), np.float32)
        out = np.zeros((len(doc_ids), found[0].shape[1]), np.float32)
        for (_, rows), vectors in zip(groups, found, strict=True):
            out[rows] = vectors
        return out

    def search_vectors(self, qids: list[str], vectors: np.ndarray, k: int) -> Run:
        return merge(self.each([lambda p=p: p.search_vectors(qids, vectors, k)
                                for p in self.parts]), k)

    def score_candidates(self, qids: list[str], query_vectors: np.ndarray,
                         candidates: Run) -> Run:
        return merge(self.each([lambda p=p, part=part: p.score_candidates(qids, query_vectors,
                                                                          part)
                                for p, part in zip(self.parts, self.route(candidates),
                                                   strict=True)]))


def sharded_stage(parts: list[Any]) -> ShardedStage:
    """The router over ``parts``: one with the vector methods when the parts have them."""
    vector = all(hasattr(p, "search_vectors") for p in parts)
    return (ShardedVectorStage if vector else ShardedStage)(parts)
