"""Exact late-interaction (MaxSim / Chamfer) retrieval by brute force: the ``chamfer`` stage.

score(Q, D) = sum over query tokens q of max over document tokens d of <q, d>. Documents are
scored in blocks: one float32 matrix product per block of contiguous token rows, then a
per-document max (``np.maximum.reduceat``). This is the fastest honest exact search on a CPU
and the oracle that approximate multi-vector retrieval (MUVERA) is measured against.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cormorant import cache
from cormorant.errors import CormorantError, IndexFormatError, PipelineError
from cormorant.index.segments import BASE, Segment, Segments, by_segment
from cormorant.index.token_store import TokenStore, write_token_store
from cormorant.params import BUILD, Param, Params
from cormorant.retrieval.backends import BACKENDS, QUANTIZATIONS, Runtime
from cormorant.retrieval.base import Retriever
from cormorant.retrieval.encoders import model_fingerprint, resolve_model, same_model
from cormorant.retrieval.multivector import (
    MultiVectorEncoder,
    SharedQueries,
    load_token_encoder,
)
from cormorant.retrieval.segmented import SegmentedRetriever
from cormorant.retrieval.windows import (
    LongQueries,
    Splitter,
    all_windows,
    group_starts,
    reduce_groups,
    splitter_of,
    window_corpus,
    window_params,
    window_scores,
)
from cormorant.types import Corpus, Document, Queries, Run

log = logging.getLogger(__name__)
IDS = "doc_ids.json"
BLOCK_TOKENS = 1 << 16  # document token rows per matrix product
QUERY_CHUNK = 64  # queries per matrix product: with BLOCK_TOKENS, ~0.4 GB of similarities


def chamfer_scores(query: np.ndarray, tokens: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Chamfer score of ``query`` against each document of a block.

    ``tokens`` holds the block's documents' rows back to back; ``starts[i]`` is where
    document i begins. A document with no tokens scores -inf.
    """
    lengths = np.diff(np.append(starts, tokens.shape[0]))
    scores = np.full(len(starts), -np.inf, dtype=np.float32)
    present = lengths > 0
    if not present.any():
        return scores
    sims = query @ tokens.T  # (query tokens x block tokens)
    maxima = np.maximum.reduceat(sims, starts[present], axis=1)
    scores[present] = maxima.sum(axis=0)
    return scores


def batch_chamfer_scores(queries: list[np.ndarray], tokens: np.ndarray,
                         starts: np.ndarray) -> np.ndarray:
    """Chamfer scores of several queries against one block: one matrix product for all.

    Returns (queries x documents); a query with no tokens scores 0, a document with none -inf.
    """
    scores = np.full((len(queries), len(starts)), -np.inf, dtype=np.float32)
    lengths = np.diff(np.append(starts, tokens.shape[0]))
    present = lengths > 0
    sizes = np.array([len(q) for q in queries])
    if not present.any():
        return scores
    if not sizes.any():
        scores[:, present] = 0.0
        return scores
    stacked = np.concatenate([q for q in queries if len(q)])
    maxima = np.maximum.reduceat(stacked @ tokens.T, starts[present], axis=1)  # rows: q tokens
    offsets = np.concatenate([[0], np.cumsum(sizes[sizes > 0])[:-1]])
    scores[np.ix_(sizes > 0, present)] = np.add.reduceat(maxima, offsets, axis=0)
    scores[np.ix_(sizes == 0, present)] = 0.0
    return scores


def rerank_rows(query: np.ndarray, store: TokenStore, rows: np.ndarray) -> np.ndarray:
    """Exact Chamfer scores of ``query`` against the stored documents ``rows``.

    The candidates' tokens are read in one gather and scored in one matrix product.
    """
    if not len(rows):
        return np.zeros(0, dtype=np.float32)
    tokens, starts = store.gather(rows)
    return chamfer_scores(query, tokens, starts)


