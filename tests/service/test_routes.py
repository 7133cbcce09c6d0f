"""Every route, error and scope through the app factory (TestClient)."""

from __future__ import annotations

import json

import pytest

from tests.service.conftest import (
    ADMIN_KEY,
    ALL_KEY,
    READ_KEY,
    WRITE_KEY,
    auth,
    client_for,
    settings_for,
)

SEARCH = "/v1/indexes/tiny/search"
DOCS = "/v1/indexes/tiny/documents"
JSON_READ = {**auth(READ_KEY), "content-type": "application/json"}
JSON_WRITE = {**auth(WRITE_KEY), "content-type": "application/json"}


@pytest.fixture
def client(index_dir):
    with client_for(settings_for(index_dir, limits={"max_k": 50, "max_batch": 4,
                                                    "max_query_chars": 100,
                                                    "max_body_bytes": 4096,
                                                    "max_documents_per_write": 3})) as c:
        yield c


def _search(client, key=READ_KEY, **body):
    return client.post(SEARCH, json={"query": "birds that fish", **body}, headers=auth(key))


def test_health_ready_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok", "indexes": {}, "detail": None}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["indexes"] == {"tiny": "ready"}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/indexes/{name}/search", "/v1/indexes", "/v1/indexes/{name}",
            "/v1/indexes/{name}/documents", "/v1/indexes/{name}/documents/{doc_id}",
            "/healthz", "/readyz", "/metrics"} <= set(paths)
    assert {"put", "delete"} <= set(paths["/v1/indexes/{name}/documents"])


def test_search_one_query_and_a_batch(client):
    one = _search(client, k=2, return_text=True, return_fields=True)
    assert one.status_code == 200
    body = one.json()
    hits = body["results"][0]["hits"]
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["doc_id"] in {"d2", "d5"}
    assert hits[0]["score"] >= hits[1]["score"]
    assert hits[0]["title"] in {"Cormorants", "Fishing"} and hits[0]["fields"] == {}
    assert body["timing"]["total_ms"] >= body["timing"]["search_ms"] > 0
    assert body["version"] == 0 and body["pipeline"].startswith("rrf(bm25, dense")
    assert one.headers["x-request-id"]

    batch = client.post(SEARCH, json={"queries": ["cholesterol drugs", "birds that fish"], "k": 1},
                        headers=auth(READ_KEY)).json()
    assert [r["query"] for r in batch["results"]] == ["cholesterol drugs", "birds that fish"]
    assert batch["results"][0]["hits"][0]["doc_id"] == "d3"
    assert "text" not in batch["results"][0]["hits"][0]


def test_allow_listed_pipelines(client):
    bm25 = _search(client, pipeline="bm25", k=6).json()
    assert bm25["pipeline"] == "bm25"
    assert _search(client, pipeline="  bm25 %3>>dense ", k=3).status_code == 200
    refused = _search(client, pipeline="bm25.lucene")
    assert refused.status_code == 404 and "not served" in refused.json()["detail"]
    assert "allowed: " in refused.json()["detail"]


def test_list_and_describe(client):
    listed = client.get("/v1/indexes", headers=auth(READ_KEY)).json()["indexes"]
    assert [i["name"] for i in listed] == ["tiny"]
    info = client.get("/v1/indexes/tiny", headers=auth(READ_KEY)).json()
    assert (info["kind"], info["count"], info["version"], info["writable"]) == \
        ("bm25+dense", 6, 0, True)
    assert info["encoder"] and [s["name"] for s in info["stages"]] == ["bm25", "dense"]
    assert "bm25" in info["pipelines"]
    assert client.get("/v1/indexes/nope", headers=auth(READ_KEY)).status_code == 404


def test_put_get_search_delete(client):
    doc = {"doc_id": "n1", "title": "Pelicans", "text": "Pelicans scoop fish with a pouch.",
           "fields": {"year": 2024, "tags": ["bird"]}}
    put = client.put(DOCS, json={"documents": [doc]}, headers=auth(WRITE_KEY))
    assert put.status_code == 200
    assert put.json() == {"index": "tiny", "version": 1, "changed": ["n1"], "not_found": [],
                          "count": 7}
    assert client.get(f"{DOCS}/n1", headers=auth(READ_KEY)).json() == doc
    hits = _search(client, query="pelicans pouch", pipeline="bm25").json()["results"][0]["hits"]
    assert hits[0]["doc_id"] == "n1"
    replaced = {**doc, "text": "Pelicans are replaced.", "fields": {}}
    assert client.put(DOCS, json={"documents": [replaced]}, headers=auth(WRITE_KEY)).json()["count"] == 7
    assert client.get(f"{DOCS}/n1", headers=auth(READ_KEY)).json()["text"] == "Pelicans are replaced."

    gone = client.request("DELETE", DOCS, json={"ids": ["n1", "d2", "missing"]},
                          headers=auth(WRITE_KEY))
    assert gone.json()["changed"] == ["n1", "d2"] and gone.json()["not_found"] == ["missing"]
    assert client.get(f"{DOCS}/d2", headers=auth(READ_KEY)).status_code == 404
    hits = _search(client, k=10).json()["results"][0]["hits"]
    assert {"n1", "d2"}.isdisjoint(h["doc_id"] for h in hits)
    assert client.get("/v1/indexes/tiny", headers=auth(READ_KEY)).json()["version"] == 3


