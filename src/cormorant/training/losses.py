"""Training losses for the strategies, as sentence-transformers loss modules.

Each loss takes the model and is called by the sentence-transformers Trainer with the batch's
tokenised text columns and a ``label`` column. The custom losses here receive the dataset
*row* index as the label and look up what the row stands for (query, documents, teacher
margins) in arrays built before training, so nothing but text goes through the collator.

Scores are ``scale`` times the cosine similarity: the default encoder (all-MiniLM-L6-v2) is a
cosine model, and unscaled cosines in [-1, 1] give pairwise softplus and Margin-MSE losses almost
no gradient, the same reason sentence-transformers' MultipleNegativesRankingLoss scales by 20.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

DEFAULT_SCALE = 20.0


def _embed(model: nn.Module, features: dict[str, Tensor]) -> Tensor:
    return model(features)["sentence_embedding"]


def _gather(tensor: Tensor, with_grad: bool) -> Tensor:
    """All ranks' rows (in-batch negatives across GPUs under torchrun); the tensor itself
    on one process."""
    from sentence_transformers.util import all_gather, all_gather_with_grad, get_world_size

    if get_world_size() == 1:
        return tensor
    return all_gather_with_grad(tensor) if with_grad else all_gather(tensor)


def star_pair_loss(scores: Tensor, positive: Tensor, valid: Tensor) -> Tensor:
    """STAR's pooled pairwise loss: mean of softplus(s(q, d-) - s(q, d+)) over valid pairs.

    Args:
        scores: [B, M] query-by-document scores (in-batch positives and hard negatives).
        positive: [B] each query's own positive score.
        valid: [B, M] True where the document may serve as a negative for the query.

    Example:
        >>> scores = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
        >>> valid = torch.tensor([[False, True], [True, False]])
        >>> round(star_pair_loss(scores, torch.tensor([2.0, 3.0]), valid).item(), 4)
        0.1809
    """
    pairs = F.softplus(scores - positive[:, None])
    count = valid.sum().clamp(min=1)
    return (pairs * valid).sum() / count


class STARLoss(nn.Module):
    """STAR (Zhan et al., SIGIR'21): static hard negatives plus random negatives taken from the
    batch's documents, one pooled pairwise loss.

    Every query is scored against *all* B positives and *all* B hard negatives of the batch
    (their embeddings computed once and reused); a pair is skipped when its document is judged
    relevant to the query, which includes the query's own positive.

    Example:
        >>> loss = STARLoss(model, rows=[(0, 10, 99)], relevant={0: {10}})  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, rows: Sequence[tuple[int, int, int]],
                 relevant: dict[int, set[int]], scale: float = DEFAULT_SCALE) -> None:
        super().__init__()
        self.model, self.scale = model, scale
        self.rows = torch.as_tensor(np.asarray(rows, dtype=np.int64).reshape(-1, 3))
        self.relevant = relevant

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        query, positive, negative = [_embed(self.model, f) for f in sentence_features]
        row = self.rows[labels.long().cpu()]
        docs = _gather(torch.cat([positive, negative]), with_grad=True)
        doc_ids = _gather(torch.cat([row[:, 1], row[:, 2]]).to(query.device), with_grad=False)
        scores = self.scale * query @ docs.T
        own = self.scale * (query * positive).sum(-1)
        valid = self.valid_pairs(row[:, 0].tolist(), doc_ids.tolist()).to(query.device)
        return star_pair_loss(scores, own, valid)

    def valid_pairs(self, queries: list[int], docs: list[int]) -> Tensor:
        """[B, M] mask: document j may be a negative of query i (not judged relevant to it)."""
        return torch.tensor([[d not in self.relevant.get(q, ()) for d in docs] for q in queries])


def adore_weights(ranks: Tensor, relevant: Tensor, metric_cut: int | None) -> Tensor:
    """LambdaLoss-style weights |1/r_i - 1/r_j| for every (relevant i, non-relevant j) pair.

    ``ranks`` are 1-based; reciprocal ranks beyond ``metric_cut`` count as 0. Returns a
    [n_relevant, n_nonrelevant] matrix.

    Example:
        >>> adore_weights(torch.tensor([1, 2, 3]), torch.tensor([False, True, False]), None)
        tensor([[0.5000, 0.1667]])
    """
    inverse = 1.0 / ranks.float()
    if metric_cut is not None:
        inverse = torch.where(ranks <= metric_cut, inverse, torch.zeros_like(inverse))
    return (inverse[relevant][:, None] - inverse[~relevant][None, :]).abs()


