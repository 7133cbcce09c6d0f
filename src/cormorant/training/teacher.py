"""Teachers for distillation: anything that scores (query, document) pairs.

A teacher is a cross-encoder folder, a bi-encoder folder, or a scores file (JSONL with
query_id, doc_id, score, or TSV ``qid<TAB>docid<TAB>score``). Scores are computed once per
(teacher, pairs) and cached on disk, because a cross-encoder pass over the training pairs is
the slowest part of TAS-Balanced on a CPU.

Example:
    >>> teacher = load_teacher("models/scifact-ce")  # doctest: +SKIP
    >>> scores = teacher.score_pairs(data, [("1", "31715818"), ("1", "4983")])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from cormorant import cache
from cormorant.data.files import iter_jsonl
from cormorant.errors import DataError
from cormorant.training.data import TrainingSet
from cormorant.training.losses import DEFAULT_SCALE

log = logging.getLogger(__name__)

Pair = tuple[str, str]


class Teacher(Protocol):
    fingerprint: str

    def score_pairs(self, data: TrainingSet, pairs: list[Pair]) -> np.ndarray: ...


class CrossEncoderTeacher:
    """Raw logits of a cross-encoder (the default kind of teacher for TAS-Balanced)."""

    def __init__(self, path: str, max_length: int | None = None) -> None:
        from cormorant.retrieval.rerank import CrossEncoderScorer

        self.scorer = CrossEncoderScorer(path, max_length=max_length, show_progress=True)
        self.fingerprint = f"ce-{self.scorer.fingerprint}"

    def score_pairs(self, data: TrainingSet, pairs: list[Pair]) -> np.ndarray:
        return self.scorer.score([(data.queries[q], data.texts[d]) for q, d in pairs])


class BiEncoderTeacher:
    """``scale`` times the bi-encoder's similarity; corpus embeddings come from the shared cache."""

    def __init__(self, path: str | None, scale: float = DEFAULT_SCALE) -> None:
        from cormorant.retrieval.encoders import SentenceTransformerEncoder

        self.encoder = SentenceTransformerEncoder(path)
        self.scale = scale
        self.fingerprint = f"bi-{self.encoder.fingerprint}-{scale}"

    def vectors(self, data: TrainingSet) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(query id -> vector, doc id -> vector) for every training query and corpus document."""
        from cormorant.index.embeddings import corpus_embeddings

        docs = corpus_embeddings(self.encoder, data.corpus)
        doc_vectors = {d.doc_id: docs[i] for i, d in enumerate(data.corpus)}
        qids = list(data.queries)
        encoded = self.encoder.encode_queries([data.queries[q] for q in qids])
        return dict(zip(qids, encoded, strict=True)), doc_vectors

    def score_pairs(self, data: TrainingSet, pairs: list[Pair]) -> np.ndarray:
        queries, docs = self.vectors(data)
        return np.array([self.scale * float(queries[q] @ docs[d]) for q, d in pairs],
                        dtype=np.float32)


class ScoresFileTeacher:
    """Precomputed teacher scores; every requested pair must be in the file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.scores = read_scores(self.path)
        self.fingerprint = "file-" + hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]

    def score_pairs(self, data: TrainingSet, pairs: list[Pair]) -> np.ndarray:
        missing = [p for p in pairs if p not in self.scores]
        if missing:
            raise DataError(f"teacher scores file {self.path} has no score for {len(missing)}"
                            f" training pairs, e.g. query {missing[0][0]}, doc {missing[0][1]}")
        return np.array([self.scores[p] for p in pairs], dtype=np.float32)


def read_scores(path: Path) -> dict[Pair, float]:
    """Scores from JSONL (query_id, doc_id, score) or TSV (qid, docid, score)."""
    if not path.is_file():
        raise DataError(f"teacher scores file not found: {path}")
    scores: dict[Pair, float] = {}
    try:
        if path.suffix in (".jsonl", ".json", ".gz"):
            for r in iter_jsonl(path):
                scores[(str(r["query_id"]), str(r["doc_id"]))] = float(r["score"])
        else:
            for line in path.read_text().splitlines():
                if line.strip():
                    qid, did, score = line.split("\t")[:3]
                    scores[(qid, did)] = float(score)
    except (KeyError, ValueError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read teacher scores {path}: {exc}") from None
    return scores


def load_teacher(spec: str) -> Teacher:
    """A teacher from a path: a scores file, a cross-encoder folder or a bi-encoder folder."""
    path = Path(spec)
    if path.is_file():
        return ScoresFileTeacher(spec)
    if is_cross_encoder(path):
        return CrossEncoderTeacher(spec)
    return BiEncoderTeacher(spec)


def is_cross_encoder(path: Path) -> bool:
    """What ``train --kind cross-encoder`` writes: a sentence-transformers CrossEncoder folder
    (pooled head) or a ``*ForSequenceClassification`` checkpoint."""
    st_config = path / "config_sentence_transformers.json"
    if st_config.is_file() and json.loads(st_config.read_text()).get("model_type") == "CrossEncoder":
        return True
    config = path / "config.json"
    if not config.is_file():
        return False
    architectures = json.loads(config.read_text()).get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def cached_scores(teacher: Teacher, data: TrainingSet, pairs: list[Pair]) -> np.ndarray:
    """``teacher``'s scores for ``pairs``, computed once and kept in the cache (``teacher``)."""
    # The pairs are hashed as a stream: TAS-Balanced scores hundreds of thousands of them.
    digest = hashlib.sha256()
    for q, d in pairs:
        digest.update(f"{q}\0{data.queries[q]}\0{d}\1".encode())
    name = cache.key({"teacher": teacher.fingerprint, "corpus": data.corpus.fingerprint,
                      "pairs": digest.hexdigest()}) + ".npy"
    path = cache.lookup("teacher", name)
    if path is not None:
        try:
            scores = np.load(path)
            if scores.shape == (len(pairs),):
                log.info("teacher scores from cache %s", path)
                return scores
        except (ValueError, OSError):
            log.warning("ignoring unreadable cache entry %s", path)
    log.info("scoring %d pairs with the teacher", len(pairs))
    scores = np.asarray(teacher.score_pairs(data, pairs), dtype=np.float32)
    with cache.write("teacher", name) as tmp:
        np.save(tmp, scores)
    return scores
