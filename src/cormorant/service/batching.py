"""Micro-batching: queries from concurrent requests share one encoder call.

On a CPU a transformer encodes a batch of 16 short queries in little more time than one, so
when requests arrive together the service waits a moment (``max_wait_ms``) to gather them and
encodes them at once. It never waits when no other search is in flight, so a lone request pays
nothing. The encoder is only ever called from one thread at a time: Hugging Face fast
tokenizers fail ("Already borrowed") when shared across threads, and two concurrent torch calls
on two cores only slow each other down.

Example:
    >>> encoder = BatchingEncoder(SentenceTransformerEncoder(), max_wait_ms=2, max_batch=32)  # doctest: +SKIP
    >>> encoder.encode_queries(["vitamin d"]).shape  # called from many threads at once  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
_STOP = object()


class BatchingEncoder:
    """Wraps an ``Encoder``; ``encode_queries`` calls from many threads are merged.

    Args:
        inner: the encoder (anything with ``encode_queries``/``encode_documents``/``dim``).
        max_wait_ms: how long the first query of a batch waits for company.
        max_batch: texts per encoder call, at most (one larger request is never split).
        enabled: False encodes each call alone (still one at a time).
        in_flight: how many searches are running now; the batch closes as soon as it holds
            that many callers, instead of waiting out ``max_wait_ms``.
        on_batch: called with each batch's number of texts (metrics).
    """

    def __init__(self, inner: Any, max_wait_ms: float = 2.0, max_batch: int = 32,
                 enabled: bool = True, in_flight: Callable[[], int] | None = None,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.inner = inner
        if hasattr(inner, "show_progress"):
            inner.show_progress = False  # a server's log is no place for progress bars
        self.max_wait = max_wait_ms / 1000.0
        self.max_batch = max_batch
        self.enabled = enabled
        self._in_flight = in_flight or (lambda: 1)
        self._on_batch = on_batch or (lambda n: None)
        self._lock = threading.Lock()  # one encoder call at a time, batched or not
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # dim, settings, fingerprint, ... are the wrapped encoder's.
        return getattr(self.inner, name)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return self.inner.encode_documents(texts)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        if not self.enabled:
            with self._lock:
                self._on_batch(len(texts))
                return self.inner.encode_queries(texts)
        self._ensure_thread()
        future: Future[np.ndarray] = Future()
        self._queue.put((list(texts), future))
        return future.result()

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="query-batcher",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch, stop = self._gather(item)
            self._encode(batch)
            if stop:
                return

    def _gather(self, first: tuple[list[str], Future]) -> tuple[list[tuple[list[str], Future]], bool]:
        batch = [first]
        size = len(first[0])
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch and len(batch) < self._in_flight():
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 \
                    else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
            size += len(item[0])
        return batch, False

    def _encode(self, batch: list[tuple[list[str], Future]]) -> None:
        texts = [t for texts, _ in batch for t in texts]
        try:
            with self._lock:
                self._on_batch(len(texts))
                vectors = self.inner.encode_queries(texts)
        except BaseException as exc:  # every caller gets the error, the batcher lives on
            for _, future in batch:
                future.set_exception(exc)
            return
        start = 0
        for texts_, future in batch:
            future.set_result(vectors[start:start + len(texts_)])
            start += len(texts_)

    def close(self) -> None:
        """Finish queued batches and stop the batching thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=30)
            self._thread = None
