"""SEAL's n-gram weights and its intersective document scoring.

An n-gram ``n`` is worth what the generator's belief in it, given the query, adds to how common
it is anyway. With ``s = log P(n | q)`` (teacher-forced, summed over its tokens, not
length-normalised) and ``p = log P(n) = log((F(n) + λ) / (N + λ))`` (corpus frequency, λ = 5):

    w(n, q) = max(0, log [P(n|q) (1 − P(n))] / [P(n) (1 − P(n|q))])
            = max(0, s + log(1 − e^p) − p − log(1 − e^s))

so an n-gram the model finds no likelier than the corpus does is worth 0. N-grams count as
``w^α`` (α = 2); single tokens from the first decoding step count ``w`` (no α).

A document is scored by the n-grams it holds, *intersectively*: occurrences are taken by
decreasing weight, one is accepted only if none of its corpus positions was already claimed by
a higher-weight n-gram, and each distinct n-gram adds its weight once, discounted by how much
of it repeats token types of n-grams already accepted:
``cover(n, C) = 1 − β + β · |set(n) ∖ C| / |set(n)|`` (β = 0.8). Finally each distinct token
type on still-free positions adds its unigram weight, with the same discount.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cormorant.retrieval.seal.substring import NgramIndex

Ngram = tuple[int, ...]


@dataclass(frozen=True)
class ScoringSettings:
    """The paper's constants; every one is a ``seal(...)`` option."""

    smoothing: float = 5.0  # λ
    alpha: float = 2.0  # n-grams count w^α
    beta: float = 0.8  # cover discount
    stage1_max_count: int = 1500  # candidate docs come from n-grams at most this frequent
    stage1_occurrences: int = 1500  # ... reading at most this many occurrences each
    stage1_docs: int = 1500  # ... and keeping this many documents
    max_count: int = 10_000_000  # n-grams more frequent than this are ignored in stage 2


def corpus_log_prob(count: np.ndarray | int, total: int, smoothing: float = 5.0) -> np.ndarray:
    """log P(n) = log((F(n) + λ) / (N + λ)): never 0, never −∞."""
    return np.log((np.asarray(count, dtype=np.float64) + smoothing) / (total + smoothing))


def ngram_weight(query_log_prob: np.ndarray | float, corpus_lp: np.ndarray | float) -> np.ndarray:
    """w = max(0, s + log(1 − e^p) − p − log(1 − e^s)); 0 wherever P(n|q) ≤ P(n).

    Example:
        >>> float(ngram_weight(np.log(0.5), np.log(0.01)))  # odds 1 vs 1/99
        4.59511985013459
    """
    s = np.minimum(np.asarray(query_log_prob, dtype=np.float64), -1e-9)  # P(n|q) = 1: finite
    p = np.minimum(np.asarray(corpus_lp, dtype=np.float64), -1e-9)
    weight = s + np.log(-np.expm1(p)) - p - np.log(-np.expm1(s))
    # Exactly 0 when P(n|q) <= P(n): rounding must not hand such an n-gram a tiny weight.
    return np.where(s > p, np.maximum(weight, 0.0), 0.0)


def cover(types: frozenset[int], seen: set[int], beta: float) -> float:
    """1 − β + β · (share of the n-gram's token types not yet covered)."""
    return 1.0 - beta + beta * len(types - seen) / len(types)


@dataclass
class _Occurrence:
    weight: float
    ngram: int
    start: int
    length: int


