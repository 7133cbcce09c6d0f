"""TAS-Balanced batch composition (Hofstätter et al., SIGIR'21).

Training queries are clustered once (spherical k-means on their embeddings, FAISS); every batch
comes from one cluster (topic-aware sampling). For each query, its (positive, negative) pairs are
split into 10 equal-width bins of teacher margin and one pair is drawn from a bin picked
uniformly among the non-empty ones (balanced margins). Batches are drawn with replacement of
clusters, so an "epoch" is just a count of batches.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cormorant.errors import CormorantError

BINS = 10


def cluster_queries(vectors: np.ndarray, clusters: int, seed: int = 0) -> np.ndarray:
    """Cluster id per query: FAISS k-means with inner-product (spherical) centroids."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    clusters = max(1, min(clusters, len(vectors)))
    if clusters == 1:
        return np.zeros(len(vectors), dtype=np.int64)
    kmeans = faiss.Kmeans(vectors.shape[1], clusters, niter=20, seed=seed, spherical=True,
                          min_points_per_centroid=1, verbose=False)
    kmeans.train(vectors)
    _, assigned = kmeans.index.search(vectors, 1)
    return assigned[:, 0].astype(np.int64)


def margin_bins(margins: Sequence[float], bins: int = BINS) -> list[int]:
    """Bin (0..bins-1) of each margin: equal-width bins over [min, max], the maximum in the last.

    Example:
        >>> margin_bins([0.0, 0.5, 1.0], bins=10)
        [0, 5, 9]
    """
    values = np.asarray(margins, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if high == low:
        return [0] * len(values)
    index = np.floor((values - low) / (high - low) * bins).astype(int)
    return np.minimum(index, bins - 1).tolist()


class TASBalancedBatchSampler:
    """Yields batches of dataset rows, one (positive, negative) pair per query, queries from one
    cluster (topped up from another cluster only when the first runs out).

    Args:
        row_query: the query (index) of each dataset row.
        row_margin: the teacher margin T(q, p+) - T(q, p-) of each row.
        query_cluster: cluster id per query index.
        batch_size: queries per batch.
        seed: seeds the draw.

    Example:
        >>> sampler = TASBalancedBatchSampler([0, 0, 1, 1], [1.0, 3.0, 2.0, 4.0], [0, 0],
        ...                                   batch_size=2)
        >>> first = sorted(next(iter(sampler)))  # one pair of query 0, one of query 1
        >>> first[0] in (0, 1) and first[1] in (2, 3)
        True
    """

    def __init__(self, row_query: Sequence[int], row_margin: Sequence[float],
                 query_cluster: Sequence[int], batch_size: int, seed: int = 0,
                 batches: int | None = None) -> None:
        self.batch_size, self.seed = batch_size, seed
        rows_of: dict[int, list[int]] = {}
        for row, query in enumerate(row_query):
            rows_of.setdefault(int(query), []).append(row)
        # Queries with fewer than two pairs have no margin spread to balance (as the original).
        self.bins: dict[int, list[list[int]]] = {}
        for query, rows in rows_of.items():
            if len(rows) < 2:
                continue
            binned: list[list[int]] = [[] for _ in range(BINS)]
            for row, b in zip(rows, margin_bins([row_margin[r] for r in rows]), strict=True):
                binned[b].append(row)
            self.bins[query] = [b for b in binned if b]
        if not self.bins:
            raise CormorantError("TAS-Balanced needs queries with at least two (positive,"
                                 " negative) pairs; mine more negatives")
        self.clusters: dict[int, list[int]] = {}
        for query in sorted(self.bins):
            self.clusters.setdefault(int(query_cluster[query]), []).append(query)
        self.batches = batches or max(1, len(self.bins) // batch_size)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 1_000_003)  # the formula of epoch 0 before the up-front draw
        for _ in range(self.batches):
            yield [self._pair(rng, q) for q in self._queries(rng)]

    def _queries(self, rng: random.Random) -> list[int]:
        """Queries of one uniformly chosen cluster, topped up from other clusters if small."""
        order = list(self.clusters)
        first = rng.choice(order)
        rest = [c for c in order if c != first]
        rng.shuffle(rest)
        chosen: list[int] = []
        for cluster in [first, *rest]:
            members = self.clusters[cluster]
            take = min(self.batch_size - len(chosen), len(members))
            chosen += rng.sample(members, take)
            if len(chosen) == self.batch_size:
                break
        return chosen

    def _pair(self, rng: random.Random, query: int) -> int:
        """A bin uniformly among the query's non-empty bins, then a row uniformly within it."""
        return rng.choice(rng.choice(self.bins[query]))


def draw_batches(row_query: Sequence[int], row_margin: Sequence[float],
                 query_cluster: Sequence[int], batch_size: int, seed: int,
                 batches: int) -> list[list[int]]:
    """Every batch of a training run, drawn before it starts: lists of candidate-pair indices.

    Drawing first lets the Trainer's dataset hold only the pairs drawn: NFCorpus has 763k
    candidate (positive, negative) pairs, and an epoch draws 68 x 32 of them.

    Example:
        >>> drawn = draw_batches([0, 0, 1, 1], [1.0, 3.0, 2.0, 4.0], [0, 0], 2, seed=0, batches=3)
        >>> len(drawn), all(len(batch) == 2 for batch in drawn)
        (3, True)
    """
    return list(TASBalancedBatchSampler(row_query, row_margin, query_cluster, batch_size,
                                        seed=seed, batches=batches))


@dataclass
class ReplayBatches:
    """What the Trainer's ``batch_sampler`` argument calls: it hands the DataLoader the batches
    drawn in advance (:func:`draw_batches`, renumbered to dataset rows); a list of index lists
    is a valid batch sampler. A plain object, not a closure, so the training arguments can be
    pickled into checkpoints; it holds only the drawn batches.

    Example:
        >>> ReplayBatches([[0, 1], [2, 0]])(dataset=None, batch_size=2)
        [[0, 1], [2, 0]]
    """

    batches: list[list[int]]

    def __call__(self, dataset: Any, batch_size: int, **_: Any) -> list[list[int]]:
        return self.batches
