"""Encoding a corpus for a build on a Ray cluster, or in this process: the same code either way.

``cormorant index build --ray auto|ADDRESS`` encodes the corpus of every ``dense`` stage of
the pipeline with Ray Data before the build: the documents (longest first, as in-process
encoding orders them, so a batch pads little) go through ``map_batches`` with
:class:`EncodeBatch`, a callable class that loads the encoder once per actor, on an actor
pool (``compute=ActorPoolStrategy(size=actors)``, Ray 2.60's current API; ``concurrency`` is
deprecated), each actor asking for ``num_gpus`` (a fraction shares one card). The vectors are
written into the embedding cache entry the ordinary build reads
(:func:`cormorant.index.embeddings.embeddings_name`), so the build that follows, and every
later ``eval`` or build over the same corpus and encoder, encodes nothing. Without ``--ray``,
:class:`InProcess` runs the same :class:`EncodeBatch` over the same batches in threads, one
encoder per thread; a laptop needs no Ray. ``import cormorant`` never imports Ray: only
:class:`RayCluster` does, when used.

Token authentication: Ray 2.60 reads ``RAY_AUTH_MODE`` and the token (``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) from the environment only; the library
leaves the environment as it is (docs/sharding.md says what to set).

Example:
    >>> prefill_embeddings("rrf(bm25, dense)", corpus, RayCluster("auto", actors=2))  # doctest: +SKIP
    >>> save_sharded_index("rrf(bm25, dense)", corpus, "indexes/x", shards=4)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from cormorant import cache, registry
from cormorant.errors import CormorantError
from cormorant.index.embeddings import KIND, embeddings_name
from cormorant.pipeline_syntax import named, parse
from cormorant.types import Corpus

log = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]
T = TypeVar("T")
R = TypeVar("R")
DEFAULT_BATCH = 256
"""Documents per ``map_batches`` call: large enough that an actor's per-call overhead is small
against MiniLM's encoding of them, small enough to spread a 5,000-document corpus over actors."""


class EncodeBatch:
    """Ray Data's callable class for ``map_batches``: loads the ``dense`` stage's document
    encoder once (per actor, or per thread in process), then encodes batches of
    ``{"row", "text"}`` into ``{"row", "vector"}``.

    Example:
        >>> worker = EncodeBatch(DenseRetriever.declared({"model": "/models/m"}))  # doctest: +SKIP
        >>> worker({"row": np.array([0]), "text": np.array(["a cat"])})["vector"].shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        from cormorant.retrieval.dense import corpus_encoder

        self.encoder = corpus_encoder(settings)

    def __call__(self, batch: Batch) -> Batch:
        vectors = self.encoder.encode_documents([str(t) for t in batch["text"]])
        return {"row": np.asarray(batch["row"], dtype=np.int64),
                "vector": np.asarray(vectors, dtype=np.float32)}


class EncodeTokens:
    """Ray Data's callable class for a ``chamfer``/``muvera`` stage's token vectors: loads its
    token encoder once per actor, then encodes ``{"row", "text"}`` into ``{"row", "tokens"}``,
    each document's (tokens x dim) matrix as float16 bytes (a column of one value per row, as
    Ray Data's batches need; the token store keeps float16 anyway).

    Example:
        >>> worker = EncodeTokens(ChamferRetriever.declared({"model": "/models/m"}))  # doctest: +SKIP
        >>> worker({"row": np.array([0]), "text": np.array(["a cat"])})["tokens"][0][:4]  # doctest: +SKIP
        b'\x1f.\xa8\xb0'
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        from cormorant.retrieval.chamfer import token_encoder

        self.encoder = token_encoder(settings)

    def __call__(self, batch: Batch) -> Batch:
        matrices = self.encoder.encode_documents([str(t) for t in batch["text"]])
        tokens = np.empty(len(matrices), dtype=object)
        tokens[:] = [np.ascontiguousarray(m, dtype=np.float16).tobytes() for m in matrices]
        return {"row": np.asarray(batch["row"], dtype=np.int64), "tokens": tokens}


Worker = type[EncodeBatch] | type[EncodeTokens]


class Runner(Protocol):
    """Where encoding batches and per-shard tasks run.

    ``map`` runs any callable here (threads); ``tasks`` runs a module-level function over
    picklable items where the runner's work runs: here for :class:`InProcess`, as Ray tasks
    on the cluster for :class:`RayCluster`. ``remote`` says whether ``tasks`` leaves this
    process (so its items must name files every host can read, not objects in memory)."""

    remote: bool

    def encode(self, settings: dict[str, Any], batches: list[Batch],
               worker: Worker = EncodeBatch) -> Iterator[Batch]: ...

    def map(self, fn: Callable[[T], R], items: list[T]) -> list[R]: ...

    def tasks(self, fn: Callable[[T], R], items: list[T]) -> list[R]: ...


