"""Dense single-vector retrieval: an encoder plus a FAISS index."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cormorant.errors import CormorantError, PipelineError
from cormorant.index.embeddings import corpus_embeddings
from cormorant.index.faiss_index import FaissIndex
from cormorant.params import BUILD, Param, Params
from cormorant.retrieval.base import Retriever
from cormorant.retrieval.encoders import (
    SentenceTransformerEncoder,
    model_fingerprint,
    resolve_model,
    same_model,
)
from cormorant.types import Corpus, Queries, Run

log = logging.getLogger(__name__)


class DenseRetriever(Retriever):
    """Queries and documents embedded by one encoder, searched in a FAISS inner-product index
    (``dense``). A query tower from ``train --negatives adore/distill-query`` brings its
    document encoder.

    Example:
        >>> dense = DenseRetriever.build(corpus, model="/models/my-encoder", index="hnsw")  # doctest: +SKIP
        >>> dense.search("does vitamin d help with depression", k=10)  # doctest: +SKIP
    """

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
    )

    def __init__(self, encoder: Any, index: FaissIndex, settings: dict[str, Any],
                 query_encoder: Any | None = None) -> None:
        super().__init__(settings)
        self.encoder, self.index = encoder, index
        self.query_encoder = query_encoder or encoder
        self._positions: dict[str, int] | None = None  # built on the first re-score

    @classmethod
    def create(cls, corpus: Corpus, settings: dict[str, Any]) -> DenseRetriever:
        doc_model, query_model = split_towers(settings["model"], settings["query_model"])
        encoder = SentenceTransformerEncoder(doc_model, batch_size=settings["batch_size"],
                                             max_length=settings["max_length"])
        queries = _query_encoder(query_model, encoder, settings["batch_size"])
        vectors = corpus_embeddings(encoder, corpus, use_cache=settings["cache"])
        faiss_index = FaissIndex(encoder.dim, kind=settings["index"], metric="ip")
        faiss_index.add([d.doc_id for d in corpus], np.asarray(vectors))
        return cls(encoder, faiss_index, settings, queries)

    @classmethod
    def identity(cls, settings: dict[str, Any]) -> dict[str, Any]:
        found = {**settings, "fingerprint": model_fingerprint(resolve_model(settings["model"]))}
        if settings.get("query_model"):
            found["query_fingerprint"] = model_fingerprint(resolve_model(settings["query_model"]))
        return found

    def encode_queries(self, queries: Queries) -> np.ndarray:
        """The query vectors, row i for the i-th query of ``queries``."""
        return self.query_encoder.encode_queries(list(queries.values()))

    def document_vectors(self, doc_ids: list[str]) -> np.ndarray:
        """The indexed vectors of ``doc_ids`` (all must be indexed)."""
        position = self.positions()
        return self.index.reconstruct([position[d] for d in doc_ids])

    def positions(self) -> dict[str, int]:
        """Document id -> row in the FAISS index."""
        if self._positions is None:
            self._positions = {d: i for i, d in enumerate(self.index.ids)}
        return self._positions

    def search_vectors(self, qids: list[str], vectors: np.ndarray, k: int) -> Run:
        """The top ``k`` documents for already encoded queries."""
        scores, rows = self.index.search(vectors, k)
        return Run.from_arrays(qids, scores, rows, self.index.ids)

    def retrieve(self, queries: Queries, k: int) -> Run:
        return self.search_vectors(list(queries), self.encode_queries(queries), k)

    def rescore(self, queries: Queries, candidates: Run) -> Run:
        return self.score_candidates(list(queries), self.encode_queries(queries), candidates)

    def score_candidates(self, qids: list[str], query_vectors: np.ndarray,
                         candidates: Run) -> Run:
        """Inner products of already encoded queries with their indexed candidates."""
        position = self.positions()
        run = Run()
        for qid, qvec in zip(qids, query_vectors, strict=True):
            docs = [d for d in candidates.get(qid, {}) if d in position]
            if not docs:
                run[qid] = {}
                continue
            try:
                doc_vectors = self.index.reconstruct([position[d] for d in docs])
            except CormorantError as exc:
                raise PipelineError(f"dense cannot re-score candidates: {exc}") from None
            run[qid] = dict(zip(docs, (doc_vectors @ qvec).tolist(), strict=True))
        return run

    def save(self, directory: Path) -> dict[str, Any]:
        meta = {"encoder": self.encoder.settings, "index": self.index.save(directory)}
        if self.query_encoder is not self.encoder:
            meta["query_encoder"] = self.query_encoder.settings
        return meta

    @classmethod
    def open(cls, directory: Path, meta: dict[str, Any], settings: dict[str, Any]) -> DenseRetriever:
        built = meta["encoder"]
        if settings["index"] != meta["index"]["kind"]:
            raise PipelineError(f"index {directory.parent} holds a"
                                f" {meta['index']['kind']} FAISS index, not {settings['index']}")
        doc_model, query_model = split_towers(settings["model"] or built["model"],
                                              settings["query_model"])
        if query_model is None and "query_encoder" in meta:
            query_model = meta["query_encoder"]["model"]
        encoder = SentenceTransformerEncoder(doc_model, batch_size=settings["batch_size"],
                                             max_length=built.get("max_length"),
                                             normalize=built["normalize"])
        if encoder.fingerprint != built["fingerprint"] or encoder.dim != built["dim"]:
            raise PipelineError(f"the encoder {built['model']!r} found here differs from the one"
                                f" index {directory.parent} was built with (rebuild the index"
                                " with that model)")
        vectors = FaissIndex.load(directory, meta["index"], nprobe=settings["nprobe"],
                                  ef_search=settings["ef_search"])
        return cls(encoder, vectors, settings,
                   _query_encoder(query_model, encoder, settings["batch_size"]))

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], **params: Any) -> DenseRetriever:
        # Indexes written before the settings were declared record the FAISS kind apart.
        meta = {**meta, "params": {"index": meta["index"]["kind"], **meta.get("params", {})}}
        return super().load(directory, meta, **params)  # type: ignore[return-value]


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


def _query_encoder(query_model: str | None, documents: Any, batch_size: int) -> Any:
    if query_model is None:
        return documents
    queries = SentenceTransformerEncoder(query_model, batch_size=batch_size,
                                         normalize=documents.normalize)
    if queries.dim != documents.dim:
        raise PipelineError(f"query model {query_model!r} gives {queries.dim}-d vectors but the"
                            f" documents are {documents.dim}-d")
    return queries
