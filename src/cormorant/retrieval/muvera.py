"""Multi-vector retrieval through MUVERA fixed-dimensional encodings: the ``muvera`` stage.

Documents' token vectors become one FDE each, searched in a FAISS index (flat, HNSW or
IVF-PQ); the FDE top ``candidates`` are re-ranked by exact Chamfer similarity against the
float16, memory-mapped token store. The FDE parameters are stored in the index's meta.json.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cormorant.errors import PipelineError
from cormorant.index.faiss_index import FaissIndex
from cormorant.index.muvera import FDEConfig, document_fde, query_fde
from cormorant.index.token_store import OFFSETS, TOKENS, TokenStore
from cormorant.pipeline import DEFAULT_DEPTH
from cormorant.retrieval.chamfer import IDS, ChamferRetriever, cached_token_store
from cormorant.retrieval.multivector import TokenEncoder
from cormorant.types import Corpus, Queries, Run

log = logging.getLogger(__name__)


class MuveraEncoder:
    """A ``MultiVectorEncoder`` turned into an ``Encoder``: queries and documents get their
    (different) FDEs.

    Example:
        >>> encoder = MuveraEncoder(TokenEncoder(), FDEConfig(dimension=384))  # doctest: +SKIP
        >>> encoder.encode_queries(["vitamin d"]).shape  # doctest: +SKIP
        (1, 10240)
    """

    def __init__(self, inner: Any, config: FDEConfig) -> None:
        if config.dimension != inner.dim:
            raise PipelineError(f"FDE dimension {config.dimension} != token dimension {inner.dim}")
        self.inner, self.config, self.dim = inner, config, config.output_dim

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.queries_from_tokens(self.inner.encode_queries(texts))

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return self.documents_from_tokens(self.inner.encode_documents(texts))

    def queries_from_tokens(self, matrices: list[np.ndarray]) -> np.ndarray:
        return np.stack([query_fde(m, self.config) for m in matrices]) if matrices \
            else np.zeros((0, self.dim), np.float32)

    def documents_from_tokens(self, matrices: list[np.ndarray]) -> np.ndarray:
        return np.stack([document_fde(m, self.config) for m in matrices]) if matrices \
            else np.zeros((0, self.dim), np.float32)


class MuveraRetriever(ChamferRetriever):
    """FDE candidates from FAISS, re-ranked by exact Chamfer (``muvera``).

    Example:
        >>> muvera = MuveraRetriever.build(corpus, candidates=200)  # doctest: +SKIP
    """

    name: ClassVar[str] = "muvera"

    def __init__(self, encoder: TokenEncoder, store_dir: Path, doc_ids: list[str],
                 params: dict[str, Any], fde: MuveraEncoder, index: FaissIndex,
                 candidates: int, depth: int = DEFAULT_DEPTH) -> None:
        super().__init__(encoder, store_dir, doc_ids, params, depth)
        self.fde, self.index, self.candidates = fde, index, candidates

    @classmethod
    def build(cls, corpus: Corpus, *, model: str | None = None, candidates: int = 100,
              repetitions: int = 20, k_sim: int = 5, d_proj: int | None = 16,
              final_dim: int | None = None, seed: int = 1, index: str = "flat",
              batch_size: int = 32, max_length: int | None = None,
              depth: int = DEFAULT_DEPTH) -> MuveraRetriever:
        encoder = TokenEncoder(model, batch_size=batch_size, max_length=max_length)
        try:
            config = FDEConfig(encoder.dim, repetitions, k_sim, d_proj, True, final_dim, seed)
        except ValueError as exc:
            raise PipelineError(f"muvera: {exc}") from None
        store_dir = cached_token_store(encoder, corpus)
        doc_ids = json.loads((store_dir / IDS).read_text())
        fde = MuveraEncoder(encoder, config)
        store = TokenStore(store_dir)
        vectors = fde.documents_from_tokens([store.document(i) for i in range(len(store))])
        faiss_index = FaissIndex(config.output_dim, kind=index, metric="ip")
        faiss_index.add(doc_ids, vectors)
        params = {k: v for k, v in {"model": model, "candidates": candidates, "index": index,
                                    "repetitions": repetitions, "k_sim": k_sim, "d_proj": d_proj,
                                    "final_dim": final_dim, "seed": seed}.items()
                  if v is not None and v != _DEFAULTS.get(k)}
        return cls(encoder, store_dir, doc_ids, params, fde, faiss_index, candidates, depth)

    def retrieve(self, queries: Queries, k: int) -> Run:
        qids = list(queries)
        tokens = self.encoder.encode_queries([queries[q] for q in qids])
        # Only the FDE top `candidates` are re-ranked: that count bounds the results too.
        _, rows = self.index.search(self.fde.queries_from_tokens(tokens), self.candidates)
        run = Run()
        for qid, query, row in zip(qids, tokens, rows, strict=True):
            scored = {self.doc_ids[i]: self._chamfer(query, i) for i in row if i >= 0}
            best = sorted(scored.items(), key=lambda item: (-item[1], item[0]))[:k]
            run[qid] = dict(best)
        return run

    def _chamfer(self, query: np.ndarray, row: int) -> float:
        if not len(query):
            return 0.0
        doc = self.store.document(row)
        return float((query @ doc.T).max(axis=1).sum()) if len(doc) else float("-inf")

    def save(self, directory: Path) -> dict[str, Any]:
        for name in (IDS, TOKENS, OFFSETS):
            shutil.copy(self.store_dir / name, directory / name)
        return {"encoder": self.encoder.settings, "fde": self.fde.config.to_json(),
                "index": self.index.save(directory), "candidates": self.candidates,
                "count": len(self.doc_ids)}

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], *, model: str | None = None,  # type: ignore[override]
             candidates: int | None = None, batch_size: int = 32, depth: int = DEFAULT_DEPTH,
             nprobe: int = 32, ef_search: int = 128, **fixed: Any) -> MuveraRetriever:
        base = ChamferRetriever.load(directory, meta, model=model, batch_size=batch_size,
                                     depth=depth)
        config = FDEConfig(**meta["fde"])
        stored = {"repetitions": config.repetitions, "k_sim": config.k_sim,
                  "d_proj": config.d_proj, "final_dim": config.final_dim, "seed": config.seed,
                  "index": meta["index"]["kind"]}
        conflicts = {k: v for k, v in fixed.items() if k not in stored or stored[k] != v}
        if conflicts:
            raise PipelineError(f"index {directory.parent} holds a muvera index built with"
                                f" {stored}; {conflicts} would need a rebuild")
        index = FaissIndex.load(directory, meta["index"], nprobe=nprobe, ef_search=ef_search)
        chosen = candidates or meta["candidates"]
        params = {k: v for k, v in {**base.params, "candidates": chosen}.items()
                  if v != _DEFAULTS.get(k)}
        return cls(base.encoder, directory, base.doc_ids, params,
                   MuveraEncoder(base.encoder, config), index, chosen, depth)


_DEFAULTS = {"candidates": 100, "index": "flat", "repetitions": 20, "k_sim": 5, "d_proj": 16,
             "seed": 1}
