"""Denoised hard negatives (RocketQA, Qu et al., NAACL 2021): a teacher checks mined negatives.

Mined "negatives" that the teacher scores near or above the query's positives are likely
relevant documents nobody judged; training the student away from them teaches it to rank
relevant documents low (NFCorpus's hard negatives lose up to 0.036 nDCG@10, docs/training.md).
RocketQA keeps a negative only when its cross-encoder probability is below 0.1; that threshold
needs a calibrated probability, which a pipeline teacher (RRF, Chamfer) does not give. So the
rule here is sentence-transformers' ``relative_margin`` (``mine_hard_negatives``) on teacher
scores min-max scaled per query over the query's positives and mined negatives (so the rule
is the same for logits, RRF scores and dot products, and never meets a negative score): a
negative is dropped when its scaled score exceeds (1 - margin) times the query's weakest
positive's. The default margin 0.05 is NV-Retriever's TopK-PercPos 95%.

Example:
    >>> from cormorant.training.negatives import Negatives, ScoredNegative
    >>> mined = Negatives({"q": [ScoredNegative("a", None), ScoredNegative("b", None)]},
    ...                   {"q": ["p"]})
    >>> kept, report = denoise(mined, {("q", "p"): 5.0, ("q", "a"): 6.0, ("q", "b"): 1.0}, 0.05)
    >>> kept.ids("q"), report.dropped
    (['b'], 1)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cormorant.fusion import normalize
from cormorant.training.negatives import Negatives

log = logging.getLogger(__name__)
DEFAULT_MARGIN = 0.05


@dataclass(frozen=True)
class DenoiseReport:
    """What denoising did, for the log and ``summary.json``."""

    margin: float
    checked: int
    dropped: int
    unscored: int
    emptied_queries: int

    @property
    def share_dropped(self) -> float:
        return self.dropped / self.checked if self.checked else 0.0

    def record(self) -> dict[str, Any]:
        """The report as ``summary.json`` stores it."""
        return {"rule": "drop if minmax(neg) > (1 - margin) * minmax(weakest positive)",
                "margin": self.margin, "checked": self.checked, "dropped": self.dropped,
                "share_dropped": round(self.share_dropped, 4), "unscored_kept": self.unscored,
                "queries_left_without_negatives": self.emptied_queries}


def denoise(negatives: Negatives, scores: dict[tuple[str, str], float],
            margin: float = DEFAULT_MARGIN) -> tuple[Negatives, DenoiseReport]:
    """``negatives`` without those the teacher's ``scores`` put near or above the weakest
    positive. A negative the teacher did not score is kept (nothing says it is relevant) and
    counted; a query whose positives were not scored keeps its negatives unchecked."""
    kept: dict[str, list[Any]] = {}
    checked = dropped = unscored = emptied = 0
    for qid, negs in negatives.by_query.items():
        positives = negatives.positives.get(qid, [])
        scaled = normalize({d: scores[(qid, d)] for d in positives + [n.doc_id for n in negs]
                            if (qid, d) in scores}, "minmax")
        floor = min((scaled[p] for p in positives if p in scaled), default=None)
        if floor is None:
            kept[qid] = list(negs)
            continue
        limit = (1 - margin) * floor
        survivors = [n for n in negs if scaled.get(n.doc_id, -1.0) <= limit]
        unscored += sum(1 for n in negs if n.doc_id not in scaled)
        checked += len(negs)
        dropped += len(negs) - len(survivors)
        emptied += bool(negs) and not survivors
        kept[qid] = survivors
    report = DenoiseReport(margin, checked, dropped, unscored, emptied)
    log.info("denoising: dropped %d of %d mined negatives (%.1f%%) that the teacher scores above"
             " %.2f x the weakest positive (min-max per query); %d queries left without one",
             dropped, checked, 100 * report.share_dropped, 1 - margin, emptied)
    return Negatives(kept, negatives.positives, negatives.method), report


__all__ = ["DEFAULT_MARGIN", "DenoiseReport", "denoise"]
