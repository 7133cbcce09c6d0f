"""Measures through ir-measures, averaged over every judged query by default.

Two families of published numbers average differently, and ``average`` picks one:

- ``judged`` (default): a judged query the system returned nothing for counts as 0, as
  ``trec_eval -c`` does (TREC, Pyserini's regressions, ir-measures' ``calc_aggregate`` over
  the qrels);
- ``retrieved``: only judged queries with at least one result count, as BEIR's and MTEB's
  evaluators do (pytrec_eval over the run's queries). It inflates scores where a system
  returns nothing for some queries (NFCorpus BM25: 0.3375 instead of 0.3218).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cormorant.errors import CormorantError
from cormorant.types import Qrels, Run

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100")
AVERAGES = ("judged", "retrieved")


def parse_measures(names: Sequence[str]) -> list[object]:
    """ir-measures objects for names such as ``nDCG@10``; unknown names fail clearly."""
    import ir_measures

    parsed = []
    for name in names:
        try:
            parsed.append(ir_measures.parse_measure(name))
        except (ValueError, NameError, SyntaxError, TypeError):
            from cormorant.errors import did_you_mean

            base, at, cutoff = str(name).partition("@")
            known = list(ir_measures.measures.registry)
            same_case = [k for k in known if k.lower() == base.lower()]
            hint = f"; did you mean {same_case[0] + at + cutoff!r}?" if same_case else \
                did_you_mean(base, known).replace("'?", f"{at}{cutoff}'?")
            raise CormorantError(f"unknown measure {name!r}{hint} (ir-measures names, e.g."
                                 f" nDCG@10, RR@10, R@100, AP, P@5)") from None
    return parsed


@dataclass
class Evaluation:
    """Aggregate and per-query values, keyed by ir-measures' own measure names."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={value:.4f}" for name, value in self.aggregate.items())
        return f"Evaluation({values}; {len(self.per_query)} queries)"


def evaluate(run: Run, qrels: Qrels, measures: Sequence[str] = DEFAULT_MEASURES,
             average: str = "judged") -> Evaluation:
    """Score ``run`` against ``qrels``, averaging over the queries ``average`` names
    (``judged``: every judged query, ``retrieved``: judged queries with results; see above).

    Example:
        >>> ev = evaluate(Run({"q": {"d1": 1.0}}), {"q": {"d1": 1}, "q2": {"d2": 1}}, ["R@10"])
        >>> ev.aggregate["R@10"]  # q2 got nothing, so it counts as 0
        0.5
        >>> evaluate(Run({"q": {"d1": 1.0}}), {"q": {"d1": 1}, "q2": {"d2": 1}}, ["R@10"],
        ...          average="retrieved").aggregate["R@10"]
        1.0
    """
    import ir_measures

    if average not in AVERAGES:
        raise CormorantError(f"--average must be one of {', '.join(AVERAGES)}, got {average!r}")
    parsed = parse_measures(measures)
    names = [str(m) for m in parsed]
    scored = Run({q: docs for q, docs in run.items() if q in qrels and docs})
    judged = sorted(qrels) if average == "judged" else sorted(scored)
    if not judged:
        raise CormorantError("no judged queries to evaluate" if average == "judged" else
                             "no judged query has a result (--average retrieved)")
    per_query = {qid: dict.fromkeys(names, 0.0) for qid in judged}
    if scored:
        for metric in ir_measures.iter_calc(parsed, qrels, scored):
            if metric.query_id in per_query:  # ir-measures also reports the unanswered ones
                per_query[metric.query_id][str(metric.measure)] = float(metric.value)
    aggregate = {n: sum(per_query[q][n] for q in judged) / len(judged) for n in names}
    return Evaluation(aggregate, per_query)
