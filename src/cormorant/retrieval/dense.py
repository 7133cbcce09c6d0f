"""Dense single-vector retrieval: an encoder plus a FAISS index."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cormorant.errors import PipelineError
from cormorant.index.cache import corpus_embeddings
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
                 depth: int = DEFAULT_DEPTH) -> None:
        super().__init__(params, depth)
        self.encoder, self.index = encoder, index

    @classmethod
    def build(cls, corpus: Corpus, *, model: str | None = None, index: str = "flat",
              batch_size: int = 64, max_length: int | None = None, cache: bool = True,
              depth: int = DEFAULT_DEPTH) -> DenseRetriever:
        encoder = SentenceTransformerEncoder(model, batch_size=batch_size, max_length=max_length)
        vectors = corpus_embeddings(encoder, corpus, use_cache=cache)
        faiss_index = FaissIndex(encoder.dim, kind=index, metric="ip")
        faiss_index.add([d.doc_id for d in corpus], np.asarray(vectors))
        params = {k: v for k, v in {"model": model, "index": index}.items()
                  if v not in (None, "flat")}
        return cls(encoder, faiss_index, params, depth)

    @classmethod
    def identity(cls, params: dict[str, Any]) -> dict[str, Any]:
        return {**params, "fingerprint": model_fingerprint(resolve_model(params.get("model")))}

    def retrieve(self, queries: Queries, k: int) -> Run:
        qids = list(queries)
        vectors = self.encoder.encode_queries([queries[q] for q in qids])
        scores, rows = self.index.search(vectors, k)
        return Run.from_arrays(qids, scores, rows, self.index.ids)

    def rescore(self, queries: Queries, candidates: Run) -> Run:
        position = {d: i for i, d in enumerate(self.index.ids)}
        qids = list(queries)
        query_vectors = self.encoder.encode_queries([queries[q] for q in qids])
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
        return {"encoder": self.encoder.settings, "index": self.index.save(directory)}

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], *, model: str | None = None,
             batch_size: int = 64, depth: int = DEFAULT_DEPTH, nprobe: int = 32,
             ef_search: int = 128, index: str | None = None) -> DenseRetriever:
        built = meta["encoder"]
        if index not in (None, meta["index"]["kind"]):
            raise PipelineError(f"index {directory.parent} holds a"
                                f" {meta['index']['kind']} FAISS index, not {index}")
        if model is not None and model_fingerprint(resolve_model(model)) != built["fingerprint"]:
            raise PipelineError(f"index {directory.parent} was built with encoder"
                                f" {built['model']!r}; queries encoded with {model!r} would not"
                                " match its vectors (rebuild the index with that model)")
        encoder = SentenceTransformerEncoder(model or built["model"], batch_size=batch_size,
                                             max_length=built.get("max_length"),
                                             normalize=built["normalize"])
        if encoder.fingerprint != built["fingerprint"] or encoder.dim != built["dim"]:
            raise PipelineError(f"the encoder {built['model']!r} found here differs from the one"
                                f" index {directory.parent} was built with")
        vectors = FaissIndex.load(directory, meta["index"], nprobe=nprobe, ef_search=ef_search)
        kept = {k: v for k, v in {"model": model or built["model"],
                                  "index": meta["index"]["kind"]}.items()
                if v not in (None, "flat", "all-MiniLM-L6-v2")}
        return cls(encoder, vectors, kept, depth)
