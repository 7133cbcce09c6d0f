"""Dense single-vector retrieval: an encoder plus a FAISS index."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cormorant.errors import CormorantError, IndexFormatError, PipelineError
from cormorant.index.binary_index import BinaryIndex
from cormorant.index.embeddings import corpus_embeddings, read_rows
from cormorant.index.faiss_index import TRAIN_SAMPLE, FaissIndex, sample_rows
from cormorant.index.format import read_meta
from cormorant.index.segments import BASE, Segment, Segments, by_segment
from cormorant.params import BUILD, Param, Params
from cormorant.retrieval.backends import BACKENDS, DTYPES, QUANTIZATIONS, Runtime
from cormorant.retrieval.base import Retriever
from cormorant.retrieval.encoders import (
    SentenceTransformerEncoder,
    model_fingerprint,
    resolve_model,
    same_model,
)
from cormorant.retrieval.segmented import SegmentedRetriever
from cormorant.retrieval.windows import (
    LongQueries,
    all_windows,
    splitter_of,
    window_corpus,
    window_params,
    window_scores,
)
from cormorant.types import Corpus, Document, Queries, Run

log = logging.getLogger(__name__)


RAW_VECTORS = "vectors.npy"
PRECISIONS = ("float32", "int8", "binary")
POOL = 4
"""FirstP/SumP: documents of the MaxP search re-scored from all their windows, per result."""
# FAISS kinds of the int8 precision: the scalar quantizer in place of the float codes.
INT8_KINDS = {"flat": "SQ8", "hnsw": "HNSW32,SQ8"}
ENCODER_PARAMS = Params(
    Param("backend", str, "torch", "runs the encoder: torch, onnx or openvino (exported once"
          " per model, cached)", when=BUILD, choices=BACKENDS),
    Param("quantize", str, "none", "encoder precision on onnx/openvino: none, int8 (dynamic)"
          " or int8-static (calibrated)", when=BUILD, choices=QUANTIZATIONS),
    Param("dtype", str, "float32", "torch precision on CUDA: float32, float16 or bfloat16",
          when=BUILD, choices=DTYPES),
    Param("query_backend", str, None, "another backend for queries (default: the documents')",
          nullable=True, choices=BACKENDS),
    Param("query_quantize", str, None, "another precision for queries (default: the"
          " documents')", nullable=True, choices=QUANTIZATIONS),
    Param("query_prompt", str, None, "text put before each query (default: the model's"
          " 'query' prompt)", nullable=True),
    Param("document_prompt", str, None, "text put before each document (default: the"
          " model's 'document' prompt)", when=BUILD, nullable=True),
    Param("trust_remote_code", bool, False, "run code shipped with the model (opt-in)",
          when=BUILD),
    Param("dim", int, None, "Matryoshka truncation: keep the first dim dimensions,"
          " re-normalised", when=BUILD, nullable=True, low=1),
)
PRECISION_PARAMS = Params(
    Param("precision", str, "float32", "stored codes: float32, int8 (scalar-quantized) or"
          " binary (sign bits, Hamming); int8/binary keep float vectors for re-scoring",
          when=BUILD, choices=PRECISIONS),
    Param("rescore", int, 4, "int8/binary: the top rescore*k re-scored with float vectors",
          low=1),
)


@dataclass(frozen=True)
class VectorSegment:
    """One dense segment: its FAISS index and, where the index keeps codes rather than the
    vectors (PQ, scalar quantizers), the vectors themselves, for re-scoring, merges and
    retraining."""

    index: FaissIndex
    raw: np.ndarray | None = None

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The float vectors of ``rows``."""
        if self.raw is not None:
            return np.asarray(self.raw[rows], dtype=np.float32)
        return self.index.reconstruct(rows.tolist())


