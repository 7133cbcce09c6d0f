"""Per-key admission: how many requests a key has in flight, and how fast it may send them.

A key over either limit gets a 429 with ``Retry-After`` at once, before any work, so one busy
client backs off instead of filling the search threads that every other client shares.

Example:
    >>> limiter = KeyLimiter(max_in_flight=2, rate=10.0, burst=20)
    >>> limiter.admit("app") is None  # None: admitted; else seconds to wait
    True
    >>> limiter.enter("app") is None
    True
    >>> limiter.leave("app")
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field


@dataclass
class _Bucket:
    tokens: float
    updated: float = field(default_factory=time.monotonic)
    in_flight: int = 0


class KeyLimiter:
    """A token bucket (``rate`` per second, ``burst`` at most) and an in-flight count per key."""

    def __init__(self, max_in_flight: int, rate: float, burst: int) -> None:
        self.max_in_flight, self.rate, self.burst = max_in_flight, rate, burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, key: str) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 100_000:  # many addresses with open reads: forget idle ones
                self._buckets = {k: b for k, b in self._buckets.items() if b.in_flight}
            bucket = self._buckets[key] = _Bucket(float(self.burst))
        return bucket

    def admit(self, key: str) -> float | None:
        """Take one request's token: ``None`` if there was one, else the seconds until there is."""
        with self._lock:
            bucket = self._bucket(key)
            now = time.monotonic()
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return None
            return (1 - bucket.tokens) / self.rate

    def enter(self, key: str) -> int | None:
        """Count one more request in flight: ``None`` if under the limit, else the limit."""
        with self._lock:
            bucket = self._bucket(key)
            if bucket.in_flight >= self.max_in_flight:
                return self.max_in_flight
            bucket.in_flight += 1
            return None

    def leave(self, key: str) -> None:
        with self._lock:
            self._bucket(key).in_flight -= 1


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
