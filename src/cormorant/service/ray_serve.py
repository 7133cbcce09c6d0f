"""``cormorant serve --ray``: a sharded index served on Ray Serve.

The application, for each sharded index served:

- per shard, a writer deployment (one replica: the shard's lock, write-ahead log and document
  store) and a reader deployment (``replicas`` replicas following the writer's log), both
  :class:`~cormorant.service.shard_server.ShardServer`;
- one ingress deployment running the service's FastAPI app (:func:`create_app`) unchanged,
  whose router reaches the shards through their ``DeploymentHandle``s
  (:class:`~cormorant.service.shard_client.ServeShard`). Indexes that are not sharded are
  served inside the ingress, as without Ray.

The ingress builds its app in the replica (``@serve.ingress()`` with
``__serve_build_asgi_app__``), not in the driver: the app's state holds thread pools and the
shard handles, which do not pickle, and its routes are module-level functions (no class-based
routes for ``@serve.ingress(app)`` to bind).

Importing this module imports Ray; ``cormorant serve`` imports it only with ``--ray``.

Example:
    >>> app = build_application(settings, replicas=2)  # doctest: +SKIP
    >>> serve.run(app, name="cormorant", route_prefix="/")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray import serve

from cormorant.errors import CormorantError
from cormorant.index.format import read_meta
from cormorant.index.sharding import SHARDED_KIND
from cormorant.retrieval.shard_index import shard_folders
from cormorant.service.app import create_app
from cormorant.service.served import ServedIndex
from cormorant.service.settings import ServiceSettings
from cormorant.service.shard_client import ServeShard, open_served_sharded
from cormorant.service.shard_server import ShardServer

log = logging.getLogger(__name__)
APP_NAME = "cormorant"


@serve.ingress()
class Ingress:
    """The service's FastAPI app, its sharded indexes reached through their shards' handles:
    ``shards[name]`` is a list of (folder, writer handle, reader handle), one per shard."""

    def __init__(self, settings: ServiceSettings,
                 shards: dict[str, list[tuple[str, Any, Any]]]) -> None:
        self.settings, self.shards = settings, shards

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.settings, opener=self.open_index)

    def open_index(self, name: str, path: str | Path, pipelines: list[str] | None = None,
                   **options: Any) -> ServedIndex:
        """A sharded index through its shard deployments; any other in this process."""
        if name not in self.shards:
            return ServedIndex.open(name, path, pipelines, **options)
        clients = [ServeShard(folder, writer, reader)
                   for folder, writer, reader in self.shards[name]]
        return ServedIndex.from_handle(name, open_served_sharded(path, clients), pipelines)


def build_application(settings: ServiceSettings, replicas: int = 1,
                      replica_cpus: float = 1.0) -> Any:
    """The Serve application for ``settings``: an ingress over every configured index, and
    for each sharded one a writer and ``replicas`` readers per shard.

    Raises:
        CormorantError: ``replicas`` < 1, or a sharded index whose shards do not check out.
    """
    if replicas < 1:
        raise CormorantError(f"--replicas must be at least 1, got {replicas}")
    if replica_cpus < 0:
        raise CormorantError(f"--replica-cpus must be 0 or more, got {replica_cpus}")
    shard = serve.deployment(ShardServer, ray_actor_options={"num_cpus": replica_cpus})
    bound: dict[str, list[tuple[str, Any, Any]]] = {}
    for name, config in settings.indexes.items():
        meta = read_meta(config.path, verify=False)
        if meta.get("kind") != SHARDED_KIND:
            continue
        bound[name] = []
        for number, (folder, leaves) in enumerate(shard_folders(Path(config.path), meta)):
            args = (str(folder), leaves)
            writer = shard.options(name=f"{name}-{number}-writer", num_replicas=1).bind(
                *args, write=True, verify=settings.verify_checksums)
            reader = shard.options(name=f"{name}-{number}-reader", num_replicas=replicas).bind(
                *args, write=False, verify=settings.verify_checksums)
            bound[name].append((str(folder), writer, reader))
    ingress = serve.deployment(Ingress, name="ingress",
                               ray_actor_options={"num_cpus": replica_cpus})
    return ingress.bind(settings, bound)


def serve_on_ray(settings: ServiceSettings, address: str, replicas: int,
                 replica_cpus: float = 1.0) -> None:
    """Join (or, with ``"local"``, start) a Ray cluster and serve ``settings`` on it until
    interrupted; Serve's HTTP proxy listens on ``settings.host:settings.port``.

    Raises:
        CormorantError: the cluster cannot be joined, or the application does not start.
    """
    import ray

    application = build_application(settings, replicas, replica_cpus)
    try:
        if not ray.is_initialized():  # a driver already connected (a test's cluster) is used
            ray.init(address=None if address == "local" else address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise CormorantError(f"cannot join the Ray cluster at {address!r}:"
                             f" {str(exc).splitlines()[0][:200]}") from None
    serve.start(http_options={"host": settings.host, "port": settings.port})
    log.info("serving on Ray Serve at http://%s:%d", settings.host, settings.port)
    serve.run(application, name=APP_NAME, route_prefix="/", blocking=True)
