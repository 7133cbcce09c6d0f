"""Negative documents for training queries: mined, filtered, and kept in a reusable file.

A negatives file is JSON Lines, one query per line::

    {"query_id": "1", "positives": ["31715818"],
     "negatives": [{"doc_id": "4983", "score": 0.61}, ...]}

Mining follows sentence-transformers' ``mine_hard_negatives`` filters (rank range, absolute
and relative margin to the query's weakest positive, optional cross-encoder check), but runs
on our retrievers (BM25, or dense with cached corpus embeddings) and keys everything by id.

Example:
    >>> negatives = BM25Sampler().sample(data, MiningConfig(num_negatives=8))  # doctest: +SKIP
    >>> negatives.save("negatives.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from cormorant import registry
from cormorant.data.files import atomic_write, iter_jsonl
from cormorant.errors import DataError
from cormorant.training.data import TrainingSet
from cormorant.types import Run

log = logging.getLogger(__name__)
GROUP = "cormorant.negatives"


@dataclass(frozen=True)
class ScoredNegative:
    doc_id: str
    score: float | None


@dataclass
class Negatives:
    """Negatives per query id, best-scored first, with the positives they were mined against."""

    by_query: dict[str, list[ScoredNegative]]
    positives: dict[str, list[str]]
    method: str = "unknown"

    def __len__(self) -> int:
        return len(self.by_query)

    def ids(self, qid: str) -> list[str]:
        return [n.doc_id for n in self.by_query.get(qid, [])]

    def save(self, path: str | Path) -> None:
        """Write the JSONL file atomically."""
        with atomic_write(path) as handle:
            for qid, negs in self.by_query.items():
                record = {"query_id": qid, "positives": self.positives.get(qid, []),
                          "method": self.method,
                          "negatives": [{"doc_id": n.doc_id, "score": n.score} for n in negs]}
                handle.write(json.dumps(record) + "\n")

    @classmethod
    def load(cls, path: str | Path, data: TrainingSet | None = None) -> Negatives:
        """Read a negatives file; with ``data``, every id must be known and no positive may
        appear as a negative."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"negatives file not found: {path}")
        by_query: dict[str, list[ScoredNegative]] = {}
        positives: dict[str, list[str]] = {}
        method = "file"
        for line, record in enumerate(_records(path), start=1):
            try:
                qid = str(record["query_id"])
                negs = [ScoredNegative(str(n["doc_id"]), n.get("score")) for n in record["negatives"]]
            except (KeyError, TypeError) as exc:
                raise DataError(f"{path}:{line}: expected query_id and negatives"
                                f" [{{doc_id, score}}], missing {exc}") from None
            by_query[qid] = negs
            positives[qid] = [str(p) for p in record.get("positives", [])]
            method = record.get("method", method)
        negatives = cls(by_query, positives, method)
        if data is not None:
            negatives.check(data, source=str(path))
        return negatives

    def check(self, data: TrainingSet, source: str = "negatives") -> None:
        """Fail on unknown query or document ids; drop negatives judged relevant."""
        unknown_q = [q for q in self.by_query if q not in data.queries]
        unknown_d = sorted({n.doc_id for negs in self.by_query.values() for n in negs
                            if n.doc_id not in data.texts})
        if unknown_d:
            raise DataError(f"{source} names {len(unknown_d)} documents that are not in the"
                            f" corpus, e.g. {', '.join(unknown_d[:3])}")
        if len(unknown_q) == len(self.by_query):
            raise DataError(f"{source}: none of its query ids are training queries of this"
                            f" split (e.g. {', '.join(unknown_q[:3])})")
        if unknown_q:
            log.warning("%s: %d query ids are not training queries; ignored", source,
                        len(unknown_q))
        for qid in list(self.by_query):
            relevant = data.relevant(qid)
            self.by_query[qid] = [n for n in self.by_query[qid] if n.doc_id not in relevant]