def test_document_ids_with_slashes(client):
    doc = {"doc_id": "pmc/123/a b", "title": "T", "text": "slash id"}
    assert client.put(DOCS, json={"documents": [doc]}, headers=auth(WRITE_KEY)).status_code == 200
    assert client.get(f"{DOCS}/pmc/123/a%20b", headers=auth(READ_KEY)).json()["doc_id"] == "pmc/123/a b"


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"query": "x", "k": 0}, 422, "k"),
    ({"query": "x", "k": 51}, 422, "between 1 and 50"),
    ({"query": "x", "k": "ten"}, 422, "k"),
    ({"query": "   "}, 422, "query is empty"),
    ({"query": "x" * 101}, 422, "limit is 100"),
    ({"queries": []}, 422, "'queries' is empty"),
    ({"queries": ["a", "b", "c", "d", "e"]}, 422, "at most 4 queries"),
    ({"queries": ["ok", ""]}, 422, "queries[1] is empty"),
    ({"query": "a", "queries": ["b"]}, 422, "either 'query'"),
    ({}, 422, "either 'query'"),
    ({"query": "x", "colour": "red"}, 422, "colour"),
    ({"query": "\ud800"}, 422, "not valid Unicode"),
    ({"query": "x", "pipeline": "rrf(" * 500}, 404, "not served"),
    ({"query": "x", "return_text": 0}, 422, "return_text"),
    ({"queries": ["x"], "query": None}, 422, "'query' is null"),
    ({"query": "x", "return_text": True, "text_chars": 2001}, 422, "text_chars is at most 2,000"),
])
def test_bad_searches_are_clear_4xx(client, body, status, message):
    response = client.post(SEARCH, content=json.dumps(body), headers=JSON_READ)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_invalid_json_and_oversized_bodies(client):
    headers = {**auth(READ_KEY), "content-type": "application/json"}
    bad = client.post(SEARCH, content=b'{"query": "x",', headers=headers)
    assert bad.status_code == 400 and bad.json()["detail"] == "the request body is not valid JSON"
    big = client.post(SEARCH, content=json.dumps({"query": "x" * 5000}).encode(), headers=headers)
    assert big.status_code == 413 and "4,096-byte limit" in big.json()["detail"]

    def chunks():  # no Content-Length: counted while streaming
        yield b'{"query": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    streamed = client.post(SEARCH, content=chunks(), headers=headers)
    assert streamed.status_code == 413


@pytest.mark.parametrize(("body", "message"), [
    ({"documents": []}, "documents"),
    ({"documents": [{"doc_id": "", "text": "x"}]}, "doc_id"),
    ({"documents": [{"doc_id": " a", "text": "x"}]}, "surrounding spaces"),
    ({"documents": [{"doc_id": "a\nb", "text": "x"}]}, "control characters"),
    ({"documents": [{"doc_id": "a", "text": "  "}]}, "no title or text"),
    ({"documents": [{"doc_id": f"a{i}", "text": "x"} for i in range(4)]}, "at most 3 documents"),
    ({"documents": [{"doc_id": "a", "text": "x", "extra": 1}]}, "extra"),
    ({"documents": [{"doc_id": "a", "text": "\udcff"}]}, "surrogate"),
    ({"docs": []}, "documents"),
])
def test_bad_writes_change_nothing(client, body, message):
    # json.dumps escapes lone surrogates as \\udxxx, which clients may send
    response = client.put(DOCS, content=json.dumps(body), headers=JSON_WRITE)
    assert response.status_code == 422 and message in response.json()["detail"], response.text
    info = client.get("/v1/indexes/tiny", headers=auth(READ_KEY)).json()
    assert (info["version"], info["count"]) == (0, 6)


