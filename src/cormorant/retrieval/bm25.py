"""BM25 in process: the embedded default, no Java needed, and an index that takes writes.

Text is analysed by :mod:`cormorant.retrieval.analysis` (``language=en``: bm25s's tokenizer,
English stop words, the Snowball English stemmer; ``language=zh``: CJK character bigrams or
jieba words) and scored with bm25s's formulas; defaults follow Pyserini's BEIR regressions (Lucene's BM25
variant, k1=0.9, b=0.4, title and text as one field). The index is segments of raw term
frequencies (:mod:`cormorant.index.inverted` says why not bm25s's own precomputed index), so a
write costs what it writes and every search scores as a fresh build over the live documents.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cormorant.errors import IndexFormatError, PipelineError
from cormorant.index.inverted import (
    BM25Params,
    CollectionStats,
    TermIndex,
    bm25_scores,
    collection_stats,
)
from cormorant.index.segments import BASE, Segment, Segments
from cormorant.params import BUILD, Param, Params
from cormorant.retrieval.analysis import LANGUAGES, SEGMENTERS, Analyzer, import_bm25s
from cormorant.retrieval.base import Retriever
from cormorant.retrieval.segmented import SegmentedRetriever
from cormorant.types import Corpus, Document, Queries, Run, top_rows

log = logging.getLogger(__name__)
__all__ = ["BM25Retriever", "import_bm25s"]

IDS_FILE = "doc_ids.json"
BUILD_CHUNK = 50_000  # documents analysed and indexed at a time while building


class BM25Retriever(SegmentedRetriever):
    """BM25 in process (``bm25``): Lucene's BM25 variant, Snowball stemming, English stop
    words, Pyserini's BEIR settings; takes writes with exact collection statistics.

    Example:
        >>> from cormorant.types import Corpus, Document
        >>> corpus = Corpus.from_documents([Document("a", "cats purr"), Document("b", "dogs bark")])
        >>> bm25 = BM25Retriever.build(corpus)
        >>> list(bm25.search("barking dogs", k=1)["0"])
        ['b']
    """

    thread_safe: ClassVar[bool] = True
    # Its scoring loop is Python holding the GIL: a sharded router's threads would only add
    # hand-offs (measured: 0.55-0.58x the searches/s at 2 and 4 shards, docs/benchmarks.md).
    overlaps: ClassVar[bool] = False
    name: ClassVar[str] = "bm25"
    PARAMS: ClassVar[Params] = Retriever.PARAMS + Params(
        Param("k1", float, 0.9, "term-frequency saturation (Pyserini's BEIR setting)",
              when=BUILD, low=0),
        Param("b", float, 0.4, "document-length normalisation", when=BUILD, low=0, high=1),
        Param("method", str, "lucene", "BM25 variant (bm25s)", when=BUILD,
              choices=("lucene", "robertson", "atire", "bm25l", "bm25+")),
        Param("stemmer", str, "english", "Snowball stemmer language; none for no stemming",
              when=BUILD, nullable=True),
        Param("stopwords", str, "en", "stop-word list (bm25s); none to keep every word",
              when=BUILD, nullable=True),
        Param("language", str, "en", "text analysis: en (words), zh (CJK runs by segmenter,"
              " other words as en)", when=BUILD, choices=LANGUAGES),
        Param("segmenter", str, "bigram", "language=zh: CJK character bigrams (as Lucene's"
              " CJKAnalyzer) or jieba words (extra [zh])", when=BUILD, choices=SEGMENTERS),
    )

    def __init__(self, segments: Segments, settings: dict[str, Any]) -> None:
        super().__init__(settings, segments)
        if settings["language"] != "zh" and settings["segmenter"] != "bigram":
            raise PipelineError(f"bm25: segmenter={settings['segmenter']} applies to Chinese"
                                " text: add language=zh")
        self.analyse = Analyzer(settings["language"], settings["stemmer"],
                                settings["stopwords"], settings["segmenter"])
        """Each text's terms, analysed the way documents and queries both are."""
        self.params = BM25Params(settings["k1"], settings["b"], settings["method"])
        self.stats: CollectionStats | None = None  # the whole collection's, when a shard

    @classmethod
    def create(cls, corpus: Corpus, settings: dict[str, Any]) -> BM25Retriever:
        empty = cls(Segments(()), settings)
        doc_ids: list[str] = []
        chunks: list[TermIndex] = []
        # Tokens are held for one chunk at a time: the corpus itself streams.
        for batch in corpus.batches(BUILD_CHUNK):
            doc_ids.extend(d.doc_id for d in batch)
            chunks.append(empty.index_documents(batch))
        whole = chunks[0] if len(chunks) == 1 else TermIndex.combine(
            [(c, np.arange(len(c.lengths))) for c in chunks])
        return cls(Segments((Segment.made(doc_ids, whole, BASE),)), settings)

    @classmethod
    def builds_parts(cls, settings: dict[str, Any]) -> bool:
        return True  # it learns nothing: the router adds the shards' statistics up

    @classmethod
    def create_part(cls, corpus: Corpus, settings: dict[str, Any], keep: Callable[[str], bool],
                    shared: Any) -> BM25Retriever | None:
        own = corpus.filtered(keep)
        if next(iter(own), None) is None:
            return None
        return cls.create(own, settings)

    # -- segments ------------------------------------------------------------------------

    def index_documents(self, documents: list[Document]) -> TermIndex:
        return TermIndex.from_tokens(self.analyse([d.contents for d in documents]))

    def combine(self, parts: list[tuple[Segment, np.ndarray]], retrain: bool = False) -> TermIndex:
        return TermIndex.combine([(s.data, rows) for s, rows in parts])

    def write_segment(self, data: TermIndex, directory: Path) -> dict[str, Any] | None:
        data.save(directory)
        return None

    def read_segment(self, directory: Path, doc_ids: list[str]) -> TermIndex:
        return _read_terms(directory, doc_ids)

    # -- searching -----------------------------------------------------------------------

    def _scores(self, segments: Segments, tokens: list[str]) -> np.ndarray:
        return bm25_scores(_masked(segments), tokens, self.params, self.stats)

    def statistics(self, queries: Queries) -> CollectionStats:
        """N, total length and the document frequency of every term of ``queries`` over the
        live documents here (one shard's share of the collection's).

        Example:
            >>> from cormorant.types import Corpus, Document
            >>> bm25 = BM25Retriever.build(Corpus.from_documents([Document("a", "cats purr")]))
            >>> bm25.statistics({"q": "cats bark"})
            CollectionStats(documents=1, length=2, df={'cat': 1, 'bark': 0})
        """
        terms = [t for tokens in self.analyse(list(queries.values())) for t in tokens]
        return collection_stats(_masked(self.segments), terms)

    def with_statistics(self, statistics: CollectionStats) -> BM25Retriever:
        view = copy.copy(self)  # shares the segments and the analyser
        view.stats = statistics
        return view

    def retrieve(self, queries: Queries, k: int) -> Run:
        segments = self.segments  # one snapshot for the whole batch
        qids = list(queries)
        run = Run()
        for qid, tokens in zip(qids, self.analyse([queries[q] for q in qids]), strict=True):
            run[qid] = _best(segments, self._scores(segments, tokens), k)
        return run

    def rescore(self, queries: Queries, candidates: Run) -> Run:
        segments = self.segments
        starts = _starts(segments)  # where each segment's rows begin in a score array
        qids = list(queries)
        run = Run()
        for qid, tokens in zip(qids, self.analyse([queries[q] for q in qids]), strict=True):
            scores = self._scores(segments, tokens)
            hits = {}
            for doc_id, (position, row) in segments.locate_each(candidates.get(qid, {})):
                hits[doc_id] = float(scores[starts[position] + row])
            run[qid] = hits
        return run

    # -- on disk -------------------------------------------------------------------------

    def save(self, directory: Path) -> dict[str, Any]:
        data = self.base_data()
        data.save(directory)
        ids = list(self.segments.ids())
        (directory / IDS_FILE).write_text(json.dumps(ids))
        return {"count": len(ids), "settings": self.analysis()}

    def analysis(self) -> dict[str, Any]:
        """The build-time settings: what scoring more documents the same way needs."""
        return {name: self.settings[name] for name in ("k1", "b", "method", "stemmer", "stopwords",
                                                       "language", "segmenter")}

    @classmethod
    def open(cls, directory: Path, meta: dict[str, Any], settings: dict[str, Any]) -> BM25Retriever:
        if not (directory / "terms.json").is_file():
            raise IndexFormatError(f"{directory.parent} holds a bm25 index from an earlier"
                                   " Cormorant (precomputed bm25s scores, which cannot take"
                                   " writes); rebuild it with: cormorant index build")
        try:
            doc_ids = json.loads((directory / IDS_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{directory}: cannot read the BM25 index ({exc})") from None
        data = _read_terms(directory, doc_ids)
        return cls(Segments((Segment.made(doc_ids, data, BASE),)), settings)

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], **params: Any) -> BM25Retriever:
        # Indexes written before the settings were declared keep them under "settings".
        if "settings" in meta:
            meta = {**meta, "params": {**meta["settings"], **meta.get("params", {})}}
        return super().load(directory, meta, **params)  # type: ignore[return-value]


