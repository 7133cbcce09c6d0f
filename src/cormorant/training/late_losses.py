"""MaxSim and the two losses of ``cormorant train --kind late-interaction`` (PyLate's).

- :func:`maxsim`: s(q, d) = sum over the query's positions of the largest dot product with
  the document's kept positions (vectors already L2-normalised), what ``chamfer`` computes at
  search time;
- :func:`contrastive_loss`: every query against every document of the batch; a row's
  documents are its positive and its mined negatives, so with N documents a row the positive
  of query i sits at column i·N; cross-entropy at temperature 1, mean over queries (PyLate's
  ``Contrastive``);
- :func:`distillation_loss`: each query's own N candidates scored by the student and the
  teacher, both min-max normalised per query, then KL(teacher‖student) between their
  softmaxes, averaged over queries (PyLate's ``Distillation``: ``KLDivLoss(batchmean,
  log_target=True)``). N must be at least 2: min-max over one score is undefined.
"""

from __future__ import annotations

from typing import Any

from cormorant.errors import CormorantError


def maxsim(queries: Any, documents: Any, kept: Any) -> Any:
    """Scores of every query against every document: (queries x documents).

    ``queries`` is (queries x positions x dim), ``documents`` (documents x positions x dim),
    ``kept`` (documents x positions, bool) the document positions that count (padding and
    punctuation do not).

    Example:
        >>> import torch
        >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        >>> d = torch.tensor([[[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]]])
        >>> maxsim(q, d, torch.tensor([[True, True, False]])).tolist()
        [[1.7999999523162842]]
    """
    import torch

    dots = torch.einsum("aqd,bpd->abqp", queries, documents)
    dots = dots.masked_fill(~kept[None, :, None, :], float("-inf"))
    return dots.amax(dim=-1).sum(dim=-1)


def contrastive_loss(scores: Any, per_row: int) -> Any:
    """Cross-entropy of each query's positive among all the batch's documents, which are laid
    out ``per_row`` to a query with the positive first (target i·``per_row``).

    Example:
        >>> import torch
        >>> round(float(contrastive_loss(torch.zeros(2, 4), per_row=2)), 4)  # ln 4
        1.3863
    """
    import torch

    targets = torch.arange(scores.shape[0], device=scores.device) * per_row
    return torch.nn.functional.cross_entropy(scores, targets)


def min_max(scores: Any) -> Any:
    """Each row scaled to [0, 1] (a constant row becomes 0; the epsilon keeps it finite)."""
    low = scores.amin(dim=1, keepdim=True)
    high = scores.amax(dim=1, keepdim=True)
    return (scores - low) / (high - low + 1e-8)


def distillation_loss(student: Any, teacher: Any) -> Any:
    """KL(teacher‖student) over each query's candidates, both min-max normalised per query.

    Example:
        >>> import torch
        >>> float(distillation_loss(torch.tensor([[3.0, 1.0]]), torch.tensor([[5.0, 2.0]])))
        0.0
    """
    import torch

    if student.shape[1] < 2:
        raise CormorantError("distillation needs at least 2 candidates per query (min-max"
                             " normalisation of one score is undefined)")
    log_student = torch.log_softmax(min_max(student), dim=1)
    log_teacher = torch.log_softmax(min_max(teacher), dim=1)
    return torch.nn.functional.kl_div(log_student, log_teacher, reduction="batchmean",
                                      log_target=True)