class ADORELoss(nn.Module):
    """ADORE (Zhan et al., SIGIR'21): only the query encoder trains, against a fixed document
    index; hard negatives are retrieved at every step with the *current* query vectors.

    Per query: search the top ``top_k`` with the detached query vector, append positives not
    retrieved after rank k, re-score with gradient on the query side only, and sum
    w_ij * softplus(s_j - s_i) over (relevant i, non-relevant j), divided by the number of
    pairs (not by the sum of weights). The batch loss is the mean over queries.

    Example:
        >>> loss = ADORELoss(model, doc_vectors, relevant={0: [5]}, query_rows=[0])  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, doc_vectors: np.ndarray, relevant: dict[int, list[int]],
                 query_rows: Sequence[int], top_k: int = 200, metric_cut: int | None = 200,
                 scale: float = DEFAULT_SCALE) -> None:
        super().__init__()
        import faiss

        self.model, self.scale = model, scale
        self.top_k, self.metric_cut = min(top_k, len(doc_vectors)), metric_cut
        vectors = np.array(doc_vectors, dtype=np.float32, order="C")  # a private copy
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)
        self.doc_vectors = torch.from_numpy(vectors)  # read-only: never gets a gradient
        self.relevant = relevant
        self.query_rows = list(query_rows)
        self.last_negatives: list[list[int]] = []

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        (features,) = list(sentence_features)
        queries = _embed(self.model, features)
        _, found = self.index.search(queries.detach().float().cpu().numpy(), self.top_k)
        losses, self.last_negatives = [], []
        for vector, row, ranked in zip(queries, labels.long().tolist(), found, strict=True):
            losses.append(self._query_loss(vector, self.relevant[self.query_rows[row]], ranked))
        return torch.stack(losses).mean()

    def _query_loss(self, query: Tensor, relevant: list[int], ranked: np.ndarray) -> Tensor:
        docs = [int(d) for d in ranked if d >= 0]
        docs += [d for d in relevant if d not in set(docs)]  # missed positives go after rank k
        is_relevant = torch.tensor([d in relevant for d in docs])
        self.last_negatives.append([d for d in docs[:self.top_k] if d not in relevant])
        if is_relevant.all() or not is_relevant.any():
            return query.sum() * 0.0
        vectors = self.doc_vectors[torch.as_tensor(docs)].to(query.device, query.dtype)
        scores = self.scale * vectors @ query
        ranks = torch.arange(1, len(docs) + 1)
        weights = adore_weights(ranks, is_relevant, self.metric_cut).to(query.device)
        mask = is_relevant.to(query.device)
        pairs = F.softplus(scores[~mask][None, :] - scores[mask][:, None])
        return (weights * pairs).sum() / weights.numel()


def margin_mse(student_margin: Tensor, teacher_margin: Tensor) -> Tensor:
    """Margin-MSE (Hofstätter et al., 2020): mean squared difference of score margins.

    Example:
        >>> margin_mse(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0])).item()
        2.0
    """
    return ((student_margin - teacher_margin) ** 2).mean()


class MarginMSELoss(nn.Module):
    """Margin-MSE over (query, positive, negative) rows against the teacher's margin of each
    row, looked up by the row index the Trainer passes as label; student scores are ``scale``
    times the cosine, as in every loss here.

    Example:
        >>> loss = MarginMSELoss(model, np.array([3.5, -0.2]))  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, margins: np.ndarray, scale: float = DEFAULT_SCALE) -> None:
        super().__init__()
        self.model, self.scale = model, scale
        self.margins = torch.as_tensor(margins, dtype=torch.float32)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        query, positive, negative = [_embed(self.model, f) for f in sentence_features]
        student = self.scale * ((query * positive).sum(-1) - (query * negative).sum(-1))
        return margin_mse(student, self.margins[labels.long().cpu()].to(query.device))