class InProcess:
    """This process: ``workers`` threads, each with its own encoder (tokenizers are not
    thread-safe); one thread by default, torch using every core inside it."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise CormorantError(f"workers must be at least 1, got {workers}")
        self.workers = workers

    def encode(self, settings: dict[str, Any], batches: list[Batch],
               worker: Worker = EncodeBatch) -> Iterator[Batch]:
        local = threading.local()

        def run(batch: Batch) -> Batch:
            if not hasattr(local, "worker"):
                local.worker = worker(settings)
            return local.worker(batch)

        yield from self.map(run, batches)

    remote = False

    def map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        if self.workers == 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(fn, items))

    def tasks(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        return self.map(fn, items)


class RayCluster:
    """A Ray cluster: ``address`` ``"auto"`` (the cluster this machine is part of), a
    ``ray://`` or ``host:port`` address, or ``"local"`` (start one in this process, for
    trying it out). Encoding runs as Ray Data over an actor pool of ``actors``, each with
    ``gpus`` GPUs (0 on a CPU cluster; 0.5 puts two actors on one card).

    Per-shard tasks (:meth:`tasks`) run as Ray tasks, one CPU each, wherever the cluster
    places them; their items name files on a file system every host shares (a built stage
    holds FAISS and SQLite handles that do not pickle, so no stage is shipped).
    """

    remote = True

    def __init__(self, address: str, actors: int = 1, gpus: float = 0.0,
                 batch_size: int = DEFAULT_BATCH, init: dict[str, Any] | None = None) -> None:
        if actors < 1:
            raise CormorantError(f"--actors must be at least 1, got {actors}")
        if gpus < 0:
            raise CormorantError(f"--gpus-per-actor must be 0 or more, got {gpus}")
        self.address, self.actors, self.gpus = address, actors, gpus
        self.batch_size = batch_size
        self.init = dict(init or {})
        self.startup_seconds: float | None = None

    def start(self) -> Any:
        """Connect (or start a local cluster) once; returns the ``ray`` module."""
        try:
            import ray
        except ImportError:
            raise CormorantError("--ray needs Ray: pip install 'cormorant[ray]'") from None
        if not ray.is_initialized():
            began = time.perf_counter()
            address = None if self.address == "local" else self.address
            try:
                ray.init(address=address, log_to_driver=False, **self.init)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise CormorantError(f"cannot join the Ray cluster at {self.address!r}:"
                                     f" {str(exc).splitlines()[0][:200]}") from None
            self.startup_seconds = time.perf_counter() - began
        return ray

    def encode(self, settings: dict[str, Any], batches: list[Batch],
               worker: Worker = EncodeBatch) -> Iterator[Batch]:
        ray = self.start()
        items = [{"row": int(r), "text": str(t)} for b in batches
                 for r, t in zip(b["row"], b["text"], strict=True)]
        extra = {"num_gpus": self.gpus} if self.gpus else {}
        data = ray.data.from_items(items).map_batches(
            worker, fn_constructor_kwargs={"settings": settings},
            batch_size=self.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.actors), **extra)
        yield from data.iter_batches(batch_size=None, batch_format="numpy")

    def map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        return InProcess(min(len(items), 4) or 1).map(fn, items)

    def tasks(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        """``fn`` over ``items`` as one Ray task each, results in ``items``' order.

        Raises:
            CormorantError: a task failed (its error, first line).
        """
        ray = self.start()
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        try:
            return list(ray.get([remote.remote(item) for item in items]))
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, CormorantError):  # a task's own error, as raised there
                raise exc.cause from None
            raise CormorantError(f"a Ray task failed: {str(exc).splitlines()[0][:300]}") from None


def runner_for(ray: str | None, actors: int = 1, gpus: float = 0.0) -> Runner:
    """The runner the CLI's ``--ray``, ``--actors`` and ``--gpus-per-actor`` ask for."""
    if ray is None:
        if gpus:
            raise CormorantError("--gpus-per-actor needs --ray")
        return InProcess(actors)
    return RayCluster(ray, actors, gpus)


def length_sorted_batches(corpus: Corpus, size: int) -> list[Batch]:
    """The corpus as ``{"row", "text"}`` batches of ``size``, longest text first."""
    texts = [d.contents for d in corpus]
    order = np.argsort(-np.fromiter(map(len, texts), np.int64, len(texts)), kind="stable")
    return [{"row": rows, "text": np.array([texts[r] for r in rows.tolist()], dtype=object)}
            for rows in (order[i:i + size] for i in range(0, len(order), size))]


