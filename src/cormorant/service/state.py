"""The service's running state: loaded indexes, worker threads, encoders, keys and metrics.

Indexes load in a background thread once the server starts, so ``/healthz`` answers at once and
``/readyz`` says 503 until every index and model is in memory (or names what failed).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cormorant.errors import CormorantError
from cormorant.index.format import read_meta
from cormorant.retrieval.assemble import validate
from cormorant.service.auth import KeyRing
from cormorant.service.batching import BatchingEncoder
from cormorant.service.limiter import KeyLimiter
from cormorant.service.metrics import Metrics
from cormorant.service.served import ServedIndex
from cormorant.service.settings import ServiceSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
IndexOpener = Callable[..., ServedIndex]
"""Opens one configured index to serve: ``(name, path, pipelines, verify=, encoder_wrapper=)``,
as :meth:`ServedIndex.open` (the default; Ray Serve's ingress passes one that reaches the
shards' deployments)."""


class SearchTimeout(Exception):
    """A search ran past ``request_timeout_s``."""


class ServiceState:
    """Everything the routes share. Created by :func:`cormorant.service.create_app`."""

    def __init__(self, settings: ServiceSettings, opener: IndexOpener | None = None) -> None:
        self.settings = settings
        self.opener: IndexOpener = opener or ServedIndex.open
        check_settings(settings)
        self.keys = KeyRing(settings.api_keys)
        limits = settings.limits
        self.limiter = KeyLimiter(limits.max_in_flight_per_key,
                                  limits.requests_per_second_per_key, limits.burst_per_key)
        self.metrics = Metrics()
        self.indexes: dict[str, ServedIndex] = {}
        self.status: dict[str, str] = {name: "loading" for name in settings.indexes}
        self.ready = threading.Event()
        self.failed: str | None = None
        self._in_flight = 0
        self._count_lock = threading.Lock()
        self._batchers: list[BatchingEncoder] = []
        self.searches = ThreadPoolExecutor(settings.search_threads, thread_name_prefix="search")
        # Writes get their own threads so they never queue behind a burst of searches.
        self.writes = ThreadPoolExecutor(2, thread_name_prefix="write")
        self.metrics.in_flight.set_function(lambda: self._in_flight)

    # -- loading ---------------------------------------------------------------------------

    def start_loading(self) -> None:
        threading.Thread(target=self.load_all, name="index-loader", daemon=True).start()

    def load_all(self) -> None:
        """Open every configured index; ``ready`` is set when all were tried. One that fails
        is reported on /readyz and answers 503; the others are served."""
        try:
            for name in self.settings.indexes:
                self._load(name)
        finally:
            self.ready.set()

    def _load(self, name: str) -> None:
        config = self.settings.indexes[name]
        start = time.perf_counter()
        try:
            index = self.opener(name, config.path, config.pipelines,
                                verify=self.settings.verify_checksums,
                                encoder_wrapper=self._batching)
        except CormorantError as exc:
            self._fail(name, str(exc))
            return
        except Exception as exc:  # a bug or a broken file: say so on /readyz, keep serving
            log.exception("loading index %s failed", name)
            self._fail(name, f"{type(exc).__name__}: {exc}")
            return
        self.indexes[name] = index
        self.status[name] = "ready"
        self.metrics.track_index(name, lambda: index.count, lambda: index.version)
        log.info("index %s ready: %d documents in %.1fs", name, index.count,
                 time.perf_counter() - start)

    def _fail(self, name: str, message: str) -> None:
        self.status[name] = "failed"
        self.failed = "; ".join(filter(None, [self.failed, f"index {name!r}: {message}"]))
        log.error("index %s failed to load: %s", name, message)

    def _batching(self, encoder: Any) -> BatchingEncoder:
        config = self.settings.micro_batching
        batcher = BatchingEncoder(encoder, config.max_wait_ms, config.max_batch_size,
                                  enabled=config.enabled, in_flight=lambda: self._in_flight,
                                  on_batch=self.metrics.batch.observe)
        self._batchers.append(batcher)
        return batcher

    @property
    def is_ready(self) -> bool:
        return self.ready.is_set() and self.failed is None

    # -- running work off the event loop ---------------------------------------------------

    async def search(self, work: Callable[[threading.Event], T]) -> T:
        """Run ``work(cancel)`` on a search thread, cut off after ``request_timeout_s``.

        On a timeout ``cancel`` is set: work that checks it between steps stops there, so a
        timed-out search gives its thread back instead of running on for nobody."""
        cancel = threading.Event()

        def counted() -> T:
            with self._count_lock:
                self._in_flight += 1
            try:
                return work(cancel)
            finally:
                with self._count_lock:
                    self._in_flight -= 1

        future = self.searches.submit(counted)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future),
                                          self.settings.request_timeout_s)
        except TimeoutError:
            cancel.set()
            future.cancel()  # not started yet: it never will
            raise SearchTimeout from None

    async def write(self, work: Callable[[], T]) -> T:
        """Run a write on a write thread. No timeout: once logged, a write completes, and the
        client must not be told it failed when it did not."""
        return await asyncio.wrap_future(self.writes.submit(work))

    def close(self) -> None:
        """Finish in-flight work, then release encoders, stores and locks."""
        self.searches.shutdown(wait=True)
        self.writes.shutdown(wait=True)
        for batcher in self._batchers:
            batcher.close()
        for index in self.indexes.values():
            index.close()


def check_settings(settings: ServiceSettings) -> None:
    """Fail before serving on what can be checked cheaply: paths and pipeline names.

    Raises:
        CormorantError: naming the index and what is wrong with it.
    """
    for name, config in settings.indexes.items():
        try:
            read_meta(config.path, verify=False)
            for text in config.pipelines:
                validate(text)
        except CormorantError as exc:
            raise CormorantError(f"index {name!r}: {exc}") from None