def test_bad_deletes_and_unknown_index_change_nothing(client):
    for body in ({"ids": []}, {"ids": ["a", "a"]}, {"ids": "d1"}, {"id": ["d1"]}):
        assert client.request("DELETE", DOCS, json=body, headers=auth(WRITE_KEY)).status_code == 422
    nothing = client.request("DELETE", DOCS, json={"ids": ["zzz"]}, headers=auth(WRITE_KEY)).json()
    assert nothing["version"] == 0 and nothing["not_found"] == ["zzz"]
    unknown = client.put("/v1/indexes/nope/documents", json={"documents": [{"doc_id": "a", "text": "x"}]},
                         headers=auth(WRITE_KEY))
    assert unknown.status_code == 404 and "no index named 'nope'" in unknown.json()["detail"]
    assert client.post("/v1/indexes/nope/search", json={"query": "x"},
                       headers=auth(READ_KEY)).status_code == 404
    assert client.get("/v1/indexes/tiny", headers=auth(READ_KEY)).json()["version"] == 0


ROUTES = [("get", "/v1/indexes", None, "read"), ("get", "/v1/indexes/tiny", None, "read"),
          ("post", SEARCH, {"query": "fish"}, "read"), ("get", f"{DOCS}/d1", None, "read"),
          ("put", DOCS, {"documents": [{"doc_id": "s1", "text": "scoped"}]}, "write"),
          ("delete", DOCS, {"ids": ["s1"]}, "write"), ("get", "/metrics", None, "admin")]
KEYS = {"read": READ_KEY, "write": WRITE_KEY, "admin": ADMIN_KEY}


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
def test_every_route_checks_its_scope(client, method, path, body, scope):
    def call(headers):
        return client.request(method.upper(), path, json=body, headers=headers)

    missing = call({})
    assert missing.status_code == 401 and missing.json() == {"detail": "missing or invalid API key"}
    assert call({"X-API-Key": "wrong"}).status_code == 401
    assert call({"Authorization": "Bearer wrong"}).status_code == 401
    for other_scope, key in KEYS.items():
        if other_scope != scope:
            denied = call(auth(key))
            assert denied.status_code == 403
            assert denied.json() == {"detail": "this API key is not allowed to do that"}
    assert call(auth(KEYS[scope])).status_code == 200
    assert call({"Authorization": f"Bearer {ALL_KEY}"}).status_code == 200


def test_open_reads_still_guard_writes_and_metrics(index_dir):
    with client_for(settings_for(index_dir, open_reads=True)) as client:
        assert client.post(SEARCH, json={"query": "fish"}).status_code == 200
        assert client.get("/v1/indexes/tiny").status_code == 200
        assert client.post(SEARCH, json={"query": "fish"}, headers=auth("wrong")).status_code == 401
        assert client.put(DOCS, json={"documents": [{"doc_id": "a", "text": "x"}]}).status_code == 401
        assert client.put(DOCS, json={"documents": [{"doc_id": "a", "text": "x"}]},
                          headers=auth(READ_KEY)).status_code == 403
        assert client.get("/metrics").status_code == 401


def test_metrics_count_requests_errors_and_sizes(client):
    _search(client)
    _search(client, k=0)
    client.put(DOCS, json={"documents": [{"doc_id": "m1", "text": "metric doc"}]}, headers=auth(WRITE_KEY))
    text = client.get("/metrics", headers=auth(ADMIN_KEY)).text
    route = 'route="/v1/indexes/{name}/search"'
    assert f'cormorant_requests_total{{method="POST",{route},status="200"}} 1.0' in text
    assert 'cormorant_request_errors_total{route="/v1/indexes/{name}/search",status="422"} 1.0' in text
    assert 'cormorant_index_documents{index="tiny"} 7.0' in text
    assert 'cormorant_index_version{index="tiny"} 1.0' in text
    assert "cormorant_request_seconds_bucket" in text
    assert "cormorant_encoder_batch_texts_count" in text  # queries went through the encoder
    assert "cormorant_encoder_batch_texts_count 0.0" not in text


def test_one_json_log_line_per_request(client, caplog):
    import logging

    logger = logging.getLogger("cormorant.service.access")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="cormorant.service.access"):
            _search(client)
            client.get("/v1/indexes/nope", headers=auth(READ_KEY))
    finally:
        logger.removeHandler(caplog.handler)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "cormorant.service.access"]
    assert [(r["route"], r["status"]) for r in lines] == [
        ("/v1/indexes/{name}/search", 200), ("/v1/indexes/{name}", 404)]
    assert lines[0]["key"] == "reader" and lines[0]["index"] == "tiny" and lines[0]["queries"] == 1
    assert READ_KEY not in json.dumps(lines)