def prefill_embeddings(text: str, corpus: Corpus, runner: Runner,
                       batch_size: int = DEFAULT_BATCH) -> list[Path]:
    """Encode ``corpus`` for every ``dense`` stage of pipeline ``text`` whose embeddings are
    not cached yet, and every ``chamfer``/``muvera`` stage whose token store is not, with
    ``runner``, into the cache entries its build reads; returns them.

    Raises:
        CormorantError: a worker returned fewer vectors than documents.
    """
    from cormorant.retrieval.chamfer import ChamferRetriever
    from cormorant.retrieval.dense import DenseRetriever, corpus_encoder
    from cormorant.retrieval.windows import splitter_of, window_corpus

    filled = []
    for node in named(parse(text)):
        cls = registry.stage_class(node.name)
        if issubclass(cls, ChamferRetriever):  # muvera too: the same token store
            filled.extend(prefill_tokens(cls, cls.declared(node.params), corpus, runner,
                                         batch_size))
        if not issubclass(cls, DenseRetriever):
            continue
        settings = cls.declared(node.params)
        if not settings["cache"]:
            continue
        encoder = corpus_encoder(settings)  # its settings name the cache entry
        # A windowed stage (passages=) encodes, and caches, its documents' windows.
        splitter = splitter_of(encoder, settings["passages"], cls.name)
        texts = corpus if splitter is None else window_corpus(splitter, corpus)[0]
        name = embeddings_name(encoder.settings, texts)
        if cache.lookup(KIND, name) is not None:
            continue
        with cache.write(KIND, name) as tmp:
            _encode_into(tmp, (len(texts), encoder.dim), runner.encode(
                settings, length_sorted_batches(texts, batch_size)))
        filled.append(cache.entry(KIND, name))
    return filled


def prefill_tokens(cls: type[Any], settings: dict[str, Any], corpus: Corpus, runner: Runner,
                   batch_size: int = DEFAULT_BATCH) -> list[Path]:
    """The token store a ``chamfer``/``muvera`` stage (``cls``, built with ``settings``) reads,
    encoded by ``runner`` when it is not cached yet; returns it if it was encoded.

    Example:
        >>> prefill_tokens(ChamferRetriever, settings, corpus, RayCluster("auto", 2))  # doctest: +SKIP
        [PosixPath('~/.cache/cormorant/tokens/...')]
    """
    from cormorant.retrieval.chamfer import token_encoder, windowed_token_store

    encoder = token_encoder(settings)  # its settings name the cache entry, its dim the rows
    asked: list[bool] = []

    def encode(texts: Corpus) -> Iterator[np.ndarray]:
        asked.append(True)
        return _tokens_in_order(runner.encode(settings, length_sorted_batches(texts, batch_size),
                                              EncodeTokens), len(texts), encoder.dim)

    store, _ = windowed_token_store(encoder, corpus, settings, cls.name, encode)
    return [store] if asked else []


def _tokens_in_order(batches: Iterator[Batch], count: int, dim: int) -> Iterator[np.ndarray]:
    """Per-document token matrices in row order, from batches in any order: their bytes are
    spooled to a scratch file as they come (a token store outgrows memory), then read back in
    row order."""
    import tempfile

    where = np.full(count, -1, dtype=np.int64)
    sizes = np.zeros(count, dtype=np.int64)
    with tempfile.TemporaryFile() as scratch:
        written = 0
        for batch in batches:
            for row, data in zip(batch["row"].tolist(), batch["tokens"], strict=True):
                where[row], sizes[row] = written, len(data)
                scratch.write(data)
                written += len(data)
        if (where < 0).any():
            raise CormorantError(f"token encoding returned {int((where >= 0).sum()):,} of"
                                 f" {count:,} documents")
        scratch.flush()
        if written == 0:
            yield from (np.zeros((0, dim), np.float32) for _ in range(count))
            return
        spool = np.memmap(scratch, dtype=np.uint8, mode="r", shape=(written,))
        for start, size in zip(where.tolist(), sizes.tolist(), strict=True):
            yield np.frombuffer(spool[start:start + size], dtype=np.float16).reshape(-1, dim)


def _encode_into(path: Path, shape: tuple[int, int], batches: Iterator[Batch]) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    seen = np.zeros(shape[0], dtype=bool)
    for batch in batches:
        out[batch["row"]] = batch["vector"]
        seen[batch["row"]] = True
    if not seen.all():
        raise CormorantError(f"encoding returned {int(seen.sum()):,} of {shape[0]:,} vectors")
    out.flush()
