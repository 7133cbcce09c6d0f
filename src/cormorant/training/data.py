"""What a training run reads: queries with their positives, and the corpus by document id.

Training needs random access to document text (a negative is any document), so the texts of
the corpus are held in memory here; the corpus itself may still be streamed elsewhere.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from cormorant.data import DatasetSpec
from cormorant.errors import DataError
from cormorant.types import Corpus, Dataset, Qrels, Queries

log = logging.getLogger(__name__)


@dataclass
class TrainingSet:
    """Training queries, each with at least one positive, over one corpus.

    Example:
        >>> data = TrainingSet.load(Path("../shared/data/scifact"), "train")  # doctest: +SKIP
        >>> len(data.queries), data.positives["1"]  # doctest: +SKIP
        (809, ['31715818'])
    """

    queries: Queries
    positives: dict[str, list[str]]
    corpus: Corpus
    texts: dict[str, str]
    qrels: Qrels = field(default_factory=dict)

    @classmethod
    def load(cls, dataset: Path, split: str) -> TrainingSet:
        """The split's judged queries with a positive (relevance > 0); the others are reported."""
        ds = DatasetSpec(dataset).load()
        return cls.from_dataset(ds, split)

    @classmethod
    def from_dataset(cls, ds: Dataset, split: str) -> TrainingSet:
        part = ds.split(split)
        texts = {d.doc_id: d.contents for d in ds.corpus}
        positives: dict[str, list[str]] = {}
        missing_docs: set[str] = set()
        for qid, judged in part.qrels.items():
            if qid not in part.queries:
                continue
            pos = [d for d, rel in judged.items() if rel > 0]
            missing_docs.update(d for d in pos if d not in texts)
            pos = [d for d in pos if d in texts]
            if pos:
                positives[qid] = sorted(pos)
        if missing_docs:
            log.warning("%d judged documents are not in the corpus; ignored", len(missing_docs))
        without = len(part.queries) - len(positives)
        if not positives:
            raise DataError(f"split {split!r} of {ds.name} has no query with a positive"
                            " judgment (relevance > 0) in the corpus: nothing to train on")
        if without:
            log.warning("%d of %d %s queries have no positive judgment; they are left out",
                        without, len(part.queries), split)
        queries = {q: part.queries[q] for q in positives}
        return cls(queries, positives, ds.corpus, texts, part.qrels)

    def relevant(self, qid: str) -> set[str]:
        """Every document judged relevant to ``qid``: never to be used as its negative."""
        return set(self.positives.get(qid, ()))

    def hold_out(self, fraction: float, seed: int, cap: int = 200) -> tuple[TrainingSet, TrainingSet]:
        """Split off a dev set of queries (``fraction`` of them, at most ``cap``), seeded."""
        qids = sorted(self.queries)
        size = min(cap, max(1, round(len(qids) * fraction)))
        if size >= len(qids):
            raise DataError(f"cannot hold out {size} dev queries from {len(qids)}")
        dev = set(random.Random(seed).sample(qids, size))
        return self._subset([q for q in qids if q not in dev]), self._subset(sorted(dev))

    def subset(self, qids: list[str]) -> TrainingSet:
        """The same corpus with only the queries in ``qids``."""
        return self._subset(qids)

    def _subset(self, qids: list[str]) -> TrainingSet:
        return TrainingSet({q: self.queries[q] for q in qids},
                           {q: self.positives[q] for q in qids}, self.corpus, self.texts,
                           {q: self.qrels[q] for q in qids if q in self.qrels})
