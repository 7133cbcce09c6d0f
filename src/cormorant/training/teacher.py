"""Teachers for distillation: anything that scores (query, document) pairs.

A teacher is a cross-encoder folder, a bi-encoder folder, a scores file (JSONL with
query_id, doc_id, score, or TSV ``qid<TAB>docid<TAB>score``), or a Cormorant pipeline
(``chamfer``, ``rrf(bm25, dense)``, ``bm25 >> rerank(model=DIR)``, ...) that scores each
query's candidates. Scores are computed once per (teacher, pairs) and cached on disk, because
a cross-encoder pass over the training pairs is the slowest part of TAS-Balanced on a CPU.

Example:
    >>> teacher = load_teacher("models/scifact-ce")  # doctest: +SKIP
    >>> scores = teacher.score_pairs(data, [("1", "31715818"), ("1", "4983")])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cormorant import cache
from cormorant.data.files import iter_jsonl
from cormorant.errors import CormorantError, DataError
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


class PipelineTeacher:
    """A Cormorant pipeline as teacher: each query's candidates are handed to the pipeline as
    the ranking so far (``Flow.with_run``), so every retriever in it re-scores exactly those
    documents and a fusion fuses their scores; a pair's score is its score in the pipeline's
    final ranking. A pair the pipeline leaves out of that ranking (a cut-off ``% k`` shorter
    than the candidate list) is scored NaN, never 0: :func:`teacher_scores` leaves it out.

    Built over the training corpus on first use; the fingerprint is the pipeline's string form
    plus every stage's identity (settings and model fingerprints), so the cache notices a
    changed model.

    Example:
        >>> teacher = PipelineTeacher("rrf(bm25, chamfer)")
        >>> teacher.spec
        'rrf(bm25, chamfer)'
    """

    def __init__(self, spec: str) -> None:
        from cormorant.pipeline_syntax import parse
        from cormorant.retrieval.assemble import identity, validate

        validate(spec)
        self.spec = str(parse(spec))
        self.fingerprint = "pipe-" + cache.key({"pipeline": self.spec, "stages": identity(spec)})
        self.pipeline: Any = None

    def score_pairs(self, data: TrainingSet, pairs: list[Pair]) -> np.ndarray:
        from cormorant.pipeline import Flow
        from cormorant.retrieval.assemble import build_pipeline
        from cormorant.types import Run

        if self.pipeline is None:
            self.pipeline = build_pipeline(self.spec, data.corpus)
        candidates = Run()
        for q, d in pairs:
            candidates.setdefault(q, {})[d] = 0.0
        flow = Flow.start({q: data.queries[q] for q in candidates}).with_run(candidates)
        run = self.pipeline.transform(flow).result(self.pipeline)
        return np.array([run.get(q, {}).get(d, np.nan) for q, d in pairs], dtype=np.float32)


def load_teacher(spec: str) -> Teacher:
    """A teacher from a path (a scores file, a cross-encoder folder or a bi-encoder folder) or,
    when no such path exists, a pipeline string.

    Raises:
        CormorantError: ``spec`` is neither an existing path nor a valid pipeline.
    """
    path = teacher_path(spec)
    if path is None:
        return PipelineTeacher(spec)
    if path.is_file():
        return ScoresFileTeacher(spec)
    return CrossEncoderTeacher(spec) if is_cross_encoder(path) else BiEncoderTeacher(spec)


def teacher_path(spec: str) -> Path | None:
    """The file or model folder ``spec`` names, or None when it is a valid pipeline instead;
    cheap (nothing is loaded), so a bad ``--teacher`` fails before any work.

    Raises:
        CormorantError: ``spec`` is neither an existing path nor a valid pipeline.

    Example:
        >>> teacher_path("rrf(bm25, chamfer)") is None
        True
    """
    from cormorant.retrieval.assemble import validate
    from cormorant.retrieval.encoders import resolve_model

    path = Path(resolve_model(spec))  # the default model's name names its folder
    if path.exists():
        return path
    try:
        validate(spec)
    except CormorantError as exc:
        raise CormorantError(f"--teacher {spec!r} is neither an existing file or model folder"
                             f" nor a pipeline: {exc}") from None
    return None


def is_pipeline(teacher: Teacher) -> bool:
    """Whether ``teacher``'s scores are a pipeline's, on a scale of their own."""
    return isinstance(teacher, PipelineTeacher)


def scale_per_query(pairs: list[Pair], scores: np.ndarray, norm: str, factor: float
                    ) -> np.ndarray:
    """Each query's scores normalised over its own pairs (``cormorant.fusion.normalize``:
    ``minmax``, ``zscore``, ...) and multiplied by ``factor``; NaN (unscored) stays NaN.

    Margin-MSE copies margins, so teachers on different scales (RRF's ~1/60, Chamfer's sums
    over query tokens, logits) are mapped to one the student can reach.

    Example:
        >>> pairs = [("q", "a"), ("q", "b"), ("q", "c"), ("r", "a")]
        >>> scale_per_query(pairs, np.array([0.03, 0.02, np.nan, 5.0]), "minmax", 4.0).tolist()
        [4.0, 0.0, nan, 4.0]
    """
    from cormorant.fusion import normalize

    if norm == "none":
        return np.asarray(scores, dtype=np.float32) * factor
    by_query: dict[str, dict[int, float]] = {}
    for i, ((q, _), s) in enumerate(zip(pairs, scores, strict=True)):
        if np.isfinite(s):
            by_query.setdefault(q, {})[i] = float(s)
    out = np.full(len(pairs), np.nan, dtype=np.float32)
    for rows in by_query.values():
        for i, value in normalize({str(i): s for i, s in rows.items()}, norm).items():
            out[int(i)] = value * factor
    return out


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


def teacher_scores(spec: str, data: TrainingSet, pairs: list[Pair], norm: str = "auto",
                   factor: float = 1.0) -> dict[Pair, float]:
    """The one way a strategy reaches ``--teacher``: its cached scores for ``pairs``, scaled
    per query (:func:`scale_per_query`; ``norm="auto"`` is ``minmax`` for a pipeline teacher,
    whose scale is its own, and ``none`` for the others, whose scores are kept as they are),
    with the pairs the teacher did not score left out and counted in the log.

    Example:
        >>> scores = teacher_scores("rrf(bm25, chamfer)", data, pairs, factor=7.5)  # doctest: +SKIP
    """
    teacher = load_teacher(spec)
    raw = cached_scores(teacher, data, pairs)
    if norm == "auto":
        norm = "minmax" if is_pipeline(teacher) else "none"
    scaled = scale_per_query(pairs, raw, norm, factor if norm != "none" else 1.0)
    unscored = int(np.isnan(scaled).sum())
    if unscored:
        log.warning("the teacher %s left %d of %d pairs out of its ranking; they are not"
                    " used", spec, unscored, len(pairs))
    return {p: float(s) for p, s in zip(pairs, scaled, strict=True) if np.isfinite(s)}
