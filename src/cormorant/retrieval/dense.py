"""Dense single-vector retrieval: an encoder plus a FAISS index."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cormorant.errors import PipelineError
from cormorant.index.embeddings import corpus_embeddings
from cormorant.index.faiss_index import FaissIndex
from cormorant.pipeline import DEFAULT_DEPTH
from cormorant.retrieval.base import Retriever
from cormorant.retrieval.encoders import (
    SentenceTransformerEncoder,
    model_fingerprint,
    resolve_model,
)
from cormorant.types import Corpus, Queries, Run

log = logging.getLogger(__name__)


class DenseRetriever(Retriever):
    """Queries and documents embedded by one encoder, searched in a FAISS index (``dense``).

    Example:
        >>> dense = DenseRetriever.build(corpus, model="/models/my-encoder", index="hnsw")  # doctest: +SKIP
        >>> dense.search("does vitamin d help with depression", k=10)  # doctest: +SKIP
    """

    name: ClassVar[str] = "dense"

    def __init__(self, encoder: Any, index: FaissIndex, params: dict[str, Any],
                 depth: int = DEFAULT_DEPTH, query_encoder: Any | None = None) -> None:
        super().__init__(params, depth)
        self.encoder, self.index = encoder, index
        self.query_encoder = query_encoder or encoder

    @classmethod
    def build(cls, corpus: Corpus, *, model: str | None = None, index: str = "flat",
              batch_size: int = 64, max_length: int | None = None, cache: bool = True,
              query_model: str | None = None, depth: int = DEFAULT_DEPTH) -> DenseRetriever:
        params = {k: v for k, v in {"model": model, "index": index,
                                    "query_model": query_model}.items() if v not in (None, "flat")}
        doc_model, query_model = split_towers(model, query_model)
        encoder = SentenceTransformerEncoder(doc_model, batch_size=batch_size,
                                             max_length=max_length)
        queries = _query_encoder(query_model, encoder, batch_size)
        vectors = corpus_embeddings(encoder, corpus, use_cache=cache)
        faiss_index = FaissIndex(encoder.dim, kind=index, metric="ip")
        faiss_index.add([d.doc_id for d in corpus], np.asarray(vectors))
        return cls(encoder, faiss_index, params, depth, queries)

    @classmethod
    def identity(cls, params: dict[str, Any]) -> dict[str, Any]:
        found = {**params, "fingerprint": model_fingerprint(resolve_model(params.get("model")))}
        if params.get("query_model"):
            found["query_fingerprint"] = model_fingerprint(resolve_model(params["query_model"]))
        return found

    def retrieve(self, queries: Queries, k: int) -> Run:
        qids = list(queries)
        vectors = self.query_encoder.encode_queries([queries[q] for q in qids])
        scores, rows = self.index.search(vectors, k)
        return Run.from_arrays(qids, scores, rows, self.index.ids)

    def rescore(self, queries: Queries, candidates: Run) -> Run:
        qids = list(queries)
        query_vectors = self.query_encoder.encode_queries([queries[q] for q in qids])
        return self.score_candidates(qids, query_vectors, candidates)

    def score_candidates(self, qids: list[str], query_vectors: np.ndarray,
                         candidates: Run) -> Run:
        """Inner products of already encoded queries with their indexed candidates."""
        position = {d: i for i, d in enumerate(self.index.ids)}
        run = Run()
        for qid, qvec in zip(qids, query_vectors, strict=True):
            docs = [d for d in candidates.get(qid, {}) if d in position]
            if not docs:
                run[qid] = {}
                continue
            doc_vectors = self._reconstruct([position[d] for d in docs])
            run[qid] = dict(zip(docs, (doc_vectors @ qvec).tolist(), strict=True))
        return run

    def _reconstruct(self, rows: list[int]) -> np.ndarray:
        try:
            return self.index._index.reconstruct_batch(np.asarray(rows, dtype=np.int64))
        except RuntimeError:
            raise PipelineError(f"dense(index={self.index.kind}) cannot re-score candidates:"
                                " its vectors are compressed; build it with index=flat") from None

    def save(self, directory: Path) -> dict[str, Any]:
        meta = {"encoder": self.encoder.settings, "index": self.index.save(directory)}
        if self.query_encoder is not self.encoder:
            meta["query_encoder"] = self.query_encoder.settings
        return meta

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], *, model: str | None = None,
             batch_size: int = 64, depth: int = DEFAULT_DEPTH, nprobe: int = 32,
             ef_search: int = 128, index: str | None = None,
             query_model: str | None = None) -> DenseRetriever:
        built = meta["encoder"]
        if index not in (None, meta["index"]["kind"]):
            raise PipelineError(f"index {directory.parent} holds a"
                                f" {meta['index']['kind']} FAISS index, not {index}")
        doc_model, query_model = split_towers(model, query_model)
        if query_model is None and "query_encoder" in meta:
            query_model = meta["query_encoder"]["model"]
        if doc_model is not None and \
                model_fingerprint(resolve_model(doc_model)) != built["fingerprint"]:
            raise PipelineError(f"index {directory.parent} was built with encoder"
                                f" {built['model']!r}; queries encoded with {model!r} would not"
                                " match its vectors (rebuild the index with that model)")
        encoder = SentenceTransformerEncoder(doc_model or built["model"], batch_size=batch_size,
                                             max_length=built.get("max_length"),
                                             normalize=built["normalize"])
        if encoder.fingerprint != built["fingerprint"] or encoder.dim != built["dim"]:
            raise PipelineError(f"the encoder {built['model']!r} found here differs from the one"
                                f" index {directory.parent} was built with")
        vectors = FaissIndex.load(directory, meta["index"], nprobe=nprobe, ef_search=ef_search)
        kept = {k: v for k, v in {"model": model or built["model"],
                                  "index": meta["index"]["kind"]}.items()
                if v not in (None, "flat", "all-MiniLM-L6-v2")}
        return cls(encoder, vectors, kept, depth, _query_encoder(query_model, encoder, batch_size))


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
