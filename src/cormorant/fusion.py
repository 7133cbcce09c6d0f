"""Rank fusion and score normalisation: the one implementation behind the pipeline fusers
(``rrf``, ``combsum``) and ``cormorant fuse``.

Methods and normalisations follow ranx's names and definitions (Bassani and Romelli, 2022),
so a ranx user gets the same numbers: ``combsum`` (``wsum`` with weights), ``combmnz``,
``combanz``, ``combmax``, ``combmin``, ``combmed``, ``wmnz``, ``rrf`` and ``isr``; norms
``minmax``, ``max``, ``sum``, ``zscore`` (ranx's ``zmuv``) and ``rank``. Ranks are the ones
trec_eval would read from the run (:meth:`Run.ranked`).

Why not call ranx itself (it is pinned in the ``dev`` extra as the tests' oracle): it is
slower here and wrong in three corners. Its fusion is numba code behind typed dictionaries;
importing it, converting our runs and running the kernels costs more than the fusion does in
plain Python (``benchmarks/bench_fusion.py``, two runs of 300 queries x 1,000 documents on 2
cores: 0.2-0.9 s here against a 2 s import plus about 3 s per fusion for ranx with a warm
numba cache, 20 s for its first call). It fuses only the queries of the first run (a query
another run answers is dropped), breaks score ties in its own order rather than trec_eval's,
and its min-max gives a query whose documents all score the same 0 rather than 1 (a lone
document is then worth nothing). ``tests/test_fusion.py`` checks every method and norm
against ranx on inputs where none of that matters.

Example:
    >>> a = Run({"q": {"x": 3.0, "y": 1.0}})
    >>> b = Run({"q": {"y": 2.0, "z": 1.0}})
    >>> fuse([a, b], "combsum", norm="minmax")["q"]
    {'x': 1.0, 'y': 1.0, 'z': 0.0}
    >>> round(fuse([a, b], "rrf", k=60)["q"]["y"], 6) == round(1 / 62 + 1 / 61, 6)
    True
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from cormorant.errors import CormorantError
from cormorant.types import Run

NORMS = ("none", "minmax", "max", "sum", "zscore", "rank")
RANK_METHODS = ("rrf", "isr")  # fuse ranks, so a normalisation changes nothing
SCORE_METHODS = ("combsum", "wsum", "combmnz", "wmnz", "combanz", "combmax", "combmin", "combmed")
METHODS = RANK_METHODS + SCORE_METHODS
WEIGHTED = ("rrf", "isr", "combsum", "wsum", "wmnz")


def check(method: str, norm: str = "none", weights: Sequence[float] | None = None,
          runs: int | None = None) -> None:
    """Fail on an unknown method or norm, or weights that do not fit, before any work.

    Raises:
        CormorantError: with the choices, or a "did you mean".
    """
    from cormorant.errors import did_you_mean

    if method not in METHODS:
        raise CormorantError(f"unknown fusion method {method!r}{did_you_mean(method, METHODS)}"
                             f" (methods: {', '.join(METHODS)})")
    if norm not in NORMS:
        raise CormorantError(f"unknown normalisation {norm!r}{did_you_mean(norm, NORMS)}"
                             f" (norms: {', '.join(NORMS)})")
    if weights is not None:
        if method not in WEIGHTED:
            raise CormorantError(f"{method} takes no weights (weighted methods: {', '.join(WEIGHTED)})")
        if runs is not None and len(weights) != runs:
            raise CormorantError(f"{len(weights)} weights for {runs} runs")
        if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise CormorantError(f"weights must be non-negative and not all 0, got {list(weights)}")
    elif method in ("wsum", "wmnz"):
        raise CormorantError(f"{method} needs weights (one per run)")


def normalize(docs: dict[str, float], norm: str) -> dict[str, float]:
    """One query's scores normalised as ranx does, except that min-max maps a list whose
    scores are all equal to 1 (ranx: 0), so a lone document keeps its worth.

    Example:
        >>> normalize({"a": 4.0, "b": 2.0, "c": 0.0}, "minmax")
        {'a': 1.0, 'b': 0.5, 'c': 0.0}
        >>> normalize({"a": 4.0, "b": 2.0}, "rank")
        {'a': 1.0, 'b': 0.5}
    """
    if norm == "none" or not docs:
        return docs
    values = list(docs.values())
    if norm == "minmax":
        low, span = min(values), max(values) - min(values)
        return {d: (s - low) / span if span else 1.0 for d, s in docs.items()}
    if norm == "max":
        top = max(max(values), 1e-9)
        return {d: s / top for d, s in docs.items()}
    if norm == "sum":
        low = min(values)
        total = max(sum(values) - low * len(values), 1e-9)
        return {d: (s - low) / total for d, s in docs.items()}
    if norm == "zscore":
        mean, spread = statistics.fmean(values), max(statistics.pstdev(values), 1e-9)
        return {d: (s - mean) / spread for d, s in docs.items()}
    if norm == "rank":
        n = len(docs)
        return {d: 1 - i / n for i, (d, _) in enumerate(_ranked(docs))}
    raise CormorantError(f"unknown normalisation {norm!r} (norms: {', '.join(NORMS)})")


def fuse(runs: Sequence[Run], method: str = "rrf", norm: str = "none",
         weights: Sequence[float] | None = None, k: int = 60) -> Run:
    """Fuse ``runs`` query by query; a query any run answers is in the result.

    Args:
        runs: the rankings to fuse.
        method: one of :data:`METHODS`.
        norm: per-query normalisation of each run before a score method (ignored by ``rrf``
            and ``isr``, which fuse ranks).
        weights: one per run (``rrf``, ``isr``, ``combsum``/``wsum``, ``wmnz``); default 1 each.
        k: ``rrf``'s rank offset.

    Example:
        >>> fuse([Run({"q": {"a": 1.0}}), Run({"q": {"a": 2.0, "b": 1.0}})], "combmnz")["q"]
        {'a': 6.0, 'b': 1.0}
    """
    check(method, norm, weights, len(runs))
    weights = list(weights) if weights is not None else [1.0] * len(runs)
    if method in RANK_METHODS:
        contribution = _rrf(k) if method == "rrf" else _isr
        runs = [Run({q: contribution(docs) for q, docs in run.items()}) for run in runs]
    elif norm != "none":
        runs = [Run({q: normalize(docs, norm) for q, docs in run.items()}) for run in runs]
    combine = _COMBINE[method]
    queries = list(dict.fromkeys(q for run in runs for q in run))
    out = Run()
    for qid in queries:
        lists = [(run.get(qid, {}), w) for run, w in zip(runs, weights, strict=True)]
        out[qid] = combine(lists)
    return out


def _ranked(docs: dict[str, float]) -> list[tuple[str, float]]:
    return Run({"q": docs}).ranked("q")


def _rrf(k: int) -> Callable[[dict[str, float]], dict[str, float]]:
    return lambda docs: {d: 1 / (k + rank) for rank, (d, _) in enumerate(_ranked(docs), start=1)}


def _isr(docs: dict[str, float]) -> dict[str, float]:
    return {d: 1 / rank ** 2 for rank, (d, _) in enumerate(_ranked(docs), start=1)}


Lists = list[tuple[dict[str, float], float]]


def _gather(lists: Lists) -> dict[str, list[tuple[float, float]]]:
    """doc id -> (score, weight) from each list that holds the document, first seen first."""
    found: dict[str, list[tuple[float, float]]] = {}
    for docs, weight in lists:
        for doc, score in docs.items():
            found.setdefault(doc, []).append((score, weight))
    return found


def _wsum(lists: Lists) -> dict[str, float]:
    out: dict[str, float] = {}
    for docs, weight in lists:
        for doc, score in docs.items():
            out[doc] = out.get(doc, 0.0) + weight * score
    return out


def _by(reduce: Callable[[list[tuple[float, float]]], float]) -> Callable[[Lists], dict[str, float]]:
    return lambda lists: {d: reduce(pairs) for d, pairs in _gather(lists).items()}


_COMBINE: dict[str, Callable[[Lists], dict[str, float]]] = {
    "rrf": _wsum, "combsum": _wsum, "wsum": _wsum,
    # Mourao et al.: ISR multiplies the summed 1/rank^2 by how many runs hold the document.
    "isr": _by(lambda p: sum(w * s for s, w in p) * len(p)),
    "combmnz": _by(lambda p: sum(s for s, _ in p) * len(p)),
    "wmnz": _by(lambda p: sum(s for s, _ in p) * sum(w for _, w in p)),
    "combanz": _by(lambda p: sum(s for s, _ in p) / len(p)),
    "combmax": _by(lambda p: max(s for s, _ in p)),
    "combmin": _by(lambda p: min(s for s, _ in p)),
    "combmed": _by(lambda p: statistics.median(s for s, _ in p)),
}
