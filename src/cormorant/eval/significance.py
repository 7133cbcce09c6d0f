"""Paired significance tests against a baseline, with multiple-comparison correction.

Per measure and system: the paired t-test (scipy), a two-sided paired randomisation test (sign
flips of the per-query differences; exact when 2^n fits the permutation budget), Holm's
step-down correction across all comparisons of one report, and per-query wins, ties and losses.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from cormorant.errors import CormorantError

ALPHA = 0.05
"""The corrected p-value below which tables mark a difference from the baseline (†)."""


def paired_t_test(system: Sequence[float], baseline: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test; 1.0 when every difference is zero."""
    from scipy import stats

    diff = np.asarray(system, dtype=float) - np.asarray(baseline, dtype=float)
    if len(diff) < 2:
        raise CormorantError("a paired test needs at least two queries")
    if np.allclose(diff, diff[0]):  # zero variance: t is undefined (or infinite)
        return 1.0 if np.isclose(diff[0], 0.0) else 0.0
    return float(stats.ttest_rel(system, baseline).pvalue)


def randomization_test(system: Sequence[float], baseline: Sequence[float],
                       permutations: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of the paired randomisation (sign-flip) test on the mean difference.

    Exact over all 2^n sign assignments when that is at most ``permutations``; otherwise
    Monte Carlo with ``permutations`` draws, counting the observed assignment (p >= 1/(B+1)).

    Example:
        >>> randomization_test([1, 1, 1, 1], [0, 0, 0, 0])  # 2 of 16 flips are as extreme
        0.125
    """
    diff = np.asarray(system, dtype=float) - np.asarray(baseline, dtype=float)
    n = len(diff)
    if n < 2:
        raise CormorantError("a paired test needs at least two queries")
    observed = abs(diff.mean())
    tolerance = 1e-12 * max(1.0, observed)
    if 2 ** n <= permutations:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        means = np.abs(signs @ diff) / n
        return float(np.mean(means >= observed - tolerance))
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, permutations, 1000):
        block = min(1000, permutations - start)
        signs = rng.choice((1.0, -1.0), size=(block, n))
        extreme += int(np.sum(np.abs(signs @ diff) / n >= observed - tolerance))
    return (extreme + 1) / (permutations + 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    Example:
        >>> holm([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return [round(float(v), 12) for v in adjusted]


def bonferroni(p_values: Sequence[float]) -> list[float]:
    """Bonferroni adjusted p-values."""
    return [min(1.0, p * len(p_values)) for p in p_values]


CORRECTIONS = {"holm": holm, "bonferroni": bonferroni, "none": lambda p: list(p)}


@dataclass
class Comparison:
    """One system against the baseline on one measure of one dataset."""

    dataset: str
    measure: str
    system: str
    baseline: str
    mean_system: float
    mean_baseline: float
    t_p: float
    randomization_p: float
    wins: int
    ties: int
    losses: int
    t_p_adjusted: float = float("nan")
    randomization_p_adjusted: float = float("nan")

    @property
    def delta(self) -> float:
        return self.mean_system - self.mean_baseline

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "delta": self.delta}


def compare(dataset: str, measure: str, system: str, baseline: str,
            system_per_query: dict[str, float], baseline_per_query: dict[str, float],
            permutations: int = 10_000, seed: int = 0, tie: float = 1e-9) -> Comparison:
    """Paired comparison over the queries both systems were judged on."""
    queries = sorted(set(system_per_query) & set(baseline_per_query))
    a = np.array([system_per_query[q] for q in queries])
    b = np.array([baseline_per_query[q] for q in queries])
    diff = a - b
    return Comparison(dataset, measure, system, baseline, float(a.mean()), float(b.mean()),
                      paired_t_test(a, b), randomization_test(a, b, permutations, seed),
                      int(np.sum(diff > tie)), int(np.sum(np.abs(diff) <= tie)),
                      int(np.sum(diff < -tie)))


def correct(comparisons: list[Comparison], method: str = "holm") -> list[Comparison]:
    """Adjust every comparison's p-values together (one family per report)."""
    if method not in CORRECTIONS:
        raise CormorantError(f"unknown correction {method!r}; use one of {sorted(CORRECTIONS)}")
    adjust = CORRECTIONS[method]
    for attr in ("t_p", "randomization_p"):
        for comp, value in zip(comparisons, adjust([getattr(c, attr) for c in comparisons]),
                               strict=True):
            setattr(comp, f"{attr}_adjusted", value)
    return comparisons
