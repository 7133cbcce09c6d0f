"""Prometheus metrics of one app: requests, latency, errors, index sizes, encoder batches.

Each app has its own registry, so several apps in one process (tests) do not share counts.

Example:
    >>> metrics = Metrics()
    >>> metrics.observe_request("GET", "/healthz", 200, 0.001)
    >>> b"cormorant_requests_total" in metrics.render()
    True
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401  (re-exported)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The service's counters and histograms, rendered in Prometheus' text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("cormorant_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.errors = Counter("cormorant_request_errors", "Requests answered 4xx or 5xx",
                              ["route", "status"], registry=self.registry)
        self.latency = Histogram("cormorant_request_seconds", "Request latency",
                                 ["method", "route"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.batch = Histogram("cormorant_encoder_batch_texts", "Query texts per encoder call",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.in_flight = Gauge("cormorant_searches_in_flight", "Searches running now",
                               registry=self.registry)
        self.documents = Gauge("cormorant_index_documents", "Searchable documents per index",
                               ["index"], registry=self.registry)
        self.version = Gauge("cormorant_index_version", "Live writes applied per index",
                             ["index"], registry=self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def track_index(self, name: str, count: Callable[[], int], version: Callable[[], int]) -> None:
        """Report an index's size and version whenever metrics are scraped."""
        self.documents.labels(name).set_function(count)
        self.version.labels(name).set_function(version)

    def render(self) -> bytes:
        return generate_latest(self.registry)
