"""The REST service over a sharded index (in this process, no Ray): the same answers as over
the single index, and writes that land in the shard owning each id."""

from __future__ import annotations

from pathlib import Path

import pytest

from cormorant.index.sharding import shard_of
from tests.conftest import write_beir

from .conftest import PIPELINE, READ_KEY, WRITE_KEY, auth, client_for, settings_for

SEARCH, DOCS = "/v1/indexes/tiny/search", "/v1/indexes/tiny/documents"


@pytest.fixture
def sharded_dir(tmp_path: Path, tiny_encoder: Path) -> Path:
    from cormorant.data import load_dataset
    from cormorant.retrieval.shard_index import save_sharded_index

    corpus = load_dataset(write_beir(tmp_path / "tiny")).corpus
    return save_sharded_index(PIPELINE.format(model=tiny_encoder), corpus, tmp_path / "idx", 2)


def hits(client, pipeline: str, query: str) -> list[tuple[str, float]]:
    body = client.post(SEARCH, json={"query": query, "k": 6, "pipeline": pipeline},
                       headers=auth(READ_KEY)).json()
    return [(h["doc_id"], round(h["score"], 5)) for h in body["results"][0]["hits"]]


def test_service_over_a_sharded_index(sharded_dir, index_dir):
    from cormorant.retrieval.assemble import open_index

    single = open_index(index_dir)  # the same collection in one index
    expected = {(p, q): [(d, round(s, 5)) for d, s in single.open_pipeline(p).search(
                    q, k=6).ranked("0")]
                for p in ("bm25", "dense", "bm25 % 3 >> dense")
                for q in ("cormorants fishing", "vitamin d depression")}
    single.close()
    with client_for(settings_for(sharded_dir)) as client:
        for (pipeline, query), want in expected.items():
            assert hits(client, pipeline, query) == want, (pipeline, query)
        doc = {"doc_id": "n1", "title": "Pelicans", "text": "Pelicans scoop fish with a pouch."}
        put = client.put(DOCS, json={"documents": [doc]}, headers=auth(WRITE_KEY)).json()
        assert put["changed"] == ["n1"] and put["count"] == 7
        assert hits(client, "bm25", "pelicans pouch")[0][0] == "n1"
        gone = client.request("DELETE", DOCS, json={"ids": ["d2", "missing"]},
                              headers=auth(WRITE_KEY)).json()
        assert gone["changed"] == ["d2"] and gone["not_found"] == ["missing"]
        assert client.get(f"{DOCS}/d2", headers=auth(READ_KEY)).status_code == 404
        served = client.app.state.service.indexes["tiny"].handle
        owner = served.shards[shard_of("n1", 2)]
        assert owner.live.get("n1") is not None
        assert client.get("/v1/indexes/tiny", headers=auth(READ_KEY)).json()["count"] == 6
