"""One segment's inverted index of raw term frequencies, and BM25 scored over many segments
with collection statistics that are exact at every moment.

Why by hand: BM25 depends on the whole collection (N, each term's document frequency, the
average document length). bm25s bakes those into its precomputed score matrix, so any change
means re-indexing everything; Lucene and tantivy keep raw frequencies in segments but go on
counting deleted documents in N and document frequencies until a merge (and tantivy fixes
k1=1.2, b=0.75). Here a segment keeps raw term frequencies and lengths; a search counts,
for each query term, its postings in rows that are not deleted, across every segment, so the
scores equal those of a fresh bm25s build over the live documents, before and after a merge.
The cost is what a Lucene search pays: one pass over each query term's postings.

Example:
    >>> seg = TermIndex.from_tokens([["cat", "purr"], ["dog", "bark", "bark"]])
    >>> seg.postings("bark")
    (array([1], dtype=int32), array([2.], dtype=float32))
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from cormorant.errors import IndexFormatError

TERMS = "terms.json"
POSTINGS = "postings.npz"


@dataclass(frozen=True)
class TermIndex:
    """Term -> postings (rows, term frequencies), in compressed-column form, plus each row's
    length in tokens (what bm25s counts: tokens after stop words)."""

    terms: dict[str, int]
    indptr: np.ndarray  # int64, one more than terms
    rows: np.ndarray  # int32
    tfs: np.ndarray  # float32
    lengths: np.ndarray  # int32, one per document

    @classmethod
    def from_tokens(cls, documents: Sequence[Sequence[str]]) -> TermIndex:
        """Index documents given as their analysed tokens."""
        terms: dict[str, int] = {}
        columns = [terms.setdefault(t, len(terms)) for tokens in documents for t in tokens]
        lengths = np.fromiter(map(len, documents), dtype=np.int32, count=len(documents))
        count = max(len(documents), 1)
        rows = np.repeat(np.arange(len(documents), dtype=np.int64), lengths)
        # One sort of (term, row) keys gives each posting's frequency, in column order.
        keys, tfs = np.unique(np.asarray(columns, dtype=np.int64) * count + rows,
                              return_counts=True)
        cols, posting_rows = np.divmod(keys, count)
        return cls.from_triples(terms, cols, posting_rows.astype(np.int32),
                                tfs.astype(np.float32), lengths)

    @classmethod
    def from_triples(cls, terms: dict[str, int], cols: np.ndarray, rows: np.ndarray,
                     tfs: np.ndarray, lengths: np.ndarray) -> TermIndex:
        order = np.argsort(cols, kind="stable")  # rows stay ascending within a term
        indptr = np.zeros(len(terms) + 1, dtype=np.int64)
        np.cumsum(np.bincount(cols, minlength=len(terms)), out=indptr[1:])
        return cls(terms, indptr, rows[order], tfs[order], lengths)

    @classmethod
    def combine(cls, parts: Sequence[tuple[TermIndex, np.ndarray]]) -> TermIndex:
        """The given rows of each part, in order, as one segment (a merge)."""
        terms: dict[str, int] = {}
        all_cols, all_rows, all_tfs, all_lengths = [], [], [], []
        offset = 0
        for part, keep in parts:
            new_row = np.full(len(part.lengths), -1, dtype=np.int64)
            new_row[keep] = np.arange(len(keep)) + offset
            names = list(part.terms)
            mapping = np.array([terms.setdefault(t, len(terms)) for t in names], dtype=np.int64)
            cols = np.repeat(np.arange(len(names)), np.diff(part.indptr))
            rows = new_row[part.rows]
            kept = rows >= 0
            all_cols.append(mapping[cols[kept]] if len(names) else cols[kept])
            all_rows.append(rows[kept].astype(np.int32))
            all_tfs.append(part.tfs[kept])
            all_lengths.append(part.lengths[keep])
            offset += len(keep)
        used = cls.from_triples(terms, np.concatenate(all_cols), np.concatenate(all_rows),
                                np.concatenate(all_tfs), np.concatenate(all_lengths))
        return used.without_empty_terms()

    @cached_property
    def total_length(self) -> int:
        """Tokens in every document of the segment (deleted ones included)."""
        return int(self.lengths.sum())

    def without_empty_terms(self) -> TermIndex:
        """Drop terms left with no postings (every document holding them was merged away)."""
        counts = np.diff(self.indptr)
        if counts.all():
            return self
        kept = [t for t, c in self.terms.items() if counts[c]]
        order = np.array([self.terms[t] for t in kept], dtype=np.int64)
        cols = np.repeat(np.arange(len(kept)), counts[order])
        pieces = [np.arange(self.indptr[c], self.indptr[c + 1]) for c in order.tolist()]
        take = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
        return TermIndex.from_triples({t: i for i, t in enumerate(kept)}, cols,
                                      self.rows[take], self.tfs[take], self.lengths)

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows, term frequencies) of ``term``, or None if no document here holds it."""
        col = self.terms.get(term)
        if col is None:
            return None
        start, stop = self.indptr[col], self.indptr[col + 1]
        return self.rows[start:stop], self.tfs[start:stop]

    def save(self, directory: Path) -> None:
        (directory / TERMS).write_text(json.dumps(list(self.terms)))
        with open(directory / POSTINGS, "wb") as handle:
            np.savez(handle, indptr=self.indptr, rows=self.rows, tfs=self.tfs,
                     lengths=self.lengths)

    @classmethod
    def load(cls, directory: Path) -> TermIndex:
        try:
            names = json.loads((directory / TERMS).read_text())
            with np.load(directory / POSTINGS) as arrays:
                found = cls({t: i for i, t in enumerate(names)}, arrays["indptr"],
                            arrays["rows"], arrays["tfs"], arrays["lengths"])
        except (OSError, ValueError, KeyError) as exc:
            raise IndexFormatError(f"{directory}: cannot read the BM25 segment ({exc})") from None
        if len(found.indptr) != len(names) + 1 or found.indptr[-1] != len(found.rows):
            raise IndexFormatError(f"{directory}: the BM25 segment's postings do not add up")
        return found