class TASBalancedLoss(nn.Module):
    """TAS-Balanced's dual supervision: pairwise Margin-MSE against the teacher's margin plus
    0.75 times an in-batch Margin-MSE against a second, cheaper teacher.

    The in-batch term compares each query's positive with every *other* query's positive and
    negative (j != i; the diagonal is the pairwise term's), each with weight 1/2. The in-batch
    teacher's vectors are precomputed, so its scores cost one matrix product. They are stored
    once per query and document, with each row's (query, positive, negative) indices in
    ``rows``, rather than three vectors per row. :meth:`per_row` takes them per row.

    Example:
        >>> loss = TASBalancedLoss(model, margins, query_vectors, doc_vectors, rows)  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, margins: np.ndarray, query_vectors: np.ndarray,
                 doc_vectors: np.ndarray, rows: np.ndarray, inbatch_weight: float = 0.75,
                 scale: float = DEFAULT_SCALE, teacher_scale: float = DEFAULT_SCALE) -> None:
        super().__init__()
        self.model, self.scale, self.inbatch_weight = model, scale, inbatch_weight
        self.margins = torch.as_tensor(margins, dtype=torch.float32)
        self.teacher_queries = torch.as_tensor(query_vectors, dtype=torch.float32)
        self.teacher_documents = torch.as_tensor(doc_vectors, dtype=torch.float32)
        self.teacher_rows = torch.as_tensor(rows, dtype=torch.long)
        self.teacher_scale = teacher_scale

    @classmethod
    def per_row(cls, model: nn.Module, margins: np.ndarray, teacher_queries: np.ndarray,
                teacher_positives: np.ndarray, teacher_negatives: np.ndarray,
                **options: float) -> TASBalancedLoss:
        """The in-batch teacher's query, positive and negative vector of each row."""
        n = len(teacher_queries)
        rows = np.stack([np.arange(n), np.arange(n), n + np.arange(n)], axis=1)
        return cls(model, margins, teacher_queries,
                   np.concatenate([teacher_positives, teacher_negatives]), rows, **options)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        query, positive, negative = [_embed(self.model, f) for f in sentence_features]
        rows = labels.long().cpu()
        student_margin = self.scale * ((query * positive).sum(-1) - (query * negative).sum(-1))
        pair = margin_mse(student_margin, self.margins[rows].to(query.device))
        if self.inbatch_weight == 0:
            return pair
        which = self.teacher_rows[rows]
        tq = self.teacher_queries[which[:, 0]].to(query.device)
        tp, tn = (self.teacher_documents[which[:, i]].to(query.device) for i in (1, 2))
        student = (self.scale * query @ positive.T, self.scale * query @ negative.T)
        teacher = (self.teacher_scale * tq @ tp.T, self.teacher_scale * tq @ tn.T)
        return pair + self.inbatch_weight * inbatch_margin_mse(student, teacher)


def inbatch_margin_mse(student: tuple[Tensor, Tensor], teacher: tuple[Tensor, Tensor]) -> Tensor:
    """Mean over i and j != i of 1/2 [MarginMSE(p_i+ vs p_j+) + MarginMSE(p_i+ vs p_j-)].

    ``student`` and ``teacher`` are each (query x positives, query x negatives) score matrices.
    """
    (sp, sn), (tp, tn) = student, teacher
    own_s, own_t = sp.diagonal()[:, None], tp.diagonal()[:, None]
    versus_pos = ((own_s - sp) - (own_t - tp)) ** 2
    versus_neg = ((own_s - sn) - (own_t - tn)) ** 2
    off_diagonal = ~torch.eye(sp.shape[0], dtype=torch.bool, device=sp.device)
    count = off_diagonal.sum().clamp(min=1)
    return 0.5 * ((versus_pos + versus_neg) * off_diagonal).sum() / count


class QueryDistillLoss(nn.Module):
    """Query-tower distillation (ScalingNote stage 2): MSE plus (1 - cosine) between the
    student's query vector and the frozen teacher's, precomputed per row.

    Example:
        >>> loss = QueryDistillLoss(student, teacher_vectors)  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, teacher_vectors: np.ndarray) -> None:
        super().__init__()
        self.model = model
        self.teacher = torch.as_tensor(np.asarray(teacher_vectors), dtype=torch.float32)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        (features,) = list(sentence_features)
        student = _embed(self.model, features)
        target = self.teacher[labels.long().cpu()].to(student.device)
        return distill_loss(student, target)


def distill_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """MSE(e_s, e_t) + mean(1 - cos(e_s, e_t)); zero when the vectors are equal.

    Example:
        >>> round(distill_loss(torch.ones(2, 3), torch.ones(2, 3)).item(), 6)
        0.0
    """
    return F.mse_loss(student, teacher) + (1 - F.cosine_similarity(student, teacher)).mean()