def exact_search(store: TokenStore, queries: list[np.ndarray], k: int,
                 windows: tuple[np.ndarray, str] | None = None
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Brute-force Chamfer search: per query, (rows, scores) of its ``k`` best documents.

    Queries go in chunks of QUERY_CHUNK, each scored against every block of about
    BLOCK_TOKENS document rows in one float32 matrix product; only a chunk's scores are held.
    Documents with no tokens never appear. With ``windows`` (the rows where each document's
    windows begin, and the aggregate), the rows are windows: every window is scored, so each
    document's MaxP, FirstP or SumP is exact, and the rows returned are documents' first.

    Example:
        >>> exact_search(store, encoder.encode_queries(["vitamin d"]), 10)  # doctest: +SKIP
    """
    k = min(k, len(store) if windows is None else len(windows[0]))
    blocks = token_blocks(store.offsets)
    results: list[tuple[np.ndarray, np.ndarray]] = []
    for first in range(0, len(queries), QUERY_CHUNK):
        chunk = queries[first:first + QUERY_CHUNK]
        scores = np.full((len(chunk), len(store)), -np.inf, dtype=np.float32)
        for start, stop in blocks:
            tokens, starts = store.block(start, stop)
            scores[:, start:stop] = batch_chamfer_scores(chunk, tokens, starts)
        for row in scores:
            if windows is None:
                results.append(_best(row, k))
            else:
                starts, how = windows
                groups, best = _best(reduce_groups(row, starts, how), k)
                results.append((starts[groups], best))
    return results


def _best(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best finite entries of ``scores``: (positions, scores), best first."""
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    top = top[np.argsort(-scores[top], kind="stable")]
    top = top[np.isfinite(scores[top])]
    return top, scores[top]


def token_blocks(offsets: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous document ranges of about BLOCK_TOKENS token rows each."""
    bounds, start, count = [], 0, len(offsets) - 1
    while start < count:
        stop = int(np.searchsorted(offsets, offsets[start] + BLOCK_TOKENS, side="right")) - 1
        stop = min(max(stop, start + 1), count)
        bounds.append((start, stop))
        start = stop
    return bounds


class ChamferRetriever(LongQueries, SegmentedRetriever):
    """Exact late interaction (``chamfer``): MaxSim over stored float16 token vectors, the
    oracle for ``muvera``; the model is a sentence-transformers folder or a ColBERT checkpoint.
    Takes writes: each write's token vectors are a new segment of the token store.

    Example:
        >>> exact = ChamferRetriever.build(corpus)  # doctest: +SKIP
        >>> exact.search("vitamin d and depression", k=10)  # doctest: +SKIP
    """

    name: ClassVar[str] = "chamfer"
    PARAMS: ClassVar[Params] = Retriever.PARAMS + Params(
        Param("model", str, None, "token encoder: a sentence-transformers or ColBERT folder"
              " (default all-MiniLM-L6-v2)", when=BUILD, nullable=True, same=same_model),
        Param("max_length", int, None, "tokens kept per document (default: the model's)",
              when=BUILD, nullable=True, low=1),
        Param("batch_size", int, 32, "texts per encoder batch", low=1),
        Param("backend", str, "torch", "runs the token encoder: torch, onnx or openvino",
              when=BUILD, choices=BACKENDS),
        Param("quantize", str, "none", "token encoder precision on onnx/openvino: none, int8"
              " or int8-static", when=BUILD, choices=QUANTIZATIONS),
    ) + window_params()

    def __init__(self, encoder: MultiVectorEncoder, segments: Segments,
                 settings: dict[str, Any]) -> None:
        super().__init__(settings, segments)
        self.encoder = encoder
        self.splitter = splitter_of(encoder, settings["passages"], self.name)
        self.query_splitter = splitter_of(encoder, settings["query_passages"], self.name,
                                          "query_passages", queries=True)

    @classmethod
    def create(cls, corpus: Corpus, settings: dict[str, Any]) -> ChamferRetriever:
        encoder = token_encoder(settings)
        store, doc_ids = windowed_token_store(encoder, corpus, settings, cls.name)
        return cls(encoder, Segments((Segment.made(doc_ids, TokenStore(store), BASE),)),
                   settings)

    @classmethod
    def identity(cls, settings: dict[str, Any]) -> dict[str, Any]:
        return {**settings, "fingerprint": model_fingerprint(resolve_model(settings["model"]))}

    @classmethod
    def builds_parts(cls, settings: dict[str, Any]) -> bool:
        return True  # the token store is always cached; it learns nothing

    @classmethod
    def create_part(cls, corpus: Corpus, settings: dict[str, Any], keep: Callable[[str], bool],
                    shared: Any) -> SegmentedRetriever | None:
        # The whole stage is the cached store's memory map: only the shard's rows are read.
        return cls.create(corpus, settings).part(keep)

    @staticmethod
    def store_of(data: Any) -> TokenStore:
        """The token store in a segment's data."""
        return data

    # -- segments ------------------------------------------------------------------------

    def index_documents(self, documents: list[Document]) -> Any:
        return self.index_rows(documents)[1]

    def index_rows(self, documents: list[Document]) -> tuple[list[str], Any]:
        if self.splitter is None:
            texts, ids = [d.contents for d in documents], [d.doc_id for d in documents]
        else:
            texts, ids = self.splitter.split_documents(documents)
        matrices = self.encoder.encode_documents(texts)
        return ids, TokenStore.from_matrices(matrices, self.encoder.dim)

    def combine(self, parts: list[tuple[Segment, np.ndarray]], retrain: bool = False) -> Any:
        return TokenStore.combined([(self.store_of(s.data), rows) for s, rows in parts])

    def write_segment(self, data: Any, directory: Path) -> dict[str, Any] | None:
        data.save(directory)
        return None

    def read_segment(self, directory: Path, doc_ids: list[str]) -> Any:
        store = TokenStore(directory)
        if len(store) != len(doc_ids):
            raise IndexFormatError(f"{directory}: the token store and its ids disagree")
        return store

    # -- searching -----------------------------------------------------------------------

    shared_queries: SharedQueries | None = None
    """Set on every shard's copy of a sharded stage: the queries are encoded by one shard."""

    def query_matrices(self, texts: list[str]) -> list[np.ndarray]:
        """The queries' token matrices (encoded once between a sharded stage's shards)."""
        if self.shared_queries is None:
            return self.encoder.encode_queries(texts)  # type: ignore[no-any-return]
        return self.shared_queries.encode(self.encoder, texts)

    def retrieve_whole(self, queries: Queries, k: int) -> Run:
        qids = list(queries)
        matrices = self.query_matrices([queries[q] for q in qids])
        found: list[list[tuple[str, float]]] = [[] for _ in qids]
        for segment in self.segments:
            if not segment.live_count:
                continue
            wanted = k + segment.deleted_count  # deleted rows are dropped after the search
            windows = None if self.splitter is None else \
                (group_starts(segment.doc_ids), self.settings["aggregate"])
            hits = exact_search(self.store_of(segment.data), matrices, wanted, windows)
            for out, (rows, scores) in zip(found, hits, strict=True):
                out.extend((segment.doc_ids[r], s) for r, s in zip(rows.tolist(), scores.tolist(),
                                                                   strict=True)
                           if not segment.deleted[r])
        return ranked_run(qids, found, k)

    def rescore_whole(self, queries: Queries, candidates: Run) -> Run:
        segments = self.segments
        qids = list(queries)
        matrices = self.query_matrices([queries[q] for q in qids])
        run = Run()
        for qid, query in zip(qids, matrices, strict=True):
            located = [w for _, w in segments.locate_each(candidates.get(qid, {}))]
            run[qid] = self.score_rows(query, segments, located)
        return run

    def score_rows(self, query: np.ndarray, segments: Segments,
                   located: list[tuple[int, int]]) -> dict[str, float]:
        """Exact Chamfer scores of the documents whose first rows are ``located`` (segment
        position, row); a windowed document's aggregates all its windows'."""
        if self.splitter is not None:
            located = all_windows(segments, located)
        owners: list[str] = []
        scores: list[np.ndarray] = []
        for position, wanted in by_segment(located).items():
            segment = segments.items[position]
            rows = [located[i][1] for i in wanted]
            scores.append(rerank_rows(query, self.store_of(segment.data), np.array(rows)))
            owners.extend(segment.doc_ids[r] for r in rows)
        if not scores:
            return {}
        return window_scores(owners, np.concatenate(scores), self.settings["aggregate"])

    # -- on disk -------------------------------------------------------------------------

    def save(self, directory: Path) -> dict[str, Any]:
        store = self.store_of(self.base_data())
        store.save(directory)
        ids = list(self.segments.ids())
        (directory / IDS).write_text(json.dumps(ids))
        return {"encoder": self.encoder.settings, "count": len(ids),
                "tokens": int(store.tokens.shape[0])}

    @classmethod
    def open(cls, directory: Path, meta: dict[str, Any],
             settings: dict[str, Any]) -> ChamferRetriever:
        encoder, doc_ids = open_token_encoder(directory, meta, settings)
        base = Segment.made(doc_ids, TokenStore(directory), BASE)
        return cls(encoder, Segments((base,)), settings)


def token_encoder(settings: dict[str, Any]) -> Any:
    """The token encoder a ``chamfer``/``muvera`` stage's build settings ask for (what its
    build encodes documents with, in this process or on a Ray actor)."""
    return load_token_encoder(settings["model"], batch_size=settings["batch_size"],
                              max_length=settings["max_length"], runtime=token_runtime(settings))


def token_runtime(settings: dict[str, Any]) -> Runtime:
    """The runtime a token stage's settings ask for (older indexes recorded none: torch)."""
    return Runtime(settings.get("backend", "torch"), settings.get("quantize", "none"))


def open_token_encoder(directory: Path, meta: dict[str, Any],
                  settings: dict[str, Any]) -> tuple[Any, list[str]]:
    """The token encoder a stored stage was built with, checked, and its document ids."""
    built = meta["encoder"]
    model = settings["model"] or built["model"]
    encoder = load_token_encoder(model, batch_size=settings["batch_size"],
                                 max_length=built.get("max_length", built.get("doc_maxlen")),
                                 runtime=token_runtime(settings))
    if encoder.fingerprint != built["fingerprint"]:
        raise PipelineError(f"index {directory.parent} was built with encoder"
                            f" {built['model']!r}; queries encoded with {model!r} would"
                            " not match its vectors")
    try:
        doc_ids = json.loads((directory / IDS).read_text())
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{directory}: cannot read document ids ({exc})") from None
    return encoder, doc_ids


def windowed_token_store(encoder: MultiVectorEncoder, corpus: Corpus, settings: dict[str, Any],
                         stage: str, encode: TokenSource | None = None) -> tuple[Path, list[str]]:
    """The cached token store of ``corpus`` (of its windows with ``passages``) and its row
    ids (each window under its document's id); ``encode``: see :func:`cached_token_store`."""
    splitter: Splitter | None = splitter_of(encoder, settings["passages"], stage)
    if splitter is None:
        store = cached_token_store(encoder, corpus, encode)
        return store, json.loads((store / IDS).read_text())
    windows, owners = window_corpus(splitter, corpus)
    return cached_token_store(encoder, windows, encode), owners


def ranked_run(qids: list[str], found: list[list[tuple[str, float]]], k: int) -> Run:
    """Each query's ``k`` best (doc id, score) pairs; ties broken by document id, so a run does
    not depend on the store's (or an index's, or the segments') row order."""
    run = Run()
    for qid, pairs in zip(qids, found, strict=True):
        run[qid] = dict(sorted(pairs, key=lambda item: (-item[1], item[0]))[:k])
    return run


TokenSource = Callable[[Corpus], Iterable[np.ndarray]]
"""Encodes a corpus into one token matrix per document, in corpus order."""


def cached_token_store(encoder: MultiVectorEncoder, corpus: Corpus,
                       encode: TokenSource | None = None) -> Path:
    """The corpus's token store, encoded once per (encoder, corpus) and cached on disk:
    here by ``encoder``, or by ``encode`` (a Ray actor pool's, from
    :mod:`cormorant.retrieval.distributed`) into the same entry."""
    key = cache.key({"encoder": encoder.settings, "corpus": corpus.fingerprint})
    path = cache.lookup("tokens", key)
    if path is not None and (path / IDS).is_file():
        return path

    def matrices() -> Any:
        from tqdm.auto import tqdm

        with tqdm(total=len(corpus), desc="token vectors", unit="doc") as bar:
            for batch in corpus.batches(256):
                yield from encoder.encode_documents([d.contents for d in batch])
                bar.update(len(batch))

    with cache.write("tokens", key, directory=True) as tmp:
        written = write_token_store(tmp, matrices() if encode is None else encode(corpus),
                                    encoder.dim)
        if written != len(corpus):
            raise CormorantError(f"token encoding returned {written:,} of {len(corpus):,}"
                                 " documents")
        (tmp / IDS).write_text(json.dumps([d.doc_id for d in corpus]))
    return cache.entry("tokens", key)


__all__ = ["ChamferRetriever", "TokenSource", "cached_token_store", "token_encoder",
           "windowed_token_store", "chamfer_scores", "exact_search",
           "open_token_encoder", "ranked_run", "rerank_rows"]