def score_documents(index: NgramIndex, ngrams: Sequence[Ngram], weights: Sequence[float],
                    unigrams: dict[int, float] | None = None,
                    settings: ScoringSettings | None = None) -> dict[int, float]:
    """Document rows with their SEAL scores (positive scores only).

    Args:
        index: the corpus.
        ngrams: distinct n-grams (token ids), with ``weights`` their w (before α).
        unigrams: token id → unigram weight u (no α), for the last scoring step.
        settings: the paper's constants.

    Example:
        >>> from cormorant.retrieval.seal.substring import SubstringIndex
        >>> index = SubstringIndex.build([[1, 2, 3], [1, 4]], vocab_size=5)
        >>> score_documents(index, [(2, 3), (1,)], [2.0, 1.0])
        {0: 5.0, 1: 1.0}
    """
    settings = settings or ScoringSettings()
    values = [w ** settings.alpha for w in weights]
    types = [frozenset(n) for n in ngrams]
    counts = [index.count(n) for n in ngrams]
    candidates = _stage1(index, ngrams, values, types, counts, settings)
    if not candidates:
        return {}
    by_doc: dict[int, list[_Occurrence]] = defaultdict(list)
    rows = np.fromiter(candidates, dtype=np.int64)
    for i, ngram in enumerate(ngrams):
        if values[i] <= 0 or counts[i] > settings.max_count:
            continue
        positions = index.positions(ngram)
        docs = index.doc_of(positions)
        keep = np.isin(docs, rows)
        for doc, start in zip(docs[keep].tolist(), positions[keep].tolist(), strict=True):
            by_doc[doc].append(_Occurrence(values[i], i, start, len(ngram)))
    unigrams = {t: u for t, u in (unigrams or {}).items() if u > 0}
    scores = {}
    for doc in candidates:
        score, claimed, seen = _intersect(by_doc.get(doc, []), types, settings.beta)
        score += _unigram_score(index, doc, claimed, seen, unigrams, settings.beta)
        if score > 0:
            scores[doc] = score
    return scores


def _stage1(index: NgramIndex, ngrams: Sequence[Ngram], values: list[float],
            types: list[frozenset[int]], counts: list[int],
            settings: ScoringSettings) -> list[int]:
    """Candidate documents: the same intersective sum over rare n-grams' first occurrences."""
    by_doc: dict[int, list[_Occurrence]] = defaultdict(list)
    for i, ngram in enumerate(ngrams):
        if values[i] <= 0 or counts[i] > settings.stage1_max_count:
            continue
        positions = index.positions(ngram, limit=settings.stage1_occurrences)
        for doc, start in zip(index.doc_of(positions).tolist(), positions.tolist(), strict=True):
            by_doc[doc].append(_Occurrence(values[i], i, start, len(ngram)))
    ranked = sorted(((_intersect(occ, types, settings.beta)[0], doc)
                     for doc, occ in by_doc.items()), key=lambda x: (-x[0], x[1]))
    return [doc for score, doc in ranked[:settings.stage1_docs] if score > 0]


def _intersect(occurrences: list[_Occurrence], types: list[frozenset[int]],
               beta: float) -> tuple[float, set[int], set[int]]:
    """Greedy by weight: accept occurrences on free positions; each n-gram scores once."""
    claimed: set[int] = set()
    seen: set[int] = set()
    scored: set[int] = set()
    total = 0.0
    # Ties by n-gram order, then position, so equal weights give one answer.
    for occ in sorted(occurrences, key=lambda o: (-o.weight, o.ngram, o.start)):
        span = range(occ.start, occ.start + occ.length)
        if any(p in claimed for p in span):
            continue  # overlaps a higher-weight n-gram: its tokens are already explained
        claimed.update(span)
        if occ.ngram in scored:
            continue  # a repeat claims its positions but adds nothing
        scored.add(occ.ngram)
        total += cover(types[occ.ngram], seen, beta) * occ.weight
        seen |= types[occ.ngram]
    return total, claimed, seen


def _unigram_score(index: NgramIndex, doc: int, claimed: set[int], seen: set[int],
                   unigrams: dict[int, float], beta: float) -> float:
    if not unigrams:
        return 0.0
    start = int(index.doc_starts[doc])
    tokens = index.document(doc)
    free = {int(t) for offset, t in enumerate(tokens.tolist()) if start + offset not in claimed}
    return sum(cover(frozenset((t,)), seen, beta) * unigrams[t] for t in free if t in unigrams)
