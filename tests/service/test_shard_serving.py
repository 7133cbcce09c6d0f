"""Shards served by replicas (the Ray Serve layout, without Ray): per shard one writer and
readers that follow its write-ahead log, reached through handles whose calls pickle their
arguments as Ray's do. The router over them answers as the in-process one, and a write through
the REST API is visible to the next search on every reader, in the owning shard only."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path
from typing import Any

import pytest

from cormorant.errors import CormorantError
from cormorant.index.format import read_meta
from cormorant.index.sharding import shard_of
from cormorant.retrieval.assemble import open_index
from cormorant.retrieval.shard_index import shard_folders
from cormorant.service.shard_client import ServeShard, open_served_sharded
from cormorant.service.shard_server import ShardServer
from cormorant.types import Document

from .conftest import READ_KEY, WRITE_KEY, auth, settings_for
from .test_sharded import DOCS, SEARCH, hits, sharded_dir  # noqa: F401 - the fixture

ROUTED = ["bm25", "dense", "bm25 % 3 >> dense", "rocchio(dense)"]


class Answer:
    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self, timeout_s: float | None = None) -> Any:
        return self.value


class Method:
    def __init__(self, servers: list[ShardServer], name: str, turn: Any) -> None:
        self.servers, self.name, self.turn = servers, name, turn

    def remote(self, *args: Any, **kwargs: Any) -> Answer:
        # Through pickle both ways, as a Ray call goes: what does not pickle fails here too.
        args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))
        server = self.servers[next(self.turn) % len(self.servers)]
        return Answer(pickle.loads(pickle.dumps(getattr(server, self.name)(*args, **kwargs))))


class Handle:
    """A deployment handle over in-process replicas, taking them in turn."""

    def __init__(self, servers: list[ShardServer]) -> None:
        self.servers, self.turn = servers, itertools.count()

    def __getattr__(self, name: str) -> Method:
        return Method(self.servers, name, self.turn)


def serve_shards(path: Path, readers: int = 2) -> tuple[list[ServeShard], list[list[ShardServer]]]:
    shards, replicas = [], []
    for folder, leaves in shard_folders(path, read_meta(path, verify=False)):
        writer = ShardServer(str(folder), leaves, write=True)
        followers = [ShardServer(str(folder), leaves, write=False) for _ in range(readers)]
        shards.append(ServeShard(folder, Handle([writer]), Handle(followers)))
        replicas.append([writer, *followers])
    return shards, replicas


def close_all(replicas: list[list[ShardServer]]) -> None:
    for group in replicas:
        for server in group:
            server.close()


def test_the_router_over_served_shards_answers_as_in_process(sharded_dir):  # noqa: F811
    local = open_index(sharded_dir)
    expected = {p: local.open_pipeline(p).search("cormorants fishing vitamin", k=6)
                for p in ROUTED}
    local.close()
    shards, replicas = serve_shards(sharded_dir)
    try:
        handle = open_served_sharded(sharded_dir, shards)
        assert handle.live.count == 6
        for pipeline, want in expected.items():
            got = handle.open_pipeline(pipeline).search("cormorants fishing vitamin", k=6)
            assert list(got["0"]) == list(want["0"]), pipeline
            assert got["0"] == pytest.approx(want["0"], abs=1e-5), pipeline
    finally:
        close_all(replicas)


def test_readers_show_each_acknowledged_write_and_follow_a_commit(sharded_dir):  # noqa: F811
    shards, replicas = serve_shards(sharded_dir)
    try:
        handle = open_served_sharded(sharded_dir, shards)
        owner = shard_of("n1", 2)
        result = handle.live.add([Document("n1", "Pelicans scoop fish with a pouch.")])
        assert result.changed == ["n1"] and shards[owner].live.version == 1
        assert shards[1 - owner].live.version == 0  # the other shard was not written
        for _ in range(2):  # each reader in turn: every one shows the write
            assert handle.pipeline.search("pelicans pouch", k=1).ranked("0")[0][0] == "n1"
        shards[owner].live.commit()  # the log emptied into segments: readers open it again
        handle.live.add([Document("n1", "Herons stand still in reeds.")])
        for _ in range(2):
            assert handle.pipeline.search("herons reeds", k=1).ranked("0")[0][0] == "n1"
            assert handle.live.get("n1").text == "Herons stand still in reeds."
        assert all(r._handle.live.get("n1") is None for r in replicas[1 - owner])
    finally:
        close_all(replicas)


def test_a_reader_that_cannot_see_the_writer_says_so(sharded_dir):  # noqa: F811
    [(folder, leaves), _] = shard_folders(sharded_dir, read_meta(sharded_dir, verify=False))
    reader = ShardServer(str(folder), leaves, write=False, catch_up_s=0.05)
    with pytest.raises(CormorantError, match="file system every Ray node shares"):
        reader.get_many(["d1"], at_least=5)
    reader.close()


def test_the_rest_api_over_served_shards(sharded_dir):  # noqa: F811
    from fastapi.testclient import TestClient

    from cormorant.service import create_app
    from cormorant.service.served import ServedIndex

    shards, replicas = serve_shards(sharded_dir)

    def opener(name: str, path: Path, pipelines: list[str] | None, **_: Any) -> ServedIndex:
        return ServedIndex.from_handle(name, open_served_sharded(path, shards), pipelines)

    try:
        with TestClient(create_app(settings_for(sharded_dir), opener=opener)) as client:
            while client.get("/readyz").status_code != 200:
                assert not client.app.state.service.failed
            doc = {"doc_id": "n1", "title": "Pelicans", "text": "Pelicans scoop fish."}
            put = client.put(DOCS, json={"documents": [doc]}, headers=auth(WRITE_KEY)).json()
            assert put["changed"] == ["n1"] and put["count"] == 7 and put["version"] == 1
            assert hits(client, "bm25", "pelicans scoop")[0][0] == "n1"
            assert client.get(f"{DOCS}/n1", headers=auth(READ_KEY)).json()["text"] \
                == "Pelicans scoop fish."
            assert client.post(SEARCH, json={"query": "x"}).status_code == 401  # keys kept
    finally:
        close_all(replicas)
