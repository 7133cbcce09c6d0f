"""No single key can starve the service, and the schema says what the server does (issue 31):
strict numbers, per-key 429s with Retry-After, bounded answers, timed-out searches that stop,
and an OpenAPI document that matches the answers."""

from __future__ import annotations

import threading
import time

from tests.service.conftest import ALL_KEY, READ_KEY, WRITE_KEY, auth, client_for, settings_for

SEARCH = "/v1/indexes/tiny/search"
DOCS = "/v1/indexes/tiny/documents"


def test_k_true_a_fraction_and_a_string_are_refused_a_whole_float_is_k(index_dir) -> None:
    with client_for(settings_for(index_dir)) as client:
        for k in (True, 2.5, "10"):
            answer = client.post(SEARCH, json={"query": "fish", "k": k}, headers=auth(READ_KEY))
            assert answer.status_code == 422, (k, answer.text)
            assert "k:" in answer.json()["detail"]
        # JSON Schema's integer admits 10.0 (schemathesis sends it): it means 10.
        answer = client.post(SEARCH, json={"query": "fish", "k": 2.0}, headers=auth(READ_KEY))
        assert answer.status_code == 200 and answer.json()["k"] == 2


def test_a_nan_or_infinite_field_is_refused_and_nothing_is_stored(index_dir) -> None:
    with client_for(settings_for(index_dir)) as client:
        for raw in ('NaN', 'Infinity', '[1, {"x": -Infinity}]'):
            body = '{"documents": [{"doc_id": "n", "text": "nan", "fields": {"v": ' + raw + '}}]}'
            answer = client.put(DOCS, content=body, headers={**auth(WRITE_KEY),
                                                             "Content-Type": "application/json"})
            assert answer.status_code == 422 and "not a finite number" in answer.json()["detail"]
        assert client.get(f"{DOCS}/n", headers=auth(READ_KEY)).status_code == 404


def test_a_doc_id_given_twice_writes_the_last(index_dir) -> None:
    with client_for(settings_for(index_dir)) as client:
        body = {"documents": [{"doc_id": "a", "text": "first"}, {"doc_id": "a", "text": "last"}]}
        assert client.put(DOCS, json=body, headers=auth(WRITE_KEY)).json()["changed"] == ["a"]
        assert client.get(f"{DOCS}/a", headers=auth(READ_KEY)).json()["text"] == "last"
        # The count limit applies to the request as sent, before repeated ids are merged.
        many = {"documents": [{"doc_id": "a", "text": "x"}] * 257}
        answer = client.put(DOCS, json=many, headers=auth(WRITE_KEY))
        assert answer.status_code == 422 and "at most 256" in answer.json()["detail"]


def test_a_key_over_its_rate_gets_429_with_retry_after(index_dir) -> None:
    limits = {"requests_per_second_per_key": 0.01, "burst_per_key": 2}
    with client_for(settings_for(index_dir, limits=limits)) as client:
        codes = [client.post(SEARCH, json={"query": "fish"}, headers=auth(READ_KEY))
                 for _ in range(3)]
        assert [a.status_code for a in codes] == [200, 200, 429]
        assert int(codes[2].headers["Retry-After"]) >= 1
        # another key is not slowed down by this one
        assert client.post(SEARCH, json={"query": "fish"}, headers=auth(ALL_KEY)).status_code == 200


def test_a_key_with_all_its_places_in_flight_gets_429(index_dir) -> None:
    with client_for(settings_for(index_dir, limits={"max_in_flight_per_key": 2})) as client:
        limiter = client.app.state.service.limiter
        assert limiter.enter("key:reader") is None and limiter.enter("key:reader") is None
        busy = client.post(SEARCH, json={"query": "fish"}, headers=auth(READ_KEY))
        assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
        assert client.post(SEARCH, json={"query": "fish"}, headers=auth(ALL_KEY)).status_code == 200
        limiter.leave("key:reader")
        assert client.post(SEARCH, json={"query": "fish"}, headers=auth(READ_KEY)).status_code == 200


def test_text_is_cut_to_the_asked_length_and_the_answer_to_its_budget(index_dir) -> None:
    limits = {"max_text_chars": 30, "max_response_text_chars": 120}
    with client_for(settings_for(index_dir, limits=limits)) as client:
        def hits(**extra: object) -> tuple[dict, list[dict]]:
            body = {"query": "fish birds cormorants", "k": 2, "return_text": True, **extra}
            answer = client.post(SEARCH, json=body, headers=auth(READ_KEY)).json()
            return answer, answer["results"][0]["hits"]

        answer, found = hits(text_chars=5)
        assert answer["text_chars"] == 5 and all(len(h["text"]) <= 5 for h in found)
        answer, found = hits()  # default: max_text_chars, within the budget of 2 hits x 2
        assert answer["text_chars"] == 30 and max(len(h["text"]) for h in found) == 30
        answer, found = hits(k=6)  # 6 hits share 120 characters of titles and texts
        assert answer["text_chars"] == 10
        assert sum(len(h["text"]) + len(h["title"]) for h in found) <= 120
        too_many = client.post(SEARCH, json={"query": "x", "k": 2, "return_text": True,
                                             "text_chars": 31}, headers=auth(READ_KEY))
        # Over the maximum the schema states: refused, not silently cut (schemathesis ST201).
        assert too_many.status_code == 422 and "at most 30" in too_many.json()["detail"]