# The five BM25 variants of bm25s, written after its scoring module (Kamphuis et al., ECIR
# 2020): idf(df, N) and the term-frequency component tfc(tf, length, average length).
Idf = Callable[[float, float], float]
Tfc = Callable[[np.ndarray, np.ndarray, float, float, float, float], np.ndarray]


def _idf_robertson(df: float, n: float) -> float:
    return math.log(max((n - df + 0.5) / (df + 0.5), 1.0))


IDF: dict[str, Idf] = {
    "robertson": _idf_robertson,
    "lucene": lambda df, n: math.log(1 + (n - df + 0.5) / (df + 0.5)),
    "atire": lambda df, n: math.log(n / df),
    "bm25l": lambda df, n: math.log((n + 1) / (df + 0.5)),
    "bm25+": lambda df, n: math.log((n + 1) / df),
}


def _tfc_robertson(tf: np.ndarray, length: np.ndarray, avg: float, k1: float, b: float,
                   delta: float) -> np.ndarray:
    return tf / (k1 * ((1 - b) + b * length / avg) + tf)


def _tfc_atire(tf: np.ndarray, length: np.ndarray, avg: float, k1: float, b: float,
               delta: float) -> np.ndarray:
    return tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg))


def _tfc_bm25l(tf: np.ndarray, length: np.ndarray, avg: float, k1: float, b: float,
               delta: float) -> np.ndarray:
    c = tf / (1 - b + b * length / avg)
    return (k1 + 1) * (c + delta) / (k1 + c + delta)


def _tfc_bm25plus(tf: np.ndarray, length: np.ndarray, avg: float, k1: float, b: float,
                  delta: float) -> np.ndarray:
    return (k1 + 1) * tf / (k1 * (1 - b + b * length / avg) + tf) + delta


TFC: dict[str, Tfc] = {"robertson": _tfc_robertson, "lucene": _tfc_robertson,
                       "atire": _tfc_atire, "bm25l": _tfc_bm25l, "bm25+": _tfc_bm25plus}
NONOCCURRENCE = ("bm25l", "bm25+")
"""Variants that give a document a score for a query term it lacks (bm25s takes it at the
average length: idf * tfc(0, avg, avg))."""
DELTA = 0.5  # bm25s's default delta for BM25L and BM25+


@dataclass(frozen=True)
class BM25Params:
    k1: float
    b: float
    method: str


@dataclass(frozen=True)
class CollectionStats:
    """What BM25 needs of the whole collection for some query terms: live documents, their
    total length in tokens, and each term's document frequency. Shards of one collection add
    theirs up (Lucene's distributed frequencies), so every shard scores as one index would.

    Example:
        >>> a = CollectionStats(2, 5, {"cat": 1})
        >>> a + CollectionStats(1, 3, {"cat": 1, "dog": 1})
        CollectionStats(documents=3, length=8, df={'cat': 2, 'dog': 1})
    """

    documents: int
    length: int
    df: dict[str, int]

    def __add__(self, other: CollectionStats) -> CollectionStats:
        df = dict(self.df)
        for term, count in other.df.items():
            df[term] = df.get(term, 0) + count
        return CollectionStats(self.documents + other.documents, self.length + other.length, df)


