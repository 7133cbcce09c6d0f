"""A sharded index served on Ray Serve (the session's local Ray cluster): the ingress answers
as the in-process service, a write through the REST API lands in its shard's log only and is
seen by the next search on any reader replica, and a killed writer comes back with every
acknowledged write. Simulated: every "node" is this machine."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from cormorant.index.sharding import shard_of
from cormorant.retrieval.assemble import open_index
from cormorant.retrieval.shard_index import save_sharded_index
from cormorant.types import Corpus, Document

pytest.importorskip("fastapi")

from tests.service.conftest import (  # noqa: E402
    READ_KEY,
    WRITE_KEY,
    auth,
    built_index,  # noqa: F401 - fixtures
    index_dir,  # noqa: F401
    settings_for,
)

APP = "cormorant-test"
WORDS = ["heron pelican fish", "river statin vitamin", "sleep depression coral", "reef gene cell",
         "cormorants dive for fish", "vitamin d and depression", "coral reef fish", "gene cell"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(ray_local, tmp_path_factory) -> Any:
    """bm25 over 2 shards, each a writer and 2 reader replicas, behind the ingress."""
    from ray import serve

    from cormorant.service.ray_serve import build_application

    root = tmp_path_factory.mktemp("ray-serve")
    corpus = Corpus.from_documents([Document(f"d{i}", t) for i, t in enumerate(WORDS)],
                                   name="words")
    path = save_sharded_index("bm25", corpus, root / "idx", 2)
    single = open_index(save_sharded_index("bm25", corpus, root / "one", 1))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = settings_for(path, pipelines=["bm25"])
    serve.run(build_application(settings, replicas=2, replica_cpus=0), name=APP,
              route_prefix="/")
    import httpx

    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    deadline = time.monotonic() + 120
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").text
        time.sleep(0.2)
    try:
        yield path, client, single
    finally:
        client.close()
        single.close()
        serve.shutdown()


def search(client: Any, query: str, k: int = 5) -> list[tuple[str, float]]:
    answer = client.post("/v1/indexes/tiny/search", json={"query": query, "k": k},
                         headers=auth(READ_KEY))
    assert answer.status_code == 200, answer.text
    return [(h["doc_id"], round(h["score"], 5)) for h in answer.json()["results"][0]["hits"]]


def put(client: Any, doc_id: str, text: str) -> dict[str, Any]:
    answer = client.put("/v1/indexes/tiny/documents", headers=auth(WRITE_KEY),
                        json={"documents": [{"doc_id": doc_id, "text": text}]})
    assert answer.status_code == 200, answer.text
    return answer.json()


def logged(path: Path, doc_id: str) -> list[int]:
    """The shards whose write-ahead log holds a write of ``doc_id``."""
    return [n for n in range(2)
            if f'"{doc_id}"' in _read(path / f"shard-{n:03d}" / "live" / "log.jsonl")]


def _read(file: Path) -> str:
    return file.read_text() if file.is_file() else ""


def test_the_ingress_answers_as_one_index(served):
    path, client, single = served
    for query in ("fish", "vitamin depression", "coral reef gene"):
        want = [(d, round(s, 5)) for d, s in single.pipeline.search(query, k=5).ranked("0")]
        assert search(client, query) == want, query
    assert client.post("/v1/indexes/tiny/search", json={"query": "fish"}).status_code == 401


def test_a_write_lands_in_its_shard_and_every_reader_sees_it(served):
    path, client, _ = served
    answer = put(client, "n1", "pelicans scoop fish with a pouch")
    assert answer["changed"] == ["n1"] and answer["count"] == len(WORDS) + 1
    assert logged(path, "n1") == [shard_of("n1", 2)]
    for _ in range(4):  # two reader replicas: the router asks for the acknowledged version
        assert search(client, "pelicans pouch")[0][0] == "n1"


def test_a_killed_writer_and_readers_come_back_with_every_acknowledged_write(served):
    import ray

    path, client, _ = served
    owner = shard_of("k0", 2)
    ids = [d for d in (f"k{i}" for i in range(40)) if shard_of(d, 2) == owner][:3]
    acknowledged = [put(client, d, f"kingfisher{d} dives from a perch") for d in ids]
    assert kill_replicas(ray, f"tiny-{owner}-") == 3  # the shard's writer and both readers
    deadline = time.monotonic() + 120
    while True:  # Serve starts new replicas; each replays the shard's log
        try:
            found = [search(client, f"kingfisher{d}", k=1) for d in ids]
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the shard did not come back"
            time.sleep(0.5)
    assert [hit[0][0] for hit in found] == ids
    again = put(client, ids[0], "kingfishers again")
    # The new writer's version goes on from the replayed log, not from zero.
    assert again["version"] == acknowledged[-1]["version"] + 1


def kill_replicas(ray: Any, prefix: str) -> int:
    """Kill (no restart by Ray: Serve's controller replaces them) every replica actor of the
    deployments whose name starts with ``prefix``."""
    count = 0
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"]
        if name.startswith("SERVE_REPLICA::") and f"#{prefix}" in name:
            ray.kill(ray.get_actor(name, namespace=entry["namespace"]), no_restart=True)
            count += 1
    return count


def test_replicas_and_cpus_are_checked_before_anything_starts(ray_local, index_dir):  # noqa: F811
    from cormorant.errors import CormorantError
    from cormorant.service.ray_serve import build_application

    with pytest.raises(CormorantError, match="--replicas must be at least 1"):
        build_application(settings_for(index_dir), replicas=0)
    with pytest.raises(CormorantError, match="--replica-cpus must be 0 or more"):
        build_application(settings_for(index_dir), replica_cpus=-1)
