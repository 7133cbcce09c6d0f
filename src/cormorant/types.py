"""Core types: corpora, queries, relevance judgments and runs.

Field names follow ir_measures (``query_id``, ``doc_id``, ``relevance``, ``score``), and a
:class:`Run` is a ``dict[query_id, dict[doc_id, score]]``, so runs and qrels go straight into
``ir_measures.calc_aggregate`` with no conversion.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cormorant.errors import DataError

Queries = dict[str, str]
"""Query id -> query text."""

Qrels = dict[str, dict[str, int]]
"""Query id -> doc id -> graded relevance."""


@dataclass(frozen=True)
class Document:
    """One document: its id, title, text and any extra fields of the source."""

    doc_id: str
    text: str
    title: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def contents(self) -> str:
        """Title and text joined, the way BEIR baselines index a document."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


class Corpus:
    """A re-iterable stream of documents that need not fit in memory.

    A corpus is built from a function that opens a fresh iterator, so every pass re-reads the
    source (a file, a database) instead of holding all documents at once.

    Example:
        >>> corpus = Corpus.from_documents([Document("d1", "hello world", title="Greeting")])
        >>> [d.contents for d in corpus]
        ['Greeting hello world']
        >>> len(corpus)
        1
    """

    def __init__(
        self,
        open_stream: Callable[[], Iterator[Document]],
        name: str = "corpus",
        fingerprint: str | None = None,
        size: int | None = None,
    ) -> None:
        self._open_stream = open_stream
        self.name = name
        self._fingerprint = fingerprint
        self._size = size

    @classmethod
    def from_documents(cls, documents: Iterable[Document], name: str = "corpus") -> Corpus:
        """A corpus held in memory, for tests and small collections."""
        docs = list(documents)
        return cls(lambda: iter(docs), name=name, size=len(docs))

    def __iter__(self) -> Iterator[Document]:
        return self._open_stream()

    def __repr__(self) -> str:
        # The size only when known: counting would read a corpus that may not fit in memory.
        size = f", {self._size:,} documents" if self._size is not None else ""
        return f"Corpus({self.name!r}{size})"

    def __len__(self) -> int:
        if self._size is None:
            self._size = sum(1 for _ in self)
        return self._size

    def filtered(self, keep: Callable[[str], bool]) -> Corpus:
        """The documents whose id ``keep`` accepts, streamed from this corpus in its order
        (one shard's documents: the source is read again, nothing is held).

        Example:
            >>> corpus = Corpus.from_documents([Document("a", "x"), Document("b", "y")])
            >>> [d.doc_id for d in corpus.filtered(lambda doc_id: doc_id == "b")]
            ['b']
        """
        return Corpus(lambda: (d for d in self if keep(d.doc_id)), name=self.name)

    def batches(self, size: int) -> Iterator[list[Document]]:
        """Documents in lists of at most ``size``, in corpus order."""
        batch: list[Document] = []
        for doc in self:
            batch.append(doc)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    @property
    def fingerprint(self) -> str:
        """A stable content hash, used to key caches of embeddings built from this corpus."""
        if self._fingerprint is None:
            import hashlib

            digest = hashlib.sha256()
            for doc in self:
                digest.update(doc.doc_id.encode())
                digest.update(b"\0")
                digest.update(doc.contents.encode())
                digest.update(b"\1")
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


