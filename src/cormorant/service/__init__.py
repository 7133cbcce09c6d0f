"""The REST service: FastAPI app factory, routes, schemas, settings, auth and live writes.

Example:
    >>> from cormorant.service import create_app, load_settings  # doctest: +SKIP
    >>> app = create_app(load_settings("service.yaml"))  # doctest: +SKIP
"""

import os

# Searches run on many threads while one thread encodes (micro-batching). OpenMP's default
# is to spin-wait after every parallel region, so idle FAISS and torch thread teams spin on the
# two cores the working thread needs: measured here, micro-batched throughput fell from 60 to
# 5 requests/s at concurrency 8. Sleeping waiters cost nothing measurable. It must be set
# before torch or FAISS load their OpenMP runtime, which importing this package does not do.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from cormorant.service.app import create_app  # noqa: E402
from cormorant.service.settings import ServiceSettings, load_settings  # noqa: E402

__all__ = ["ServiceSettings", "create_app", "load_settings"]
