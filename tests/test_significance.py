import numpy as np
import pytest
from scipy import stats

from cormorant.eval.significance import compare, correct, holm, paired_t_test, randomization_test

RNG = np.random.default_rng(7)
A = RNG.uniform(0, 1, 12)
B = np.clip(A - RNG.normal(0.08, 0.1, 12), 0, 1)


def test_t_test_matches_scipy():
    assert paired_t_test(A, B) == pytest.approx(stats.ttest_rel(A, B).pvalue, rel=1e-12)


def test_exact_randomization_matches_scipy_permutation_test():
    expected = stats.permutation_test((A, B), lambda x, y: np.mean(x - y),
                                      permutation_type="samples", n_resamples=np.inf,
                                      alternative="two-sided").pvalue
    assert randomization_test(A, B, permutations=2 ** 12) == pytest.approx(expected, abs=1e-12)


def test_monte_carlo_randomization_close_to_exact():
    exact = randomization_test(A, B, permutations=2 ** 12)
    sampled = randomization_test(A, B, permutations=4000, seed=3)
    assert sampled == pytest.approx(exact, abs=0.02)
    assert sampled == randomization_test(A, B, permutations=4000, seed=3)  # seeded


def test_identical_systems_are_not_significant():
    assert paired_t_test(A, A) == 1.0
    assert randomization_test(A, A) == 1.0


def test_holm_against_hand_values():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01=0.03, 2*0.03=0.06, max(0.06, 1*0.04)=0.06
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_compare_counts_wins_ties_losses_and_corrects():
    system = {"q1": 1.0, "q2": 0.5, "q3": 0.2, "q4": 0.0}
    baseline = {"q1": 0.5, "q2": 0.5, "q3": 0.4, "q4": 0.0, "q5": 1.0}
    comp = compare("d", "nDCG@10", "dense", "bm25", system, baseline)
    assert (comp.wins, comp.ties, comp.losses) == (1, 2, 1)
    assert comp.delta == pytest.approx(0.075)
    other = compare("d", "R@100", "dense", "bm25", system, baseline)
    correct([comp, other])
    # Two comparisons with equal p-values: Holm doubles both.
    assert comp.t_p_adjusted == pytest.approx(min(1.0, 2 * comp.t_p))
    assert other.randomization_p_adjusted == pytest.approx(min(1.0, 2 * other.randomization_p))
