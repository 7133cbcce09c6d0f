"""Measures through ir-measures, averaged over every judged query.

A judged query the system returned nothing for counts as 0 (as ``trec_eval -c`` does); averaging
only over queries with results would inflate scores (NFCorpus: 0.3375 instead of 0.3218 for BM25).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cormorant.errors import CormorantError
from cormorant.types import Qrels, Run

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100")


def parse_measures(names: Sequence[str]) -> list[object]:
    """ir-measures objects for names such as ``nDCG@10``; unknown names fail clearly."""
    import ir_measures

    parsed = []
    for name in names:
        try:
            parsed.append(ir_measures.parse_measure(name))
        except (ValueError, NameError, SyntaxError, TypeError):
            raise CormorantError(f"unknown measure {name!r} (ir-measures names, e.g."
                                 f" nDCG@10, RR@10, R@100, AP, P@5)") from None
    return parsed


@dataclass
class Evaluation:
    """Aggregate and per-query values, keyed by ir-measures' own measure names."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]


def evaluate(run: Run, qrels: Qrels, measures: Sequence[str] = DEFAULT_MEASURES) -> Evaluation:
    """Score ``run`` against ``qrels``.

    Example:
        >>> ev = evaluate(Run({"q": {"d1": 1.0}}), {"q": {"d1": 1}, "q2": {"d2": 1}}, ["R@10"])
        >>> ev.aggregate["R@10"]  # q2 got nothing, so it counts as 0
        0.5
    """
    import ir_measures

    parsed = parse_measures(measures)
    names = [str(m) for m in parsed]
    judged = sorted(qrels)
    if not judged:
        raise CormorantError("no judged queries to evaluate")
    per_query = {qid: dict.fromkeys(names, 0.0) for qid in judged}
    scored = Run({q: docs for q, docs in run.items() if q in qrels and docs})
    if scored:
        for metric in ir_measures.iter_calc(parsed, qrels, scored):
            per_query[metric.query_id][str(metric.measure)] = float(metric.value)
    aggregate = {n: sum(per_query[q][n] for q in judged) / len(judged) for n in names}
    return Evaluation(aggregate, per_query)
