"""Dev-set evaluation during training: nDCG@10 of held-out queries over a candidate pool.

Encoding the whole corpus at every evaluation would cost minutes on a CPU, so each dev query is
ranked over its positives plus BM25's top candidates (a re-ranking view of the task). The
checkpoint with the best dev nDCG@10 is the one kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

from cormorant.eval.measures import evaluate
from cormorant.training.data import TrainingSet
from cormorant.types import Run

log = logging.getLogger(__name__)
METRIC = "ndcg@10"


@dataclass
class DevSet:
    """Dev queries, their judgments and the candidates each is ranked over."""

    data: TrainingSet
    candidates: dict[str, list[str]]

    @classmethod
    def build(cls, dev: TrainingSet, depth: int) -> DevSet:
        """Each query over BM25's top ``depth`` and its ``depth`` best-judged positives.

        Capping the positives keeps the view cheap where queries have many (NFCorpus judges 44
        per dev query: all of them made the view 3,108 documents, 86% of the corpus, and 9,872
        cross-encoder pairs; capped, 1,917 and 3,024); nDCG@10 needs no more than 10 of them
        to reach its ideal.
        """
        from cormorant.retrieval.bm25 import BM25Retriever

        run = BM25Retriever.build(dev.corpus).retrieve(dev.queries, depth)
        candidates = {q: sorted(set(run.get(q, {})) | set(_best_positives(dev, q, depth)))
                      for q in dev.queries}
        return cls(dev, candidates)

    def doc_ids(self) -> list[str]:
        return sorted({d for docs in self.candidates.values() for d in docs})


Scorer = Callable[[Any, DevSet], Run]


def bi_encoder_scorer(fixed: dict[str, np.ndarray] | None = None) -> Scorer:
    """Scores with the model on both sides, or with fixed document vectors (ADORE, distilled
    query towers) when ``fixed`` maps doc ids to vectors."""

    def score(model: Any, dev: DevSet) -> Run:
        qids = list(dev.data.queries)
        queries = model.encode_query([dev.data.queries[q] for q in qids], convert_to_numpy=True)
        doc_ids = dev.doc_ids()
        if fixed is None:
            vectors = model.encode_document([dev.data.texts[d] for d in doc_ids],
                                            convert_to_numpy=True)
        else:
            vectors = np.stack([fixed[d] for d in doc_ids])
        row = {d: i for i, d in enumerate(doc_ids)}
        run = Run()
        for qid, vector in zip(qids, queries, strict=True):
            docs = dev.candidates[qid]
            run[qid] = dict(zip(docs, (vectors[[row[d] for d in docs]] @ vector).tolist(),
                                strict=True))
        return run

    return score


def cross_encoder_scorer(model: Any, dev: DevSet) -> Run:
    import torch

    keys = [(q, d) for q in dev.data.queries for d in dev.candidates[q]]
    scores = model.predict([(dev.data.queries[q], dev.data.texts[d]) for q, d in keys],
                           activation_fn=torch.nn.Identity(), show_progress_bar=False)
    run = Run({q: {} for q in dev.data.queries})
    for (q, d), s in zip(keys, np.asarray(scores).reshape(-1).tolist(), strict=True):
        run[q][d] = s
    return run


class DevEvaluator(SentenceEvaluator):
    """A sentence-transformers evaluator reporting ``dev_ndcg@10`` for the Trainer.

    Example:
        >>> evaluator = DevEvaluator(DevSet.build(dev, depth=10), bi_encoder_scorer())  # doctest: +SKIP
    """

    def __init__(self, dev: DevSet, scorer: Scorer, name: str = "dev") -> None:
        super().__init__()
        self.dev, self.scorer, self.name = dev, scorer, name
        self.primary_metric = METRIC
        self.history: list[tuple[int, float]] = []

    def __call__(self, model: Any, output_path: str | None = None, epoch: int = -1,
                 steps: int = -1) -> dict[str, float]:
        run = self.scorer(model, self.dev)
        value = evaluate(run, self.dev.data.qrels or _binary(self.dev.data), ["nDCG@10"])
        ndcg = float(value.aggregate["nDCG@10"])
        self.history.append((steps, ndcg))
        log.info("dev nDCG@10 at step %d: %.4f", steps, ndcg)
        return self.prefix_name_to_metrics({METRIC: ndcg}, self.name)


def _best_positives(dev: TrainingSet, qid: str, limit: int) -> list[str]:
    """The query's ``limit`` most relevant positives (highest grade first, then by id)."""
    grades = dev.qrels.get(qid, {})
    return sorted(dev.positives[qid], key=lambda d: (-grades.get(d, 1), d))[:limit]


def _binary(data: TrainingSet) -> dict[str, dict[str, int]]:
    return {q: dict.fromkeys(docs, 1) for q, docs in data.positives.items()}
