"""Run a pipeline over a dataset split and measure it."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cormorant.eval.measures import DEFAULT_MEASURES, evaluate
from cormorant.pipeline import Flow, Stage
from cormorant.types import Dataset, Run, Split

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """What ``cormorant eval --json`` writes."""

    dataset: str
    split: str
    pipeline: str
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    timing: dict[str, float]
    run: Run = field(repr=False, default_factory=Run)

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "split": self.split, "pipeline": self.pipeline,
                "metrics": self.metrics, "per_query": self.per_query, "timing": self.timing}

    def __repr__(self) -> str:
        # The per-query values (hundreds of numbers) stay out of the printed form.
        values = ", ".join(f"{name}={value:.4f}" for name, value in self.metrics.items())
        return (f"EvalResult({self.dataset}/{self.split}, {self.pipeline!r}: {values};"
                f" {len(self.per_query)} queries)")


def run_split(stage: Stage, dataset: Dataset, split: str, depth: int = 1000,
              measures: Sequence[str] = DEFAULT_MEASURES,
              build_seconds: float = 0.0, average: str = "judged") -> EvalResult:
    """Search every query of ``split`` with ``stage`` and evaluate the top ``depth``.

    BRIGHT-style ``excluded`` documents are removed from each ranking before it is cut to
    ``depth``, so they neither score nor push judged documents out.
    """
    data = dataset.split(split)
    run, timing = timed_search(stage, data.queries, build_seconds)
    return score_run(run, dataset.name, split, data, str(stage), timing, depth, measures, average)


def timed_search(stage: Stage, queries: dict[str, str], build_seconds: float = 0.0,
                 latency: bool = False) -> tuple[Run, dict[str, float]]:
    """Search all ``queries`` in one batch; the run and its timing record (with ``latency``,
    also repeated one-query timings: :func:`single_query_latency`)."""
    from cormorant.console import progress

    start = time.perf_counter()
    # One labelled line (with elapsed time on a terminal) while a whole split is searched.
    with progress(f"searching {len(queries):,} queries with {stage}", total=len(queries),
                  unit="query") as bar:
        run = stage.transform(Flow.start(queries)).result(stage)
        bar.update(len(queries))
    search_seconds = time.perf_counter() - start
    n = max(len(queries), 1)
    timing = {"build_s": round(build_seconds, 3), "search_s": round(search_seconds, 3),
              "queries": len(queries), "ms_per_query": round(1000 * search_seconds / n, 3)}
    if latency:
        timing.update(single_query_latency(stage, queries, budget_s=0.1 * search_seconds))
    return run, timing


def single_query_latency(stage: Stage, queries: dict[str, str], budget_s: float,
                         most: int = 30, seed: int = 0) -> dict[str, float]:
    """Repeated timings of one query at a time (what a user of the service waits), over a
    seeded sample cycled until ``most`` timings or ``budget_s`` seconds, whichever first (at
    least three): the median and the 10th/90th percentiles in ms. The batch figure
    (``ms_per_query``) is one sample and hides the spread; this one shows it. Stages behind a
    cache (language-model generations) are timed on cached answers.

    Example:
        >>> from cormorant.pipeline import StaticStage
        >>> from cormorant.types import Run
        >>> found = single_query_latency(StaticStage(Run({"q": {"d": 1.0}})), {"q": "x"}, 0.0)
        >>> sorted(found)
        ['latency_ms_p10', 'latency_ms_p50', 'latency_ms_p90', 'latency_timings']
    """
    import random

    import numpy as np

    if not queries:
        return {}
    sample = random.Random(seed).sample(sorted(queries), min(len(queries), most))
    timings: list[float] = []
    started = time.perf_counter()
    while len(timings) < most and (len(timings) < 3 or time.perf_counter() - started < budget_s):
        qid = sample[len(timings) % len(sample)]
        one = time.perf_counter()
        stage.transform(Flow.start({qid: queries[qid]})).result(stage)
        timings.append(1000 * (time.perf_counter() - one))
    p10, p50, p90 = np.percentile(timings, [10, 50, 90]).tolist()
    return {"latency_ms_p50": round(p50, 3), "latency_ms_p10": round(p10, 3),
            "latency_ms_p90": round(p90, 3), "latency_timings": len(timings)}


def score_run(run: Run, dataset: str, split_name: str, split: Split, pipeline: str,
              timing: dict[str, float], depth: int = 1000,
              measures: Sequence[str] = DEFAULT_MEASURES, average: str = "judged") -> EvalResult:
    """Drop excluded documents, cut to ``depth`` and evaluate an existing run."""
    if split.excluded:
        run = run.without(split.excluded)
    run = run.topk(depth)
    evaluation = evaluate(run, split.qrels, measures, average)
    return EvalResult(dataset, split_name, pipeline, evaluation.aggregate,
                      evaluation.per_query, timing, run)


def markdown_table(results: Sequence[EvalResult], comparisons: Sequence[Any] = ()) -> str:
    """One row per result, one column per measure, and the number of queries averaged over.
    With ``comparisons`` (against a baseline), a value is marked † where it differs from the
    baseline's with corrected randomisation-test p < 0.05, and a legend follows."""
    from cormorant.eval.significance import ALPHA

    if not results:
        return ""
    names = list(results[0].metrics)
    marked = {(c.dataset, c.system, c.measure) for c in comparisons
              if c.randomization_p_adjusted < ALPHA}
    lines = ["| dataset | split | pipeline | " + " | ".join(names) + " | queries | ms/query |",
             "|---|---|---|" + "---:|" * (len(names) + 2)]
    for r in results:
        values = " | ".join(f"{r.metrics[n]:.4f}{' †' if (r.dataset, r.pipeline, n) in marked else ''}"
                            for n in names)
        values += f" | {len(r.per_query):,}"
        pipe = r.pipeline.replace("|", "\\|")
        ms = r.timing.get("ms_per_query")
        lines.append(f"| {r.dataset} | {r.split} | `{pipe}` | {values} |"
                     f" {'-' if ms is None else f'{ms:.1f}'} |")
    if comparisons:
        baseline = comparisons[0].baseline.replace("|", "\\|")
        lines.append(f"\n†: differs from the baseline `{baseline}` with Holm-corrected"
                     f" randomisation-test p < {ALPHA}.")
    return "\n".join(lines) + "\n"