def test_a_timed_out_search_stops_instead_of_running_on(index_dir, monkeypatch) -> None:
    from cormorant.service.served import ServedIndex

    calls: list[int] = []
    real = ServedIndex.search

    def slow(self, texts, k, pipeline=None):  # noqa: ANN001, ANN202
        calls.append(len(texts))
        time.sleep(0.2)
        return real(self, texts, k, pipeline)

    monkeypatch.setattr(ServedIndex, "search", slow)
    with client_for(settings_for(index_dir, request_timeout_s=0.3)) as client:
        answer = client.post(SEARCH, json={"queries": ["fish"] * 64}, headers=auth(READ_KEY))
        assert answer.status_code == 504
        time.sleep(0.6)  # long enough for every remaining step, had they run
        assert sum(calls) <= 3 * 8, calls  # stopped after the step it was in: not all 64
        assert threading.active_count() < 100


def test_the_openapi_document_matches_the_server(index_dir) -> None:
    with client_for(settings_for(index_dir)) as client:
        doc = client.get("/openapi.json").json()
        schemas = doc["components"]["schemas"]
        search = schemas["SearchRequest"]
        assert search["properties"]["k"]["maximum"] == 1000  # the configured max_k
        assert search["oneOf"] == [{"required": ["query"]}, {"required": ["queries"]}]
        assert search["properties"]["queries"]["maxItems"] == 64
        document = next(v for n, v in schemas.items() if n.startswith("DocumentBody"))
        assert {tuple(c["required"]) for c in document["anyOf"]} == {("title",), ("text",)}
        for path in ("/v1/indexes/{name}", "/v1/indexes/{name}/documents/{doc_id}"):
            problem = doc["paths"][path]["get"]["responses"]["422"]
            assert problem["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")
        answer = client.get("/v1/indexes/" + "x" * 65, headers=auth(READ_KEY))
        assert answer.status_code == 422 and isinstance(answer.json()["detail"], str)
        refused = client.post(DOCS, json={}, headers=auth(WRITE_KEY))
        assert refused.status_code == 405
        assert set(refused.headers["Allow"].split(", ")) == {"PUT", "DELETE"}


def test_the_schemas_not_blank_pattern_is_str_strips_whitespace() -> None:
    """schemathesis sent a query of ECMAScript non-whitespace (\\x1f) that str.strip() blanks."""
    import re

    from cormorant.service.openapi import NOT_BLANK

    pattern = re.compile(NOT_BLANK)
    disagree = [hex(c) for c in range(0x10000)
                if 0xD800 > c or c > 0xDFFF
                if bool(pattern.search(chr(c))) != bool(chr(c).strip())]
    assert disagree == []


def test_an_unknown_index_is_404_whatever_the_body(index_dir) -> None:
    """schemathesis: a PUT of the body 0 to an index that does not exist was a 422."""
    with client_for(settings_for(index_dir)) as client:
        for method, path in (("PUT", "/v1/indexes/nope/documents"),
                             ("DELETE", "/v1/indexes/nope/documents"),
                             ("POST", "/v1/indexes/nope/search")):
            answer = client.request(method, path, content="0", headers={
                **auth(ALL_KEY), "Content-Type": "application/json"})
            assert answer.status_code == 404, (method, answer.text)
        bad = client.put(DOCS, content="0", headers={**auth(WRITE_KEY),
                                                     "Content-Type": "application/json"})
        assert bad.status_code == 422  # a known index: the body is what is wrong


def test_the_schemas_doc_id_pattern_is_the_servers_rule() -> None:
    """schemathesis sent an id ending in a character ECMAScript's \\s does not count as space
    but str.strip() does; the pattern now spells out Python's whitespace."""
    import re

    from cormorant.service.openapi import DOC_ID

    def server_accepts(value: str) -> bool:
        return value == value.strip() and not any(ord(c) < 32 for c in value)

    disagree = [hex(c) for c in range(0x10000) if 0xD800 > c or c > 0xDFFF
                for value in (chr(c), f"a{chr(c)}", f"{chr(c)}a", f"a{chr(c)}a")
                if bool(re.fullmatch(DOC_ID, value)) != server_accepts(value)]
    assert disagree == []