class DenseRetriever(LongQueries, SegmentedRetriever):
    """Queries and documents embedded by one encoder, searched in a FAISS inner-product index
    (``dense``). A query tower from ``train --negatives adore/distill-query`` brings its
    document encoder. Takes writes with every FAISS kind: a new segment is coded with the
    centroids and codebooks the index was trained on; a merge may retrain them.

    Example:
        >>> dense = DenseRetriever.build(corpus, model="/models/my-encoder", index="hnsw")  # doctest: +SKIP
        >>> dense.search("does vitamin d help with depression", k=10)  # doctest: +SKIP
    """

    thread_safe: ClassVar[bool] = True
    name: ClassVar[str] = "dense"
    PARAMS: ClassVar[Params] = Retriever.PARAMS + Params(
        Param("model", str, None, "sentence-transformers folder or name (default"
              " all-MiniLM-L6-v2)", when=BUILD, nullable=True, same=same_model),
        Param("query_model", str, None, "another encoder for queries (same dimension)",
              nullable=True),
        Param("index", str, "flat", "FAISS kind: flat, hnsw, ivf, ivfpq, pqfs or a factory"
              " string", when=BUILD),
        Param("max_length", int, None, "tokens kept per document (default: the model's)",
              when=BUILD, nullable=True, low=1),
        Param("batch_size", int, 64, "texts per encoder batch", low=1),
        Param("cache", bool, True, "reuse cached corpus embeddings", when=BUILD),
        Param("nprobe", int, 32, "IVF lists searched per query", low=1),
        Param("ef_search", int, 128, "HNSW search breadth", low=1),
    ) + ENCODER_PARAMS + PRECISION_PARAMS + window_params()

    def __init__(self, encoder: Any, segments: Segments, settings: dict[str, Any],
                 query_encoder: Any | None = None, trained_on: int | None = None) -> None:
        super().__init__(settings, segments, trained_on)
        self.encoder = encoder
        self.query_encoder = query_encoder or encoder
        self.splitter = splitter_of(encoder, settings["passages"], self.name)
        self.query_splitter = splitter_of(self.query_encoder, settings["query_passages"],
                                          self.name, "query_passages", queries=True)

    @classmethod
    def create(cls, corpus: Corpus, settings: dict[str, Any]) -> DenseRetriever:
        encoder, ids, vectors = corpus_rows(corpus, settings, cls.name)
        segment = _vector_segment(new_index(settings, encoder.dim), ids, np.asarray(vectors))
        trained = len(ids) if segment.index.needs_training else None
        return cls(encoder, Segments((Segment.made(ids, segment, BASE),)), settings,
                   cls.towers(encoder, settings), trained)

    @staticmethod
    def towers(encoder: SentenceTransformerEncoder, settings: dict[str, Any]
               ) -> SentenceTransformerEncoder:
        """The query encoder beside the document ``encoder`` (itself unless another is asked)."""
        return query_encoder(split_towers(settings["model"], settings["query_model"])[1],
                             encoder, settings)

    @classmethod
    def builds_parts(cls, settings: dict[str, Any]) -> bool:
        return bool(settings["cache"])  # a shard's rows are read from the cached embeddings

    @classmethod
    def learn_shared(cls, corpus: Corpus, settings: dict[str, Any]) -> FaissIndex | None:
        """A trained kind's (IVF, PQ, int8) empty index, sized for the whole collection and
        trained on a seeded sample of at most TRAIN_SAMPLE of its cached vectors; None for a
        kind that learns nothing (flat, HNSW, binary)."""
        encoder = corpus_encoder(settings)
        if not new_index(settings, encoder.dim).needs_training:
            return None
        _, _, vectors = corpus_rows(corpus, settings, cls.name, encoder)
        index = FaissIndex(encoder.dim, kind=index_kind(settings), metric="ip",
                           expected_count=len(vectors))
        index.train(read_rows(vectors, sample_rows(len(vectors), TRAIN_SAMPLE)))
        return index

    @classmethod
    def create_part(cls, corpus: Corpus, settings: dict[str, Any], keep: Callable[[str], bool],
                    shared: FaissIndex | None) -> DenseRetriever | None:
        encoder, ids, vectors = corpus_rows(corpus, settings, cls.name)
        rows = np.flatnonzero(np.fromiter(map(keep, ids), dtype=bool, count=len(ids)))
        if not len(rows):
            return None
        own = [ids[r] for r in rows.tolist()]
        # Coded as part() codes a shard's rows of the whole stage: into the template's copy.
        template = shared if shared is not None else new_index(settings, encoder.dim)
        segment = _vector_segment(template.template(), own, read_rows(vectors, rows))
        trained = len(ids) if shared is not None else None
        return cls(encoder, Segments((Segment.made(own, segment, BASE),)), settings,
                   cls.towers(encoder, settings), trained)

    @classmethod
    def identity(cls, settings: dict[str, Any]) -> dict[str, Any]:
        found = {**settings, "fingerprint": model_fingerprint(resolve_model(settings["model"]))}
        if settings.get("query_model"):
            found["query_fingerprint"] = model_fingerprint(resolve_model(settings["query_model"]))
        return found

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    @property
    def encodings(self) -> dict[str, Any]:
        """How documents were and queries are encoded (backend, precision, prompts), for
        ``search`` to report when they differ: int8 queries against an fp32 index."""
        return {"documents": {"backend": self.encoder.runtime.backend,
                              "quantize": self.encoder.runtime.quantize},
                "queries": {"backend": self.query_encoder.runtime.backend,
                            "quantize": self.query_encoder.runtime.quantize},
                "index_precision": self.settings["precision"],
                "prompts": self.query_encoder.prompts}

    # -- segments ------------------------------------------------------------------------

    def template(self) -> FaissIndex:
        """An empty index trained as the base segment's was (rebuilt after a retraining merge)."""
        if not len(self.segments):
            return new_index(self.settings, self.dim)
        return self.segments.items[0].data.index.template()

    def index_documents(self, documents: list[Document]) -> VectorSegment:
        return self.index_rows(documents)[1]

    def index_rows(self, documents: list[Document]) -> tuple[list[str], VectorSegment]:
        if self.splitter is not None:
            texts, ids = self.splitter.split_documents(documents)
        else:
            texts, ids = [d.contents for d in documents], [d.doc_id for d in documents]
        vectors = np.asarray(self.encoder.encode_documents(texts),
                             dtype=np.float32).reshape(len(texts), self.dim)
        return ids, _vector_segment(self.template(), ids, vectors)

    def combine(self, parts: list[tuple[Segment, np.ndarray]], retrain: bool = False
                ) -> VectorSegment:
        ids = [s.doc_ids[r] for s, rows in parts for r in rows.tolist()]
        vectors = np.vstack([s.data.vectors(rows) for s, rows in parts])
        if retrain:
            return _vector_segment(new_index(self.settings, self.dim), ids, vectors)
        return _vector_segment(self.template(), ids, vectors)

    def write_segment(self, data: VectorSegment, directory: Path) -> dict[str, Any]:
        if data.raw is not None:
            np.save(directory / RAW_VECTORS, np.asarray(data.raw, dtype=np.float32))
        return {"index": data.index.save(directory)}

    def read_segment(self, directory: Path, doc_ids: list[str]) -> VectorSegment:
        # The factory as built (an IVF's list count) is recorded beside; the kind alone would
        # size it for the segment's count.
        built = read_meta(directory, verify=False).get("index") or {}
        meta = {"dim": self.dim, "kind": index_kind(self.settings),
                "metric": built.get("metric", "ip"), "factory": built.get("factory")}
        found = _read_vector_segment(directory, meta)
        if found.index.ids != doc_ids:
            raise IndexFormatError(f"{directory}: the vector segment and its ids disagree")
        return found

    # -- searching -----------------------------------------------------------------------

    def encode_queries(self, queries: Queries) -> np.ndarray:
        """The query vectors, row i for the i-th query of ``queries``."""
        return self.query_encoder.encode_queries(list(queries.values()))

    def document_vectors(self, doc_ids: list[str]) -> np.ndarray:
        """The indexed vectors of ``doc_ids`` (all must be live); a windowed document's is
        the mean of its windows' (its centroid, what Rocchio moves a query towards)."""
        segments = self.segments
        located = []
        for doc_id in doc_ids:
            where = segments.locate(doc_id)
            if where is None:
                raise PipelineError(f"dense: document {doc_id!r} is not in the index")
            located.append(where)
        if self.splitter is None:
            return _vectors_at(segments, located, self.dim)
        return np.stack([_vectors_at(segments, all_windows(segments, [w]), self.dim).mean(axis=0)
                         for w in located]).astype(np.float32)

    def search_vectors(self, qids: list[str], vectors: np.ndarray, k: int) -> Run:
        """The top ``k`` live documents for already encoded queries."""
        if self.splitter is not None:
            return self.search_windows(qids, vectors, k)
        run = Run({q: {} for q in qids})
        for segment in self.segments:
            if not segment.live_count:
                continue
            # Deleted rows are filtered after the search: ask for enough to fill k anyway.
            wanted = min(self.first_pass(k) + segment.deleted_count, len(segment))
            scores, rows = segment.data.index.search(vectors, wanted, self.settings["nprobe"],
                                                     self.settings["ef_search"])
            if self.settings["precision"] != "float32":
                scores = rescored(segment.data, vectors, rows)
            for qid, row_scores, row_ids in zip(qids, scores.tolist(), rows.tolist(),
                                                strict=True):
                hits = run[qid]
                for score, row in zip(row_scores, row_ids, strict=True):
                    if row >= 0 and not segment.deleted[row]:
                        hits[segment.doc_ids[row]] = score
        return run.topk(k)

    def search_windows(self, qids: list[str], vectors: np.ndarray, k: int) -> Run:
        """The top ``k`` documents of a windowed index. MaxP: each segment is searched for
        more windows, doubling, until its top windows hold ``k`` distinct live documents (or
        it has no more), which makes MaxP exact on a flat index: a document not among them
        scores at most the last window found. FirstP and SumP need every window of a
        document: the ``POOL * k`` best documents by MaxP are re-scored from all their stored
        windows (exact scores; a document whose best window is outside that pool is missed)."""
        how = self.settings["aggregate"]
        pool = k if how == "max" else POOL * k
        run = Run({q: {} for q in qids})
        for segment in self.segments:
            if segment.live_count:
                for i, best in self.segment_maxp(segment, vectors, pool).items():
                    run[qids[i]].update(best)
        run = run.topk(pool)
        if how != "max":
            run = self.score_candidates(qids, vectors, run)
        return run.topk(k)

    def segment_maxp(self, segment: Segment, vectors: np.ndarray, k: int
                     ) -> dict[int, dict[str, float]]:
        """Query position -> {document: best window score} over one segment's top windows,
        enough of them for ``k`` distinct live documents per query (or all)."""
        found: dict[int, dict[str, float]] = {}
        todo = np.arange(len(vectors))
        wanted = min(self.first_pass(k) + segment.deleted_count, len(segment))
        while len(todo):
            scores, rows = segment.data.index.search(vectors[todo], wanted,
                                                     self.settings["nprobe"],
                                                     self.settings["ef_search"])
            if self.settings["precision"] != "float32":
                scores = rescored(segment.data, vectors[todo], rows)
            short = []
            for i, row_scores, row_ids in zip(todo.tolist(), scores.tolist(), rows.tolist(),
                                              strict=True):
                best: dict[str, float] = {}
                for score, row in zip(row_scores, row_ids, strict=True):
                    if row >= 0 and not segment.deleted[row]:
                        best.setdefault(segment.doc_ids[row], score)  # best first
                if len(best) < k and wanted < len(segment):
                    short.append(i)
                else:
                    found[i] = best
            todo = np.array(short, dtype=np.int64)
            wanted = min(2 * wanted, len(segment))
        return found

    def first_pass(self, k: int) -> int:
        """How many candidates the index gives per query: ``rescore * k`` for int8/binary
        codes, whose order the float vectors then correct."""
        if self.settings["precision"] == "float32":
            return k
        return k * self.settings["rescore"]

    def retrieve_whole(self, queries: Queries, k: int) -> Run:
        return self.search_vectors(list(queries), self.encode_queries(queries), k)

    def rescore_whole(self, queries: Queries, candidates: Run) -> Run:
        return self.score_candidates(list(queries), self.encode_queries(queries), candidates)

    def score_candidates(self, qids: list[str], query_vectors: np.ndarray,
                         candidates: Run) -> Run:
        """Inner products of already encoded queries with their live candidates; a windowed
        document's score aggregates all its windows' (``aggregate``)."""
        segments = self.segments
        run = Run()
        for qid, qvec in zip(qids, query_vectors, strict=True):
            docs = segments.locate_each(candidates.get(qid, {}))
            if not docs:
                run[qid] = {}
                continue
            located = [w for _, w in docs]
            if self.splitter is not None:
                located = all_windows(segments, located)
            try:
                doc_vectors = _vectors_at(segments, located, self.dim)
            except CormorantError as exc:
                raise PipelineError(f"dense cannot re-score candidates: {exc}") from None
            owners = [segments.items[p].doc_ids[r] for p, r in located]
            run[qid] = window_scores(owners, doc_vectors @ qvec, self.settings["aggregate"])
        return run

    # -- on disk -------------------------------------------------------------------------

    def save(self, directory: Path) -> dict[str, Any]:
        meta = {"encoder": self.encoder.settings, "trained_on": self.trained_on,
                **self.write_segment(self.base_data(), directory)}
        if self.query_encoder is not self.encoder:
            meta["query_encoder"] = self.query_encoder.settings
        return meta

    @classmethod
    def open(cls, directory: Path, meta: dict[str, Any], settings: dict[str, Any]) -> DenseRetriever:
        built = meta["encoder"]
        if index_kind(settings) != meta["index"]["kind"]:
            raise PipelineError(f"index {directory.parent} holds a"
                                f" {meta['index']['kind']} FAISS index, not"
                                f" {index_kind(settings)}")
        doc_model, query_model = split_towers(settings["model"] or built["model"],
                                              settings["query_model"])
        towers = meta.get("query_encoder", {})
        if query_model is None and towers.get("fingerprint", built["fingerprint"]) \
                != built["fingerprint"]:
            query_model = towers["model"]
        encoder = document_encoder(doc_model, settings, max_length=built.get("max_length"),
                                   normalize=built["normalize"])
        if encoder.fingerprint != built["fingerprint"] or encoder.dim != built["dim"]:
            raise PipelineError(f"the encoder {built['model']!r} found here differs from the one"
                                f" index {directory.parent} was built with (rebuild the index"
                                " with that model)")
        data = _read_vector_segment(directory, meta["index"], settings)
        base = Segment.made(list(data.index.ids), data, BASE)
        return cls(encoder, Segments((base,)), settings,
                   query_encoder(query_model, encoder, settings), meta.get("trained_on"))

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], **params: Any) -> DenseRetriever:
        # Indexes written before the settings were declared record the FAISS kind apart.
        meta = {**meta, "params": {"index": meta["index"]["kind"], **meta.get("params", {})}}
        return super().load(directory, meta, **params)  # type: ignore[return-value]