class Run(dict[str, dict[str, float]]):
    """A ranking: query id -> doc id -> score (higher is better).

    Example:
        >>> run = Run({"q1": {"d1": 0.2, "d2": 0.9, "d3": 0.5}})
        >>> run.topk(2)["q1"]
        {'d2': 0.9, 'd3': 0.5}
        >>> run.ranked("q1")
        [('d2', 0.9), ('d3', 0.5), ('d1', 0.2)]
    """

    def __repr__(self) -> str:
        results = sum(len(docs) for docs in self.values())
        if results <= 12:
            return super().__repr__()
        return f"Run({len(self):,} queries, {results:,} results)"

    def to_pandas(self) -> Any:
        """The run as a DataFrame: ``query_id``, ``doc_id``, ``score``, ``rank`` (from 1, in
        trec_eval's order), ir-measures' column names; PyTerrier wants ``qid``/``docno``
        (``df.rename(columns={"query_id": "qid", "doc_id": "docno"})``).

        Example:
            >>> Run({"q": {"a": 1.0, "b": 2.0}}).to_pandas().to_dict("records")  # doctest: +SKIP
            [{'query_id': 'q', 'doc_id': 'b', 'score': 2.0, 'rank': 1}, ...]
        """
        import pandas as pd

        rows = [(qid, doc, score, rank) for qid in self
                for rank, (doc, score) in enumerate(self.ranked(qid), start=1)]
        return pd.DataFrame(rows, columns=["query_id", "doc_id", "score", "rank"])

    @classmethod
    def from_pandas(cls, frame: Any) -> Run:
        """A run from a DataFrame with ir-measures' (``query_id``, ``doc_id``, ``score``),
        PyTerrier's (``qid``, ``docno``, ``score``) or ranx's (``q_id``, ``doc_id``, ``score``)
        column names.

        Raises:
            DataError: no query, document or score column.

        Example:
            >>> import pandas as pd
            >>> Run.from_pandas(pd.DataFrame({"qid": ["q"], "docno": ["a"], "score": [1.0]}))
            {'q': {'a': 1.0}}
        """
        columns = set(frame.columns)
        qid = next((c for c in ("query_id", "qid", "q_id") if c in columns), None)
        doc = next((c for c in ("doc_id", "docno", "docid") if c in columns), None)
        if qid is None or doc is None or "score" not in columns:
            raise DataError(f"a run DataFrame needs query, document and score columns (query_id"
                            f" or qid, doc_id or docno, score); got {sorted(columns)}")
        run = cls()
        for q, d, score in zip(frame[qid].astype(str), frame[doc].astype(str),
                               frame["score"].astype(float), strict=True):
            run.setdefault(q, {})[d] = float(score)
        return run

    def ranked(self, query_id: str) -> list[tuple[str, float]]:
        """The query's documents by decreasing score, ties broken as trec_eval breaks them.

        trec_eval ignores the rank column of a run file and sorts each query's documents by
        score, then by document id in *decreasing* ``strcmp`` order (``comp_sim_docno`` in its
        ``form_res_rels.c``); Python compares strings by code point, which is UTF-8 byte
        order, so the two agree. The written ranks, the depth cut and every measure follow it.

        Example:
            >>> Run({"q": {"d1": 1.0, "d2": 1.0, "d3": 2.0}}).ranked("q")
            [('d3', 2.0), ('d2', 1.0), ('d1', 1.0)]
        """
        return sorted(self.get(query_id, {}).items(), key=_trec_order, reverse=True)

    def topk(self, k: int) -> Run:
        """A new run holding each query's ``k`` best documents, best first."""
        if k < 1:
            raise DataError(f"k must be at least 1, got {k}")
        out = Run()
        for qid, docs in self.items():
            best = heapq.nlargest(k, docs.items(), key=_trec_order)
            out[qid] = dict(best)
        return out

    def without(self, excluded: Mapping[str, Iterable[str]]) -> Run:
        """A new run with each query's ``excluded`` doc ids removed (BRIGHT's excluded_ids)."""
        out = Run()
        for qid, docs in self.items():
            drop = set(excluded.get(qid, ()))
            out[qid] = {d: s for d, s in docs.items() if d not in drop}
        return out

    @classmethod
    def from_arrays(
        cls,
        query_ids: list[str],
        scores: np.ndarray,
        indices: np.ndarray,
        doc_ids: list[str] | np.ndarray,
    ) -> Run:
        """Build a run from a search result: row i of ``scores``/``indices`` is query i.

        Negative indices (FAISS's "no result" marker) are skipped.
        """
        if scores.shape != indices.shape or scores.shape[0] != len(query_ids):
            raise ValueError(
                f"scores {scores.shape}, indices {indices.shape} and {len(query_ids)} query ids"
                " do not line up"
            )
        run = cls()
        for qid, row_scores, row_idx in zip(query_ids, scores, indices, strict=True):
            keep = row_idx >= 0
            run[qid] = {
                doc_ids[i]: float(s)
                for i, s in zip(row_idx[keep].tolist(), row_scores[keep].tolist(), strict=True)
            }
        return run

    def to_trec(self, path: str | Path, tag: str = "cormorant") -> None:
        """Write the run as a TREC run file (atomically)."""
        from cormorant.data.trec import write_trec_run

        write_trec_run(self, path, tag=tag)

    @classmethod
    def from_trec(cls, path: str | Path) -> Run:
        """Read a TREC run file (``qid Q0 docid rank score tag``)."""
        from cormorant.data.trec import read_trec_run

        return read_trec_run(path)


def _trec_order(item: tuple[str, float]) -> tuple[float, str]:
    """Sort key that, sorted in reverse, gives trec_eval's order (score, then doc id, both
    decreasing)."""
    return item[1], item[0]


def top_rows(scores: np.ndarray, k: int, doc_ids: list[str] | np.ndarray) -> np.ndarray:
    """Positions of the ``k`` best ``scores``, best first, ties at the cut chosen as
    :meth:`Run.ranked` orders them (larger doc id first), so a retriever asked for ``k``
    returns exactly the top ``k`` of its full ranking.

    Example:
        >>> top_rows(np.array([1.0, 2.0, 1.0, 1.0]), 2, ["a", "b", "c", "d"]).tolist()
        [1, 3]
    """
    n = len(scores)
    if k < n:
        kth = np.partition(scores, n - k)[n - k]
        above = np.flatnonzero(scores > kth)
        tied = np.flatnonzero(scores == kth)
        if len(above) + len(tied) > k:
            tied = np.array(sorted(tied.tolist(), key=lambda i: doc_ids[i], reverse=True)[:k - len(above)],
                            dtype=np.int64)
        rows = np.concatenate([above, tied])
    else:
        rows = np.arange(n)
    keyed = sorted(zip(scores[rows].tolist(), (doc_ids[i] for i in rows.tolist()), rows.tolist(),
                       strict=True), reverse=True)
    return np.array([row for _, _, row in keyed], dtype=np.int64)


@dataclass
class Split:
    """The queries of one split with their judgments (and BRIGHT-style exclusions)."""

    queries: Queries
    qrels: Qrels
    excluded: dict[str, set[str]] = field(default_factory=dict)

    def __repr__(self) -> str:
        judgments = sum(len(docs) for docs in self.qrels.values())
        return f"Split({len(self.queries):,} queries, {judgments:,} judgments)"


@dataclass
class Dataset:
    """A test collection: a corpus plus named splits of queries and judgments.

    Splits load lazily through ``load_split`` so that opening a dataset to look at its corpus
    reads no judgments.
    """

    name: str
    corpus: Corpus
    split_names: list[str]
    load_split: Callable[[str], Split]
    path: Path | None = None

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {self.corpus!r}, splits={self.split_names})"

    def split(self, name: str) -> Split:
        """The named split; a clear error lists the splits that exist."""
        if name not in self.split_names:
            have = ", ".join(self.split_names) or "none"
            raise DataError(f"dataset {self.name!r} has no split {name!r} (it has: {have})")
        return self.load_split(name)
