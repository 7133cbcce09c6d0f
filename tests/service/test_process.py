"""A real uvicorn process on 127.0.0.1: acknowledged writes survive SIGKILL; SIGTERM lets
in-flight requests finish."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import yaml

from cormorant.service.settings import Limits
from tests.service.conftest import ALLOWED, READ_KEY, WRITE_KEY, key_config
from tests.service.server import ServerProcess


def _config(tmp_path, index_dir, **extra):
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump({
        "indexes": {"tiny": {"path": str(index_dir), "pipelines": ALLOWED}},
        "api_keys": key_config(), **extra}))
    return path


def test_acknowledged_writes_survive_sigkill(tmp_path, index_dir):
    config = _config(tmp_path, index_dir)
    server = ServerProcess(config, tmp_path / "server.log").start()
    acknowledged: dict[str, str] = {}
    deleted: set[str] = set()
    delete_sent: set[str] = set()  # a delete in flight at the kill may or may not have applied
    stop = threading.Event()

    def writer(worker: int) -> None:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": WRITE_KEY}, timeout=30) as c:
            for n in range(10_000):
                if stop.is_set():
                    return
                docs = [{"doc_id": f"w{worker}-{n}-{j}", "title": f"token{worker}x{n}x{j}",
                         "text": f"written by worker {worker} request {n}"} for j in range(3)]
                try:
                    response = c.put("/v1/indexes/tiny/documents", json={"documents": docs})
                except httpx.HTTPError:
                    return  # the server died mid-request: not acknowledged
                if response.status_code != 200:
                    return
                acknowledged.update({d["doc_id"]: d["title"] for d in docs})
                if n % 4 == 3:  # deletes are writes too
                    gone = docs[0]["doc_id"]
                    delete_sent.add(gone)
                    try:
                        r = c.request("DELETE", "/v1/indexes/tiny/documents", json={"ids": [gone]})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        deleted.add(gone)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    server.kill()  # SIGKILL while writes are in flight
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acknowledged) >= 9, server.log()

    with ServerProcess(config, tmp_path / "server2.log") as again:
        c = httpx.Client(base_url=again.url, headers={"X-API-Key": READ_KEY}, timeout=30)
        unsure = delete_sent - deleted  # sent, never acknowledged: either outcome is allowed
        assert len(unsure) <= 3  # at most one in flight per writer
        info = c.get("/v1/indexes/tiny").json()
        assert info["count"] >= 6 + len(acknowledged) - len(deleted) - len(unsure)
        for doc_id, title in acknowledged.items():
            got = c.get(f"/v1/indexes/tiny/documents/{doc_id}")
            if doc_id in deleted:
                assert got.status_code == 404, doc_id
            elif doc_id not in unsure:
                assert got.status_code == 200 and got.json()["title"] == title, doc_id
        sample = [d for d in acknowledged if d not in delete_sent][::7]
        # In chunks: a quiet machine acknowledges hundreds of writes in two seconds, more than
        # the service takes in one request (its queries-a-request limit, read, not restated).
        per_request = Limits().max_batch
        for start in range(0, len(sample), per_request):
            chunk = sample[start:start + per_request]
            found = c.post("/v1/indexes/tiny/search", json={
                "queries": [acknowledged[d] for d in chunk], "k": 1, "pipeline": "bm25"})
            assert found.status_code == 200, found.text
            assert [r["hits"][0]["doc_id"] for r in found.json()["results"]] == chunk


def _raw_request(port: int, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (f"POST /v1/indexes/tiny/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"X-API-Key: {READ_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body[:10])  # the request is in flight; the rest comes later
    return sock


def test_sigterm_finishes_in_flight_requests(tmp_path, index_dir):
    """Started as `uvicorn --factory cormorant.service:create_app`, settings from the env."""
    server = ServerProcess(_config(tmp_path, index_dir), tmp_path / "server.log", factory=True).start()
    body = json.dumps({"query": "birds that fish", "k": 2}).encode()
    sock = _raw_request(server.port, body)
    time.sleep(0.3)
    assert server.proc is not None
    server.proc.send_signal(15)  # SIGTERM
    time.sleep(0.5)
    sock.sendall(body[10:])
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    sock.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["results"][0]["hits"]
    # uvicorn re-raises SIGTERM once shut down cleanly, so the status says "terminated".
    assert server.proc.wait(30) in (0, -15)
    # New connections are refused once shutdown began.
    try:
        httpx.get(f"{server.url}/healthz", timeout=2)
        raise AssertionError("server still accepting after SIGTERM")
    except httpx.HTTPError:
        pass
    log = server.log()
    assert '"route":"/v1/indexes/{name}/search","status":200' in log  # the request's log line
    assert "Application shutdown complete" in log  # lifespan ran: threads, stores, locks closed