def test_search_timeout_is_a_504(index_dir):
    settings = settings_for(index_dir, request_timeout_s=0.05,
                            micro_batching={"enabled": True, "max_wait_ms": 1000, "max_batch_size": 8})
    with client_for(settings) as client:
        client.app.state.service._in_flight = 100  # the batcher now waits out max_wait_ms
        slow = _search(client, pipeline="dense")
        assert slow.status_code == 504 and "0.05 s limit" in slow.json()["detail"]


def test_not_ready_is_503_and_a_failed_load_shows_on_readyz(index_dir):
    (index_dir / "1-dense" / "vectors.faiss").write_bytes(b"corrupt")
    with client_for(settings_for(index_dir), ready=False) as client:
        client.app.state.service.ready.wait(60)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "failed"
        assert "checksum mismatch" in ready.json()["detail"]
        assert client.get("/healthz").status_code == 200
        assert _search(client).status_code == 503


def test_writes_to_read_only_indexes_are_409(tmp_path):
    from cormorant.data import load_dataset
    from cormorant.retrieval.assemble import save_index
    from tests.conftest import write_beir
    from tests.seal_helpers import make_tiny_generator

    corpus = load_dataset(write_beir(tmp_path / "c")).corpus
    generator = make_tiny_generator(tmp_path / "generator")
    seal = save_index(f"seal(model={generator})", corpus, tmp_path / "seal")
    blocked = save_index("bm25", corpus, tmp_path / "blocked")
    (blocked / "live").write_text("not a directory")  # as a read-only mount would refuse it
    for index, reason in ((seal, "suffix array is built over the whole corpus"),
                          (blocked, "is read-only: cannot write")):
        with client_for(settings_for(index, pipelines=[])) as client:
            assert _search(client, k=2).status_code == 200
            put = client.put(DOCS, json={"documents": [{"doc_id": "a", "text": "x"}]},
                             headers=auth(WRITE_KEY))
            assert put.status_code == 409 and reason in put.json()["detail"], put.text
            info = client.get("/v1/indexes/tiny", headers=auth(READ_KEY)).json()
            assert info["writable"] is False and reason in info["read_only_reason"]


def test_token_vector_and_lucene_indexes_take_writes_over_rest(tmp_path, tiny_encoder):
    """chamfer and muvera (and bm25.lucene, where Java is present) were read-only in the
    service; now every stage kind but seal takes writes."""
    from cormorant.data import load_dataset
    from cormorant.retrieval.assemble import save_index
    from tests.conftest import write_beir

    corpus = load_dataset(write_beir(tmp_path / "c")).corpus
    kinds = [f"chamfer(model={tiny_encoder})", f"muvera(model={tiny_encoder})"]
    for number, pipeline in enumerate(kinds):
        index = save_index(pipeline, corpus, tmp_path / f"index-{number}")
        with client_for(settings_for(index, pipelines=[])) as client:
            put = client.put(DOCS, json={"documents": [
                {"doc_id": "p1", "text": "Pelicans scoop fish with a throat pouch."}]},
                headers=auth(WRITE_KEY))
            assert put.status_code == 200, put.text
            gone = client.request("DELETE", DOCS, json={"ids": ["d2"]}, headers=auth(WRITE_KEY))
            assert gone.status_code == 200, gone.text
            found = client.post(SEARCH, json={"query": "pelicans scoop fish throat pouch",
                                              "k": 6}, headers=auth(READ_KEY)).json()
            ids = [hit["doc_id"] for hit in found["results"][0]["hits"]]
            assert "p1" in ids and "d2" not in ids, (pipeline, ids)


def test_an_index_that_fails_to_load_leaves_the_others_served(index_dir, tmp_path):
    from cormorant.service import load_settings
    from tests.service.conftest import key_config

    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(index_dir, broken)
    (broken / "docs.sqlite").write_bytes(b"truncated")
    settings = load_settings(None, api_keys=key_config(), indexes={"tiny": str(index_dir),
                                                                    "broken": str(broken)})
    with client_for(settings, ready=False) as client:
        client.app.state.service.ready.wait(60)
        ready = client.get("/readyz").json()
        assert ready["indexes"] == {"tiny": "ready", "broken": "failed"}
        assert "index 'broken'" in ready["detail"] and "checksum" in ready["detail"]
        assert _search(client).status_code == 200
        assert client.post("/v1/indexes/broken/search", json={"query": "x"},
                           headers=auth(READ_KEY)).status_code == 503
