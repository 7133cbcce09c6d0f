"""The training losses against hand-computed values and the properties their papers state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cormorant.training.losses import (
    adore_weights,
    distill_loss,
    inbatch_margin_mse,
    margin_mse,
    star_pair_loss,
)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_star_loss_for_two_queries_by_hand() -> None:
    # Query 0: own positive (col 0), other positive (col 1), hard negatives (cols 2, 3).
    scores = torch.tensor([[3.0, 1.0, 2.0, 0.5], [0.0, 2.0, 1.5, 2.5]])
    own = torch.tensor([3.0, 2.0])
    valid = torch.tensor([[False, True, True, True], [True, False, True, True]])
    expected = (softplus(1 - 3) + softplus(2 - 3) + softplus(0.5 - 3)
                + softplus(0 - 2) + softplus(1.5 - 2) + softplus(2.5 - 2)) / 6
    assert star_pair_loss(scores, own, valid).item() == pytest.approx(expected, rel=1e-6)


def test_star_loss_ignores_masked_documents() -> None:
    scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 2.0, 1.5]])
    own = torch.tensor([3.0, 2.0])
    valid = torch.tensor([[False, False, True], [True, False, True]])
    before = star_pair_loss(scores, own, valid)
    scores[0, 1] = 100.0  # a document relevant to query 0: masked, so it must not count
    assert star_pair_loss(scores, own, valid).item() == pytest.approx(before.item())


def test_adore_weights_are_reciprocal_rank_swaps_cut_at_metric_cut() -> None:
    ranks = torch.tensor([1, 2, 3, 4])
    relevant = torch.tensor([False, True, False, True])
    w = adore_weights(ranks, relevant, metric_cut=None)
    assert torch.allclose(w, torch.tensor([[0.5, 1 / 2 - 1 / 3], [0.75, 1 / 3 - 1 / 4]]))
    cut = adore_weights(ranks, relevant, metric_cut=2)  # 1/3 and 1/4 count as 0
    assert torch.allclose(cut, torch.tensor([[0.5, 0.5], [1.0, 0.0]]))


def test_margin_mse_is_zero_when_student_is_teacher_plus_a_constant() -> None:
    teacher_pos, teacher_neg = torch.tensor([5.0, 2.0]), torch.tensor([1.0, 3.0])
    student_margin = (teacher_pos + 7) - (teacher_neg + 7)
    assert margin_mse(student_margin, teacher_pos - teacher_neg).item() == 0.0
    assert margin_mse(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])).item() == 2.5


def test_inbatch_margin_mse_by_hand_and_excluding_the_diagonal() -> None:
    sp = torch.tensor([[4.0, 1.0], [2.0, 3.0]])
    sn = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    tp = torch.tensor([[5.0, 1.0], [1.0, 3.0]])
    tn = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    # i=0, j=1: pos (4-1)-(5-1)=-1 -> 1; neg (4-2)-(5-1)=-2 -> 4.
    # i=1, j=0: pos (3-2)-(3-1)=-1 -> 1; neg (3-1)-(3-0)=-1 -> 1.
    expected = 0.5 * (1 + 4 + 1 + 1) / 2
    assert inbatch_margin_mse((sp, sn), (tp, tn)).item() == pytest.approx(expected)
    # Including j = i would add the diagonal negative terms and change the value.
    with_diagonal = 0.5 * ((1 + 4 + 1 + 1) + ((4 - 0) - (5 - 1)) ** 2 + ((3 - 1) - (3 - 2)) ** 2) / 4
    assert with_diagonal != pytest.approx(expected)


def test_distill_loss_is_zero_for_equal_vectors_and_positive_otherwise() -> None:
    a = torch.randn(4, 8)
    assert distill_loss(a, a.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(a, -a).item() > 1.0


def test_adore_loss_is_finite_and_nonzero_when_no_positive_is_retrieved() -> None:
    from cormorant.training.losses import ADORELoss

    class Fixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vector = torch.nn.Parameter(torch.tensor([[1.0, 0.0]]))

        def forward(self, features):  # noqa: ANN001, ANN202
            return {"sentence_embedding": self.vector}

    docs = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [-1.0, 0.0]], dtype=np.float32)
    loss = ADORELoss(Fixed(), docs, relevant={"q": [3]}, query_rows=["q"], top_k=2, metric_cut=2)
    value = loss([{}], torch.tensor([0]))
    assert torch.isfinite(value) and value.item() > 0
    assert loss.last_negatives == [[0, 1]]
    value.backward()  # the gradient reaches the query side; document vectors have none
    assert loss.doc_vectors.grad is None


def test_tas_loss_reads_the_teacher_by_index_as_it_would_per_row() -> None:
    """The index form (vectors once per query and document) gives the per-row form's value,
    pairwise term and in-batch term alike."""
    from cormorant.training.losses import TASBalancedLoss

    rng = np.random.default_rng(0)
    student = torch.tensor(rng.normal(size=(9, 4)), dtype=torch.float32)

    class Fixed(torch.nn.Module):  # each text column's embeddings, in turn
        def forward(self, features):  # noqa: ANN001, ANN202
            return {"sentence_embedding": student[features["column"]]}

    queries, docs = rng.normal(size=(2, 4)), rng.normal(size=(5, 4))
    rows = np.array([[0, 1, 3], [1, 2, 4], [0, 0, 2]])  # (query, positive, negative) indices
    margins = np.array([0.5, -1.0, 2.0])
    by_index = TASBalancedLoss(Fixed(), margins, queries, docs, rows)
    per_row = TASBalancedLoss.per_row(Fixed(), margins, queries[rows[:, 0]], docs[rows[:, 1]],
                                      docs[rows[:, 2]])
    features = [{"column": slice(0, 3)}, {"column": slice(3, 6)}, {"column": slice(6, 9)}]
    labels = torch.tensor([2, 0, 1])  # a batch's rows, in any order
    assert by_index(features, labels).item() == pytest.approx(per_row(features, labels).item())
    assert by_index.teacher_documents.shape == (5, 4)  # stored once, not once per row