def _records(path: Path) -> Iterator[dict[str, Any]]:
    try:
        yield from iter_jsonl(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not JSON Lines: {exc}") from None


@dataclass
class MiningConfig:
    """Which candidates become negatives (names and semantics as in sentence-transformers).

    ``range_min`` skips the best *surviving* candidates (after the margin filters);
    ``range_max`` is how deep the retriever is read. ``relative_margin`` r drops candidates
    scoring above (1 - r) times the query's weakest positive; ``absolute_margin`` a drops those
    above that score minus a. ``cross_encoder`` re-scores candidates and positives before the
    margin filters.
    """

    num_negatives: int = 8
    range_min: int = 0
    range_max: int | None = None
    relative_margin: float | None = None
    absolute_margin: float | None = None
    sampling: str = "top"
    cross_encoder: str | None = None
    model: str | None = None
    seed: int = 0

    def depth(self, max_positives: int) -> int:
        if self.range_max is not None:
            return self.range_max
        margins = self.relative_margin is not None or self.absolute_margin is not None
        return self.range_min + (10 if margins else 1) * self.num_negatives + max_positives


class NegativeSampler(Protocol):
    """Given training queries and their positives, yields negatives per query."""

    name: ClassVar[str]

    def sample(self, data: TrainingSet, config: MiningConfig) -> Negatives: ...


class RandomSampler:
    """Uniformly random documents that are not judged relevant (``random``)."""

    name: ClassVar[str] = "random"

    def sample(self, data: TrainingSet, config: MiningConfig) -> Negatives:
        rng = random.Random(config.seed)
        doc_ids = sorted(data.texts)
        by_query = {}
        for qid in data.queries:
            relevant = data.relevant(qid)
            chosen: list[str] = []
            while len(chosen) < min(config.num_negatives, len(doc_ids) - len(relevant)):
                doc = rng.choice(doc_ids)
                if doc not in relevant and doc not in chosen:
                    chosen.append(doc)
            by_query[qid] = [ScoredNegative(d, None) for d in chosen]
        return Negatives(by_query, dict(data.positives), self.name)


class RetrieverSampler:
    """Hard negatives from a retriever's ranking, filtered (base of ``bm25`` and ``dense``)."""

    name: ClassVar[str] = "retriever"

    def retriever(self, data: TrainingSet, config: MiningConfig) -> Any:
        raise NotImplementedError

    def sample(self, data: TrainingSet, config: MiningConfig) -> Negatives:
        retriever = self.retriever(data, config)
        depth = config.depth(max(len(p) for p in data.positives.values()))
        depth = min(depth, len(data.texts))
        log.info("mining %s negatives: top %d of %d documents", self.name, depth, len(data.texts))
        run = retriever.retrieve(data.queries, depth)
        positive_scores = self._positive_scores(retriever, data, run, config)
        if config.cross_encoder:
            run = _cross_encoder_scores(config.cross_encoder, data, run)
        by_query = {qid: select_negatives(run.ranked(qid), data.relevant(qid),
                                          positive_scores.get(qid), config)
                    for qid in data.queries}
        return Negatives(by_query, dict(data.positives), self.name)

    @staticmethod
    def _positive_scores(retriever: Any, data: TrainingSet, run: Run,
                         config: MiningConfig) -> dict[str, float]:
        """The weakest positive's score per query, which the margin filters compare against."""
        if config.relative_margin is None and config.absolute_margin is None:
            return {}
        candidates = Run({q: {d: 0.0 for d in data.positives[q]} for q in data.queries})
        if config.cross_encoder:
            scored = _cross_encoder_scores(config.cross_encoder, data, candidates)
        else:
            scored = retriever.rescore(data.queries, candidates)
        return {q: min(s.values()) for q, s in scored.items() if s}


class BM25Sampler(RetrieverSampler):
    """Hard negatives from in-process BM25 (``bm25``)."""

    name: ClassVar[str] = "bm25"

    def retriever(self, data: TrainingSet, config: MiningConfig) -> Any:
        from cormorant.retrieval.bm25 import BM25Retriever

        return BM25Retriever.build(data.corpus)


class DenseSampler(RetrieverSampler):
    """Static hard negatives from a dense retriever (``dense``); corpus embeddings are cached,
    so mining with the model already used for an index costs only the queries."""

    name: ClassVar[str] = "dense"

    def retriever(self, data: TrainingSet, config: MiningConfig) -> Any:
        from cormorant.retrieval.dense import DenseRetriever

        return DenseRetriever.build(data.corpus, model=config.model)


def select_negatives(ranked: list[tuple[str, float]], relevant: set[str],
                     positive_score: float | None, config: MiningConfig) -> list[ScoredNegative]:
    """Apply the filters to one query's ranked candidates (best first).

    Positives never survive. Margin filters need ``positive_score`` (the weakest positive);
    ``range_min`` then skips the best survivors, and ``num_negatives`` are taken from the top
    or sampled at random (and re-sorted by score).
    """
    kept = [(d, s) for d, s in ranked if d not in relevant]
    if positive_score is not None:
        if config.absolute_margin is not None:
            kept = [(d, s) for d, s in kept if s + config.absolute_margin <= positive_score]
        if config.relative_margin is not None:
            kept = [(d, s) for d, s in kept if s <= (1 - config.relative_margin) * positive_score]
    kept = sorted(kept, key=lambda x: -x[1])[config.range_min:]
    if config.sampling == "random" and len(kept) > config.num_negatives:
        rng = random.Random(f"{config.seed}")
        kept = sorted(rng.sample(kept, config.num_negatives), key=lambda x: -x[1])
    return [ScoredNegative(d, float(s)) for d, s in kept[:config.num_negatives]]


def _cross_encoder_scores(path: str, data: TrainingSet, run: Run) -> Run:
    from cormorant.retrieval.rerank import CrossEncoderScorer

    scorer = CrossEncoderScorer(path)
    return scorer.score_run(data.queries, run, data.texts)


def sampler(name: str) -> NegativeSampler:
    """The negative sampler registered as ``name`` (``random``, ``bm25``, ``dense``, ...)."""
    return registry.get(GROUP, name)()


def mine(data: TrainingSet, method: str, config: MiningConfig) -> Negatives:
    """Mine negatives for every training query with the sampler ``method``."""
    negatives = sampler(method).sample(data, config)
    short = sum(1 for negs in negatives.by_query.values() if not negs)
    if short:
        log.warning("%d queries got no negative that passed the filters", short)
    return negatives


__all__ = ["BM25Sampler", "DenseSampler", "MiningConfig", "NegativeSampler", "Negatives",
           "RandomSampler", "ScoredNegative", "mine", "sampler", "select_negatives"]