def _masked(segments: Segments) -> list[tuple[TermIndex, np.ndarray | None]]:
    return [(s.data, s.deleted if s.deleted_count else None) for s in segments]


def _read_terms(directory: Path, doc_ids: list[str]) -> TermIndex:
    found = TermIndex.load(directory)
    if len(found.lengths) != len(doc_ids):
        raise IndexFormatError(f"{directory}: the BM25 index and its document ids disagree")
    return found


def _best(segments: Segments, scores: np.ndarray, k: int) -> dict[str, float]:
    """The ``k`` best documents that score above zero across all segments (``scores``: every
    segment's rows back to back), best first, ties at the cut as trec_eval orders them
    (:func:`cormorant.types.top_rows`). Only candidates at or above the k-th score get their
    ids looked up: a common term scores thousands."""
    positive = np.flatnonzero(scores > 0)
    if not len(positive):
        return {}  # no query term occurs in the collection: nothing matches
    if len(positive) > k:
        values = scores[positive]
        cut = np.partition(values, len(values) - k)[len(values) - k]
        positive = positive[values >= cut]
    starts = _starts(segments)
    owner = np.searchsorted(starts, positive, side="right") - 1
    ids = [segments.items[s].doc_ids[i - starts[s]]
           for s, i in zip(owner.tolist(), positive.tolist(), strict=True)]
    values = scores[positive]
    return {ids[i]: float(values[i]) for i in top_rows(values, min(k, len(ids)), ids)}


def _starts(segments: Segments) -> np.ndarray:
    """Where each segment's rows begin in :func:`bm25_scores`'s array."""
    return np.cumsum([0, *(len(s) for s in segments)])
