"""Interpolation and extrapolation splits (Zhan et al., CIKM 2022).

Following the paper's ReSTTest recipe for test sets too large to resample per query: the
training and test queries of a dataset are embedded with a dense-retrieval query encoder and
clustered together into K buckets (spherical k-means, seeded). Fold j trains on the training
queries outside bucket j; its *extrapolation* test queries are the test queries inside bucket j
(nothing similar was trained on) and its *interpolation* test queries are those outside it.
Each system is reported on both regimes, averaged over folds, and on the gap between them.

The split is written as a BEIR folder (corpus and queries linked to the source, new
``qrels/train-fold{j}.tsv``, ``interp-fold{j}.tsv`` and ``extrap-fold{j}.tsv``) so that
``cormorant eval --split extrap-fold0`` and ``cormorant train --split train-fold0`` reuse it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cormorant.data.files import atomic_write, find_file
from cormorant.data.trec import write_qrels
from cormorant.errors import CormorantError
from cormorant.types import Dataset, Qrels

log = logging.getLogger(__name__)


@dataclass
class Fold:
    """One fold: which queries train, and which test queries interpolate or extrapolate."""

    bucket: int
    train: list[str]
    interpolation: list[str]
    extrapolation: list[str]
    # Mean over test queries of the cosine similarity to their nearest training query.
    nearest_train_similarity: dict[str, float] = field(default_factory=dict)


@dataclass
class InterpolationSplit:
    """The folds of one dataset, with the settings that produced them."""

    dataset: str
    buckets: int
    seed: int
    encoder: str
    folds: list[Fold]
    bucket_of: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "buckets": self.buckets, "seed": self.seed,
                "encoder": self.encoder, "bucket_of": self.bucket_of,
                "folds": [vars(f) for f in self.folds]}


def cluster_queries(vectors: np.ndarray, buckets: int, seed: int) -> np.ndarray:
    """Bucket id per row: spherical k-means (FAISS), deterministic for a seed."""
    import faiss

    if buckets < 2:
        raise CormorantError(f"interpolation/extrapolation needs at least 2 buckets, got {buckets}")
    if len(vectors) < buckets:
        raise CormorantError(f"{len(vectors)} queries cannot fill {buckets} buckets")
    kmeans = faiss.Kmeans(vectors.shape[1], buckets, niter=50, seed=seed, spherical=True,
                          verbose=False)
    kmeans.train(np.ascontiguousarray(vectors, dtype=np.float32))
    _, assignment = kmeans.index.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
    return assignment[:, 0]


def make_split(dataset: Dataset, encoder: Any, train: str = "train", test: str = "test",
               buckets: int = 5, seed: int = 0) -> InterpolationSplit:
    """Cluster ``train`` and ``test`` queries together and derive one fold per bucket."""
    train_queries = dataset.split(train).queries
    test_queries = dataset.split(test).queries
    overlap = set(train_queries) & set(test_queries)
    if overlap:
        raise CormorantError(f"{len(overlap)} queries are in both {train} and {test}")
    ids = list(train_queries) + list(test_queries)
    texts = [train_queries.get(q) or test_queries[q] for q in ids]
    vectors = np.asarray(encoder.encode_queries(texts), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    assignment = cluster_queries(vectors, buckets, seed)
    bucket_of = {q: int(b) for q, b in zip(ids, assignment, strict=True)}
    row = {q: i for i, q in enumerate(ids)}
    folds = []
    for j in range(buckets):
        fold_train = [q for q in train_queries if bucket_of[q] != j]
        extrap = [q for q in test_queries if bucket_of[q] == j]
        interp = [q for q in test_queries if bucket_of[q] != j]
        if not extrap or not interp or not fold_train:
            log.warning("bucket %d leaves a side empty; fold skipped", j)
            continue
        train_vectors = vectors[[row[q] for q in fold_train]]

        def nearest(queries: list[str], train_vectors: np.ndarray = train_vectors) -> float:
            sims = vectors[[row[q] for q in queries]] @ train_vectors.T
            return float(sims.max(axis=1).mean())

        folds.append(Fold(j, fold_train, interp, extrap,
                          {"interpolation": nearest(interp), "extrapolation": nearest(extrap)}))
    if not folds:
        raise CormorantError("no bucket produced a usable fold; try fewer buckets")
    name = getattr(encoder, "name", type(encoder).__name__)
    return InterpolationSplit(dataset.name, buckets, seed, str(name), folds, bucket_of)


def write_split(split: InterpolationSplit, dataset: Dataset, train_qrels: Qrels,
                test_qrels: Qrels, out: Path) -> Path:
    """Write the folds as a BEIR folder beside links to the source corpus and queries."""
    if dataset.path is None:
        raise CormorantError("only datasets read from a folder can be re-split to disk")
    out.mkdir(parents=True, exist_ok=True)
    for stem in ("corpus.jsonl", "queries.jsonl"):
        source = find_file(dataset.path, stem)
        if source is None:
            raise CormorantError(f"{dataset.path} has no {stem} to link")
        link = out / source.name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(source.resolve(), link)
    for fold in split.folds:
        j = fold.bucket
        write_qrels({q: train_qrels[q] for q in fold.train}, out / "qrels" / f"train-fold{j}.tsv")
        write_qrels({q: test_qrels[q] for q in fold.interpolation},
                    out / "qrels" / f"interp-fold{j}.tsv")
        write_qrels({q: test_qrels[q] for q in fold.extrapolation},
                    out / "qrels" / f"extrap-fold{j}.tsv")
    with atomic_write(out / "split.json") as handle:
        json.dump(split.to_json(), handle, indent=1)
    return out


def regime_scores(split: InterpolationSplit,
                  per_query: dict[str, dict[str, float]], measure: str) -> dict[str, float]:
    """A system's ``measure`` on interpolation and extrapolation queries, averaged over folds.

    ``per_query`` holds the system's values on the whole test split; a zero-shot system's
    value for a query does not depend on the fold's training queries, so each fold only selects
    its queries. (A trained system is trained per fold on ``train-fold{j}`` and evaluated on that
    fold's queries alone.)
    """
    interp = [np.mean([per_query[q][measure] for q in f.interpolation]) for f in split.folds]
    extrap = [np.mean([per_query[q][measure] for q in f.extrapolation]) for f in split.folds]
    return {"interpolation": float(np.mean(interp)), "extrapolation": float(np.mean(extrap)),
            "gap": float(np.mean(interp) - np.mean(extrap))}