def index_kind(settings: dict[str, Any]) -> str:
    """The FAISS kind recorded for a stage's ``index`` at its ``precision``."""
    precision, kind = settings.get("precision", "float32"), settings["index"]
    if precision == "int8":
        if kind not in INT8_KINDS:
            raise PipelineError(f"dense: precision=int8 works with index=flat or index=hnsw,"
                                f" not {kind}")
        return INT8_KINDS[kind]
    return kind


def new_index(settings: dict[str, Any], dim: int) -> FaissIndex | BinaryIndex:
    """An empty index for a stage's ``index`` kind at its ``precision``."""
    if settings.get("precision") == "binary":
        return BinaryIndex(dim, settings["index"], settings["ef_search"])
    return FaissIndex(dim, kind=index_kind(settings), metric="ip")


def rescored(data: VectorSegment, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Inner products of float ``queries`` with the float vectors of their candidate ``rows``
    (-1: none), rows re-ordered best first."""
    scores = np.full(rows.shape, -np.inf, dtype=np.float32)
    for i, (query, found) in enumerate(zip(queries, rows, strict=True)):
        valid = found >= 0
        if valid.any():
            scores[i, valid] = data.vectors(found[valid]) @ query
    order = np.argsort(-scores, axis=1, kind="stable")
    rows[:] = np.take_along_axis(rows, order, axis=1)
    return np.take_along_axis(scores, order, axis=1)


def _vectors_at(segments: Segments, located: list[tuple[int, int]], dim: int) -> np.ndarray:
    """The vectors at (segment position, row) pairs, in that order: one read per segment
    (a re-rank of 100 candidates is one reconstruct, not 100)."""
    out = np.zeros((len(located), dim), np.float32)
    for position, wanted in by_segment(located).items():
        rows = np.array([located[i][1] for i in wanted])
        out[wanted] = segments.items[position].data.vectors(rows)
    return out


def _vector_segment(index: FaissIndex | BinaryIndex, ids: list[str], vectors: np.ndarray) -> VectorSegment:
    """``vectors`` added to ``index`` under ``ids``, the vectors kept where the index cannot
    give them back exactly."""
    index.add(ids, vectors)
    return VectorSegment(index, None if index.exact else vectors)


def _read_vector_segment(directory: Path, meta: dict[str, Any],
                         settings: dict[str, Any] | None = None) -> VectorSegment:
    extra = {} if settings is None else {"nprobe": settings["nprobe"],
                                         "ef_search": settings["ef_search"]}
    reader = BinaryIndex if meta.get("metric") == BinaryIndex.metric else FaissIndex
    index = reader.load(directory, meta, **extra)
    raw = None
    if (directory / RAW_VECTORS).is_file():
        raw = np.load(directory / RAW_VECTORS, mmap_mode="r")
        if raw.shape != (len(index.ids), index.dim):
            raise IndexFormatError(f"{directory}: {RAW_VECTORS} does not fit the vector index")
    return VectorSegment(index, raw)


def split_towers(model: str | None, query_model: str | None) -> tuple[str | None, str | None]:
    """(document model, query model). A folder written by ``cormorant train`` for a query tower
    alone (ADORE, distill-query) names its document encoder in ``cormorant.json``; using it as
    ``dense(model=DIR)`` encodes documents with that encoder and queries with ``DIR``."""
    if model is None or query_model is not None:
        return model, query_model
    role = Path(resolve_model(model)) / "cormorant.json"
    if not role.is_file():
        return model, None
    spec = json.loads(role.read_text())
    if spec.get("role") != "query-encoder":
        return model, None
    return str(Path(resolve_model(model)) / spec["document_encoder"]), model


def corpus_rows(corpus: Corpus, settings: dict[str, Any], stage: str = "dense",
                encoder: SentenceTransformerEncoder | None = None
                ) -> tuple[SentenceTransformerEncoder, list[str], np.ndarray]:
    """(document encoder, row ids, row vectors) of a dense stage's ``corpus``: a row per
    document, or per window with ``passages`` (under its document's id); the vectors from the
    embedding cache (a read-only memory map: read a shard's rows with
    :func:`~cormorant.index.embeddings.read_rows`) when ``cache`` is on, encoded into it if
    missing. ``encoder``: the stage's document encoder when the caller has loaded it already
    (loading a model costs seconds)."""
    encoder = encoder or corpus_encoder(settings)
    splitter = splitter_of(encoder, settings["passages"], stage)
    if splitter is not None:
        corpus, ids = window_corpus(splitter, corpus)
    else:
        ids = [d.doc_id for d in corpus]
    return encoder, ids, corpus_embeddings(encoder, corpus, use_cache=settings["cache"])


def corpus_encoder(settings: dict[str, Any]) -> SentenceTransformerEncoder:
    """The encoder a ``dense`` stage with ``settings`` (every declared parameter) encodes its
    corpus with; a distributed build loads the same one in each worker."""
    doc_model = split_towers(settings["model"], settings["query_model"])[0]
    return document_encoder(doc_model, settings, max_length=settings["max_length"])


def document_encoder(model: str | None, settings: dict[str, Any], **extra: Any
                     ) -> SentenceTransformerEncoder:
    """The encoder a dense-like stage's ``settings`` (:data:`ENCODER_PARAMS`) ask for."""
    runtime = Runtime(settings["backend"], settings["quantize"], settings["dtype"])
    return SentenceTransformerEncoder(model, batch_size=settings["batch_size"], runtime=runtime,
                                      query_prompt=settings["query_prompt"],
                                      document_prompt=settings["document_prompt"],
                                      trust_remote_code=settings["trust_remote_code"],
                                      truncate_dim=settings["dim"], **extra)


def query_encoder(query_model: str | None, documents: SentenceTransformerEncoder,
                  settings: dict[str, Any]) -> SentenceTransformerEncoder:
    """The encoder for queries: ``documents`` itself unless another model, backend or precision
    is asked for. Another precision of the same model is allowed: that is what int8 queries
    against an fp32 index are for (meta.json and search report it)."""
    runtime = Runtime(settings["query_backend"] or settings["backend"],
                      settings["query_quantize"] or settings["quantize"], settings["dtype"])
    if query_model is None and runtime == documents.runtime:
        return documents
    queries = SentenceTransformerEncoder(query_model or documents.name,
                                         batch_size=settings["batch_size"], runtime=runtime,
                                         normalize=documents.normalize,
                                         query_prompt=settings["query_prompt"],
                                         trust_remote_code=settings["trust_remote_code"],
                                         truncate_dim=settings["dim"])
    if queries.dim != documents.dim:
        raise PipelineError(f"query model {query_model!r} gives {queries.dim}-d vectors but the"
                            f" documents are {documents.dim}-d")
    return queries
