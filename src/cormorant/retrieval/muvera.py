"""Multi-vector retrieval through MUVERA fixed-dimensional encodings: the ``muvera`` stage.

Documents' token vectors become one FDE each, searched in a FAISS index (flat, HNSW or
IVF-PQ); the FDE top ``candidates`` are re-ranked by exact Chamfer similarity against the
float16, memory-mapped token store. The FDE parameters are stored in the index's meta.json.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cormorant.errors import IndexFormatError, PipelineError
from cormorant.index.faiss_index import FaissIndex, sample_rows
from cormorant.index.muvera import FDEConfig, encode_sets
from cormorant.index.segments import BASE, Segment, Segments
from cormorant.index.token_store import TokenStore
from cormorant.params import BUILD, Param, Params
from cormorant.retrieval.chamfer import (
    IDS,
    ChamferRetriever,
    open_token_encoder,
    ranked_run,
    rerank_rows,
    token_encoder,
    windowed_token_store,
)
from cormorant.retrieval.multivector import MultiVectorEncoder
from cormorant.types import Corpus, Document, Queries, Run

log = logging.getLogger(__name__)
AUTO_FLAT_BELOW = 2000
# The stage's defaults, chosen on SciFact and NFCorpus (benchmarks/bench_muvera_quality.py,
# docs/benchmarks.md): at the paper's 10,240 dimensions, k_sim=4 with d_proj=32 found more of
# the exact top-10 than the paper's k_sim=5, d_proj=16 (0.954 vs 0.943 at 200 candidates on
# SciFact, 0.869 vs 0.832 on NFCorpus) at the same index size; 300 candidates reach 0.95.
DEFAULT_CANDIDATES = 300
DEFAULT_FDE = {"repetitions": 20, "k_sim": 4, "d_proj": 32}
TRAIN_BLOCK = 10_000  # documents whose FDEs train a PQ/IVF index kind
FDE_BLOCK = 1024  # documents whose token vectors are read at once to make their FDEs


class MuveraEncoder:
    """A ``MultiVectorEncoder`` turned into an ``Encoder``: queries and documents get their
    (different) FDEs.

    Example:
        >>> encoder = MuveraEncoder(load_token_encoder(), FDEConfig(dimension=384))  # doctest: +SKIP
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
        return self._from_tokens(matrices, document=False)

    def documents_from_tokens(self, matrices: list[np.ndarray]) -> np.ndarray:
        return self._from_tokens(matrices, document=True)

    def documents_from_store(self, store: TokenStore, batch: int = FDE_BLOCK,
                             progress: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """Every stored document's FDE, a block of ``batch`` documents at a time, with the
        block's first row: a corpus's FDEs never need to be in memory all at once."""
        from tqdm.auto import tqdm

        with tqdm(total=len(store), desc="FDEs", unit="doc", disable=not progress) as bar:
            for start in range(0, len(store), batch):
                stop = min(start + batch, len(store))
                tokens, starts = store.block(start, stop)
                yield start, encode_sets(tokens, np.append(starts, len(tokens)), self.config,
                                         document=True)
                bar.update(stop - start)

    def documents_of(self, store: TokenStore, rows: np.ndarray) -> np.ndarray:
        """The FDEs of the stored documents ``rows`` (one gather: keep ``rows`` a block)."""
        tokens, starts = store.gather(rows)
        return encode_sets(tokens, np.append(starts, len(tokens)), self.config, document=True)

    def _from_tokens(self, matrices: list[np.ndarray], document: bool) -> np.ndarray:
        if not matrices:
            return np.zeros((0, self.dim), np.float32)
        offsets = np.concatenate([[0], np.cumsum([len(m) for m in matrices])])
        tokens = np.concatenate([np.asarray(m, np.float32).reshape(-1, self.config.dimension)
                                 for m in matrices])
        return encode_sets(tokens, offsets, self.config, document=document)


def muvera_search(queries: list[np.ndarray], fde: MuveraEncoder, index: FaissIndex,
                  store: TokenStore, candidates: int, k: int,
                  carve: float | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query, (rows, Chamfer scores) of the ``k`` best of its FDE top ``candidates``.

    The FDE search is one batched FAISS call; each query's candidates are then read from the
    token store in one gather and scored in one matrix product. With ``carve`` (a similarity
    threshold) the re-rank scores the query's carved balls instead of its tokens
    (:func:`ball_carve`): fewer rows, a cheaper product, an approximate score.

    Example:
        >>> muvera_search(tokens, fde, index, store, candidates=100, k=10)  # doctest: +SKIP
    """
    if not queries:
        return []
    # Only the FDE top `candidates` are re-ranked: that count bounds the results too.
    _, rows = index.search(fde.queries_from_tokens(queries), candidates)
    out = []
    for query, row in zip(queries, rows, strict=True):
        found = row[row >= 0]
        scorer = query if carve is None else ball_carve(query, carve)
        scores = rerank_rows(scorer, store, found)
        order = np.argsort(-scores, kind="stable")[:k]
        order = order[np.isfinite(scores[order])]
        out.append((found[order], scores[order]))
    return out


def ball_carve(query: np.ndarray, threshold: float) -> np.ndarray:
    """The paper's ball carving: the first token not yet taken and every untaken token whose
    similarity to it is at least ``threshold`` become one row, their sum; repeat.

    Chamfer against the carved rows approximates Chamfer against the tokens (a sum of a group
    scores at most the group's summed maxima) with fewer rows to multiply.

    Example:
        >>> ball_carve(np.eye(3, dtype=np.float32), 0.5).shape
        (3, 3)
    """
    sims = query @ query.T
    free = np.ones(len(query), dtype=bool)
    balls = []
    for i in range(len(query)):
        if free[i]:
            ball = free & (sims[i] >= threshold)
            ball[i] = True
            balls.append(query[ball].sum(axis=0))
            free &= ~ball
    return np.stack(balls) if balls else query


@dataclass(frozen=True)
class MuveraSegment:
    """One MUVERA segment: its documents' token vectors and their FDEs in FAISS (same rows)."""

    store: TokenStore
    index: FaissIndex


class MuveraRetriever(ChamferRetriever):
    """MUVERA (``muvera``): fixed-dimensional encodings of token vectors in FAISS; the FDE top
    ``candidates`` re-ranked by exact Chamfer against the token store. Defaults (10,240 dims)
    were chosen in docs/benchmarks.md. Takes writes: a write's token vectors and FDEs are a
    new segment, its FDEs coded with the PQ codebooks the index was trained on.

    Example:
        >>> muvera = MuveraRetriever.build(corpus, candidates=200)  # doctest: +SKIP
    """

    name: ClassVar[str] = "muvera"
    PARAMS: ClassVar[Params] = ChamferRetriever.PARAMS + Params(
        Param("repetitions", int, DEFAULT_FDE["repetitions"], "FDE repetitions", when=BUILD,
              low=1),
        Param("k_sim", int, DEFAULT_FDE["k_sim"], "SimHash bits (2^k_sim partitions)",
              when=BUILD, low=0),
        Param("d_proj", int, DEFAULT_FDE["d_proj"], "projection dimension per partition"
              " (none: no projection)", when=BUILD, nullable=True, low=1),
        Param("final_dim", int, None, "final random projection of the FDE", when=BUILD,
              nullable=True, low=1),
        Param("seed", int, 1, "FDE random seed", when=BUILD),
        Param("index", str, "auto", "FAISS kind for FDEs: auto (flat below 2,000 documents,"
              " else pqfs), flat, hnsw, ivfpq, pqfs", when=BUILD,
              # auto chose the stored kind when the index was built
              same=lambda stored, asked: asked == "auto"),
        Param("candidates", int, DEFAULT_CANDIDATES, "FDE candidates re-ranked by exact"
              " Chamfer", low=1),
        Param("carve", float, None, "ball-carving similarity threshold for query tokens in"
              " the re-rank (none: every token)", nullable=True, low=-1, high=1),
        Param("nprobe", int, 32, "IVF lists searched per query", low=1),
        Param("ef_search", int, 128, "HNSW search breadth", low=1),
    )

    def __init__(self, encoder: MultiVectorEncoder, segments: Segments,
                 settings: dict[str, Any], fde: MuveraEncoder, kind: str,
                 trained_on: int | None = None) -> None:
        super().__init__(encoder, segments, settings)
        self.fde, self.kind, self.trained_on = fde, kind, trained_on
        self.candidates, self.carve = settings["candidates"], settings["carve"]

    @classmethod
    def create(cls, corpus: Corpus, settings: dict[str, Any]) -> MuveraRetriever:
        fde, store, doc_ids, kind = muvera_rows(corpus, settings, cls.name)
        index = fde_index(fde, store, doc_ids, FaissIndex(fde.dim, kind=kind, metric="ip",
                                                          expected_count=len(doc_ids)))
        trained = len(doc_ids) if index.needs_training else None
        segment = Segment.made(doc_ids, MuveraSegment(store, index), BASE)
        return cls(fde.inner, Segments((segment,)), settings, fde, kind, trained)

    @classmethod
    def learn_shared(cls, corpus: Corpus, settings: dict[str, Any]) -> FaissIndex | None:
        """A trained FDE index kind's (PQ, the default ``pqfs`` from 2,000 documents) empty
        index, trained on the FDEs of a seeded sample of TRAIN_BLOCK documents (as many as a
        whole build trains on: its first ones); None for flat and HNSW. The FDE settings and
        seed need no learning: every shard task makes them from the same build settings."""
        fde, store, doc_ids, kind = muvera_rows(corpus, settings, cls.name)
        index = FaissIndex(fde.dim, kind=kind, metric="ip", expected_count=len(doc_ids))
        if not index.needs_training:
            return None
        rows = sample_rows(len(store), TRAIN_BLOCK)
        index.train(np.vstack([fde.documents_of(store, rows[i:i + FDE_BLOCK])
                               for i in range(0, len(rows), FDE_BLOCK)]))
        return index

    @classmethod
    def create_part(cls, corpus: Corpus, settings: dict[str, Any], keep: Callable[[str], bool],
                    shared: FaissIndex | None) -> MuveraRetriever | None:
        fde, store, doc_ids, kind = muvera_rows(corpus, settings, cls.name)
        template = shared if shared is not None else FaissIndex(fde.dim, kind=kind, metric="ip")
        # The whole collection as one segment holding the cached token store's memory map and
        # no FDE: part() gathers the shard's rows and codes their FDEs with the template.
        whole = Segment.made(doc_ids, MuveraSegment(store, template), BASE)
        trained = len(doc_ids) if shared is not None else None
        return cls(fde.inner, Segments((whole,)), settings, fde, kind, trained).part(keep)

    @staticmethod
    def store_of(data: Any) -> TokenStore:
        return data.store

    # -- segments ------------------------------------------------------------------------

    def template(self) -> FaissIndex:
        """An empty FDE index trained as the base segment's was."""
        return self.segments.items[0].data.index.template()

    def index_rows(self, documents: list[Document]) -> tuple[list[str], MuveraSegment]:
        ids, store = super().index_rows(documents)
        return ids, MuveraSegment(store, fde_index(self.fde, store, ids, self.template(),
                                                   progress=False))

    def combine(self, parts: list[tuple[Segment, np.ndarray]], retrain: bool = False
                ) -> MuveraSegment:
        store = super().combine(parts)
        ids = [s.doc_ids[r] for s, rows in parts for r in rows.tolist()]
        empty = (FaissIndex(self.fde.dim, kind=self.kind, metric="ip", expected_count=len(ids))
                 if retrain else self.template())
        return MuveraSegment(store, fde_index(self.fde, store, ids, empty, progress=False))

    def write_segment(self, data: MuveraSegment, directory: Path) -> dict[str, Any] | None:
        data.store.save(directory)
        data.index.save(directory)
        return None

    def read_segment(self, directory: Path, doc_ids: list[str]) -> MuveraSegment:
        store = super().read_segment(directory, doc_ids)
        meta = {"dim": self.fde.dim, "kind": self.kind, "metric": "ip"}
        index = FaissIndex.load(directory, meta)
        if index.ids != doc_ids:
            raise IndexFormatError(f"{directory}: the FDE index and its ids disagree")
        return MuveraSegment(store, index)

    # -- searching -----------------------------------------------------------------------

    def retrieve_whole(self, queries: Queries, k: int) -> Run:
        qids = list(queries)
        tokens = self.query_matrices([queries[q] for q in qids])
        segments = self.segments
        pooled = self._fde_candidates(segments, self.fde.queries_from_tokens(tokens))
        found: list[list[tuple[str, float]]] = []
        for query, candidates in zip(tokens, pooled, strict=True):
            scorer = query if self.carve is None else ball_carve(query, self.carve)
            if self.splitter is not None:
                found.append(list(self.window_candidates(scorer, segments, candidates).items()))
                continue
            by_segment: dict[int, list[int]] = {}
            for _, position, row in candidates:
                by_segment.setdefault(position, []).append(row)
            pairs: list[tuple[str, float]] = []
            for position, rows in by_segment.items():
                segment = segments.items[position]
                scores = rerank_rows(scorer, segment.data.store, np.array(rows))
                pairs.extend((segment.doc_ids[r], s) for r, s in zip(rows, scores.tolist(),
                                                                    strict=True)
                             if np.isfinite(s))
            found.append(pairs)
        return ranked_run(qids, found, k)

    def window_candidates(self, scorer: np.ndarray, segments: Segments,
                          candidates: list[tuple[float, int, int]]) -> dict[str, float]:
        """A windowed index's candidates (the FDE top windows) as documents, each scored by
        exact Chamfer over all its windows and aggregated (``aggregate``)."""
        firsts = dict.fromkeys((position, segments.items[position].rows[
            segments.items[position].doc_ids[row]]) for _, position, row in candidates)
        scores = self.score_rows(scorer, segments, list(firsts))
        return {d: s for d, s in scores.items() if np.isfinite(s)}

    def _fde_candidates(self, segments: Segments, vectors: np.ndarray
                        ) -> list[list[tuple[float, int, int]]]:
        """Per query, the FDE top ``candidates`` over every segment: (FDE score, segment
        position, row), best first."""
        pooled: list[list[tuple[float, int, int]]] = [[] for _ in range(len(vectors))]
        for position, segment in enumerate(segments):
            if not segment.live_count:
                continue
            wanted = min(self.candidates + segment.deleted_count, len(segment))
            scores, rows = segment.data.index.search(vectors, wanted, self.settings["nprobe"],
                                                     self.settings["ef_search"])
            for out, row_scores, row_ids in zip(pooled, scores.tolist(), rows.tolist(),
                                                strict=True):
                out.extend((s, position, r) for s, r in zip(row_scores, row_ids, strict=True)
                           if r >= 0 and not segment.deleted[r])
        # Stable: with one segment, FAISS's own order among equal scores is kept.
        return [sorted(c, key=lambda hit: -hit[0])[:self.candidates] for c in pooled]

    # -- on disk -------------------------------------------------------------------------

    def save(self, directory: Path) -> dict[str, Any]:
        data = self.base_data()
        data.store.save(directory)
        ids = list(self.segments.ids())
        (directory / IDS).write_text(json.dumps(ids))
        return {"encoder": self.encoder.settings, "count": len(ids),
                "tokens": int(data.store.tokens.shape[0]), "fde": self.fde.config.to_json(),
                "index": data.index.save(directory), "candidates": self.candidates,
                "carve": self.carve, "trained_on": self.trained_on}

    @classmethod
    def open(cls, directory: Path, meta: dict[str, Any],
             settings: dict[str, Any]) -> MuveraRetriever:
        encoder, doc_ids = open_token_encoder(directory, meta, settings)
        config = FDEConfig(**meta["fde"])
        index = FaissIndex.load(directory, meta["index"], nprobe=settings["nprobe"],
                                ef_search=settings["ef_search"])
        segment = Segment.made(doc_ids, MuveraSegment(TokenStore(directory), index), BASE)
        return cls(encoder, Segments((segment,)), settings, MuveraEncoder(encoder, config),
                   meta["index"]["kind"], meta.get("trained_on"))

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], **params: Any) -> MuveraRetriever:
        # Indexes written before the settings were declared keep them in their own records.
        fde = meta["fde"]
        old = {"repetitions": fde["repetitions"], "k_sim": fde["k_sim"], "d_proj": fde["d_proj"],
               "final_dim": fde["final_dim"], "seed": fde["seed"], "index": meta["index"]["kind"],
               "candidates": meta["candidates"], "carve": meta.get("carve")}
        meta = {**meta, "params": {**old, **meta.get("params", {})}}
        return super().load(directory, meta, **params)  # type: ignore[return-value]


def muvera_rows(corpus: Corpus, settings: dict[str, Any], stage: str = "muvera"
                ) -> tuple[MuveraEncoder, TokenStore, list[str], str]:
    """(FDE encoder, the cached token store, its row ids, the FAISS kind for FDEs) of a
    ``muvera`` stage's ``corpus``; the kind chosen for the whole collection's size."""
    encoder = token_encoder(settings)
    try:
        config = FDEConfig(encoder.dim, settings["repetitions"], settings["k_sim"],
                           settings["d_proj"], True, settings["final_dim"], settings["seed"])
    except ValueError as exc:
        raise PipelineError(f"muvera: {exc}") from None
    store_dir, doc_ids = windowed_token_store(encoder, corpus, settings, stage)
    return (MuveraEncoder(encoder, config), TokenStore(store_dir), doc_ids,
            fde_index_kind(settings["index"], len(doc_ids)))


def fde_index(fde: MuveraEncoder, store: TokenStore, doc_ids: list[str], index: FaissIndex,
              progress: bool = True) -> FaissIndex:
    """``index`` holding the FDEs of every document in ``store`` (row i for ``doc_ids[i]``).

    A trained index kind learns from its first add: the first TRAIN_BLOCK documents' FDEs
    are held back for it, then the rest are added block by block."""
    pending: list[np.ndarray] = []
    for start, vectors in fde.documents_from_store(store, progress=progress):
        pending.append(vectors)
        if index.ids or start + len(vectors) >= min(TRAIN_BLOCK, len(doc_ids)):
            first = len(index.ids)
            block = np.vstack(pending)
            index.add(doc_ids[first:first + len(block)], block)
            pending = []
    return index


def fde_index_kind(index: str, count: int) -> str:
    """``auto``: exact (flat) search below AUTO_FLAT_BELOW documents, where its 40 KB per
    document is cheap, else fast-scan PQ (1,280 bytes per document at 10,240 dims), whose
    candidates matched the flat index's recall on SciFact and NFCorpus (docs/benchmarks.md)."""
    if index != "auto":
        return index
    return "flat" if count < AUTO_FLAT_BELOW else "pqfs"
