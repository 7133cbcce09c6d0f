"""Fusion weights chosen on judged queries, as ranx's ``optimize_fusion`` does: a grid over
the weights (each a multiple of ``step`` in [0, 1], summing to 1), scored on a dev split.

Example:
    >>> weights, best = optimize_weights([bm25, dense], "wsum", "minmax", "nDCG@10",
    ...                                  dataset.split("dev"))  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from cormorant.errors import CormorantError
from cormorant.eval.measures import evaluate, parse_measures
from cormorant.fusion import WEIGHTED, fuse
from cormorant.types import Run, Split


def weight_grid(runs: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector of multiples of ``step`` that sums to 1 (no run weighs 0 alone).

    Example:
        >>> weight_grid(2, 0.5)
        [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    """
    if not 0 < step <= 0.5:
        raise CormorantError(f"--step must be in (0, 0.5], got {step}")
    units = round(1 / step)
    if abs(units * step - 1) > 1e-9:
        raise CormorantError(f"--step must divide 1, got {step}")
    grid = [c for c in itertools.product(range(units + 1), repeat=runs) if sum(c) == units]
    return [tuple(round(u * step, 10) for u in combo) for combo in grid]


def optimize_weights(runs: Sequence[Run], method: str, norm: str, measure: str, split: Split,
                     step: float = 0.1, k: int = 60) -> tuple[list[float], float]:
    """The weights (and the value they reach) that maximise ``measure`` on ``split``'s
    judged queries; ties go to the first vector in grid order.

    Raises:
        CormorantError: the method takes no weights, or no run answers a judged query.
    """
    if method not in WEIGHTED:
        raise CormorantError(f"--optimize needs a weighted method ({', '.join(WEIGHTED)}), got {method}")
    parse_measures([measure])
    judged = set(split.qrels)
    dev = [Run({q: docs for q, docs in run.items() if q in judged}) for run in runs]
    if not any(dev):
        raise CormorantError("no run answers a judged query of the --split used to optimise")
    best: tuple[list[float], float] | None = None
    for weights in weight_grid(len(runs), step):
        if not any(weights):
            continue
        value = evaluate(fuse(dev, method, norm, weights, k=k), split.qrels, [measure]).aggregate
        score = next(iter(value.values()))
        if best is None or score > best[1]:
            best = (list(weights), score)
    assert best is not None
    return best