Live = list[tuple[TermIndex, np.ndarray | None]]
"""Segments paired with their live-row mask (None: every row is live)."""


def _live(segments: Sequence[tuple[TermIndex, np.ndarray | None]]) -> Live:
    return [(seg, None if mask is None or not mask.any() else ~mask) for seg, mask in segments]


def collection_stats(segments: Sequence[tuple[TermIndex, np.ndarray | None]],
                     terms: Sequence[str]) -> CollectionStats:
    """The statistics of ``segments`` (each with its deletion mask, None for none) for
    ``terms``, counting only rows that are not deleted.

    Example:
        >>> seg = TermIndex.from_tokens([["cat"], ["dog"], ["dog", "dog"]])
        >>> collection_stats([(seg, None)], ["dog", "owl"])
        CollectionStats(documents=3, length=4, df={'dog': 2, 'owl': 0})
    """
    live = _live(segments)
    df = {}
    for term in dict.fromkeys(terms):
        count = 0
        for seg, keep in live:
            hits = seg.postings(term)
            if hits is not None:
                count += len(hits[0]) if keep is None else int(keep[hits[0]].sum())
        df[term] = count
    return CollectionStats(_documents(live), _length(live), df)


def _documents(live: Live) -> int:
    return sum(len(seg.lengths) if keep is None else int(keep.sum()) for seg, keep in live)


def _length(live: Live) -> int:
    return sum(seg.total_length if keep is None else int(seg.lengths[keep].sum())
               for seg, keep in live)


def bm25_scores(segments: Sequence[tuple[TermIndex, np.ndarray | None]],
                query: Sequence[str], params: BM25Params,
                stats: CollectionStats | None = None) -> np.ndarray:
    """BM25 scores of every row of every segment for one query (its tokens, repeats counted
    as bm25s counts them), segment after segment in one array, with N, document frequencies
    and the average length taken over the rows that are not deleted, or from ``stats`` when
    given (a shard scoring with its whole collection's statistics). ``segments`` pairs each
    index with its deletion mask (None: no deletions); deleted rows score 0.

    Example:
        >>> seg = TermIndex.from_tokens([["cat"], ["dog"], ["dog", "dog"]])
        >>> scores = bm25_scores([(seg, None)], ["cat"], BM25Params(0.9, 0.4, "lucene"))
        >>> [round(float(s), 3) for s in scores]
        [0.542, 0.0, 0.0]
    """
    live = _live(segments)
    n = _documents(live) if stats is None else stats.documents
    total = _length(live) if stats is None else stats.length
    # One array for all segments: a query term is scored in one pass over its postings from
    # every segment, not one pass per segment.
    offsets = np.cumsum([0, *(len(seg.lengths) for seg, _ in live)])
    whole = np.zeros(int(offsets[-1]), dtype=np.float32)
    if n == 0:
        return whole
    avg = total / n
    idf_of, tfc = IDF[params.method], TFC[params.method]
    constant = 0.0
    for term in query:
        rows, tfs, lengths = [], [], []
        for (seg, keep), offset in zip(live, offsets.tolist(), strict=False):
            hits = seg.postings(term)
            if hits is None:
                continue
            found, tf = hits
            if keep is not None:
                alive = keep[found]
                found, tf = found[alive], tf[alive]
            rows.append(found + offset)
            tfs.append(tf)
            lengths.append(seg.lengths[found])
        df = sum(len(r) for r in rows) if stats is None else stats.df.get(term, 0)
        if df == 0:
            continue  # no live document holds it: a fresh build would not know the term
        idf = idf_of(df, n)
        absent = 0.0
        if params.method in NONOCCURRENCE:
            absent = idf * float(tfc(np.zeros(1), np.full(1, avg), avg, params.k1, params.b,
                                     DELTA)[0])
            constant += absent
        if not rows:
            continue  # a shard that lacks the term: the collection's other shards hold it
        part = idf * tfc(np.concatenate(tfs), np.concatenate(lengths), avg, params.k1, params.b,
                         DELTA) - absent
        whole[np.concatenate(rows)] += part.astype(np.float32)
    if constant:
        whole += np.float32(constant)
    for (_, keep), start in zip(live, offsets.tolist(), strict=False):
        if keep is not None:
            whole[start:start + len(keep)][~keep] = 0.0
    return whole
