"""Reliability figures for docs/reliability.md: a real ``cormorant serve`` on 127.0.0.1.

    python benchmarks/bench_reliability.py load  [--seconds 60] [--heavy]  # 32 searchers, 4 writers
    python benchmarks/bench_reliability.py kill  [--cycles 20]             # SIGKILL during writes
    python benchmarks/bench_reliability.py serve                            # for schemathesis

Index: BM25 over the bundled SciFact collection (data/scifact, 5,183 abstracts), built once
into a temporary folder. Every client has its own API key (read and write), as separate
applications would; ``--heavy`` adds one client that sends, in a loop, the heaviest search the
default limits allow: 64 queries of 2,048 characters, k = 1,000, with text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.service.server import ServerProcess  # noqa: E402  (the tests' server runner)

KEY = "key-{}-0123456789"


def prepare(root: Path, clients: list[str]) -> tuple[Path, Path]:
    """Build the index (once) and write a config with one key per client."""
    from cormorant.data import load_dataset
    from cormorant.retrieval.assemble import save_index
    from cormorant.service.auth import hash_key

    index = root / "index"
    if not index.exists():
        save_index("bm25", load_dataset(REPO / "data" / "scifact").corpus, index)
    keys = [{"name": c, "sha256": hash_key(KEY.format(c)), "scopes": ["read", "write", "admin"]}
            for c in clients]
    config = root / "service.yaml"
    config.write_text(json.dumps({"indexes": {"scifact": str(index)}, "api_keys": keys,
                                  "log_level": "warning"}))
    return index, config


def start(config: Path, root: Path, port: int | None = None) -> ServerProcess:
    """``cormorant serve`` on 127.0.0.1, ready (the tests' own server runner)."""
    return ServerProcess(config, root / "server.log", port=port).start()


def queries() -> list[str]:
    from cormorant.data import load_dataset

    return list(load_dataset(REPO / "data" / "scifact").split("test").queries.values())


async def searcher(client: httpx.AsyncClient, name: str, texts: list[str], stop: float,
                   stats: dict) -> None:
    headers = {"X-API-Key": KEY.format(name)}
    while time.monotonic() < stop:
        body = {"query": random.choice(texts), "k": 10}
        t = time.perf_counter()
        try:
            answer = await client.post("/v1/indexes/scifact/search", json=body, headers=headers)
            ok = answer.status_code == 200
        except httpx.HTTPError:
            ok = False
        stats["latency"].append(time.perf_counter() - t)
        stats["requests"] += 1
        stats["errors"] += not ok


async def writer(client: httpx.AsyncClient, name: str, stop: float, stats: dict) -> None:
    headers = {"X-API-Key": KEY.format(name)}
    n = 0
    while time.monotonic() < stop:
        n += 1
        doc = {"doc_id": f"{name}-{n}", "title": "live", "text": f"live document {n} about cells"}
        try:
            answer = await client.put("/v1/indexes/scifact/documents",
                                      json={"documents": [doc]}, headers=headers)
            ok = answer.status_code == 200
            if ok and n % 2 == 0:
                answer = await client.request("DELETE", "/v1/indexes/scifact/documents",
                                              json={"ids": [f"{name}-{n - 1}"]}, headers=headers)
                ok = answer.status_code == 200
        except httpx.HTTPError:
            ok = False
        stats["writes"] += 1
        stats["write_errors"] += not ok


async def heavy(client: httpx.AsyncClient, stop: float, stats: dict) -> None:
    headers = {"X-API-Key": KEY.format("heavy")}
    words = " ".join(queries())
    body = {"queries": [words[i * 100:i * 100 + 2048] for i in range(64)], "k": 1000,
            "return_text": True}
    while time.monotonic() < stop:
        t = time.perf_counter()
        try:
            answer = await client.post("/v1/indexes/scifact/search", json=body, headers=headers)
            ok = answer.status_code == 200
            stats["heavy_bytes"] = len(answer.content)
        except httpx.HTTPError:
            ok = False
        stats["heavy_latency"].append(time.perf_counter() - t)
        stats["heavy_errors"] += not ok


async def load(url: str, seconds: float, with_heavy: bool) -> dict:
    stats = {"latency": [], "requests": 0, "errors": 0, "writes": 0, "write_errors": 0,
             "heavy_latency": [], "heavy_errors": 0, "heavy_bytes": 0}
    texts = queries()
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=60,
                                 limits=limits) as client:
        stop = time.monotonic() + seconds
        tasks = [searcher(client, f"s{i}", texts, stop, stats) for i in range(32)]
        tasks += [writer(client, f"w{i}", stop, stats) for i in range(4)]
        if with_heavy:
            tasks.append(heavy(client, stop, stats))
        await asyncio.gather(*tasks)
    lat = sorted(stats.pop("latency"))
    heavy_lat = sorted(stats.pop("heavy_latency"))
    return {**stats, "seconds": seconds, "search_p50_ms": 1000 * statistics.median(lat),
            "search_p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))],
            "searches_per_s": len(lat) / seconds,
            "heavy_requests": len(heavy_lat),
            "heavy_p50_s": statistics.median(heavy_lat) if heavy_lat else None}


def kill_cycles(config: Path, cycles: int) -> dict:
    """Write, SIGKILL at a random moment, restart, check every acknowledged write."""
    acknowledged: dict[str, str] = {}
    deleted: set[str] = set()
    lost = 0
    headers = {"X-API-Key": KEY.format("w0")}
    for cycle in range(cycles):
        server = start(config, config.parent)
        base = f"{server.url}/v1/indexes/scifact"
        for doc_id, text in acknowledged.items():  # everything acknowledged before is there
            got = httpx.get(f"{base}/documents/{doc_id}", headers=headers, timeout=30)
            lost += got.status_code != 200 or got.json()["text"] != text
        for doc_id in deleted:
            lost += httpx.get(f"{base}/documents/{doc_id}", headers=headers,
                              timeout=30).status_code != 404
        kill_at = time.monotonic() + random.uniform(0.3, 1.5)
        n = 0
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < kill_at:
                n += 1
                doc_id, text = f"c{cycle}-{n}", f"cycle {cycle} write {n}"
                try:
                    answer = client.put(f"{base}/documents", headers=headers, json={
                        "documents": [{"doc_id": doc_id, "text": text}]})
                except httpx.HTTPError:
                    break
                if answer.status_code == 200:
                    acknowledged[doc_id] = text
                if n % 5 == 0 and answer.status_code == 200:
                    gone = client.request("DELETE", f"{base}/documents", headers=headers,
                                          json={"ids": [doc_id]})
                    if gone.status_code == 200:
                        acknowledged.pop(doc_id)
                        deleted.add(doc_id)
        server.kill()  # SIGKILL: no shutdown code runs
    server = start(config, config.parent)
    base = f"{server.url}/v1/indexes/scifact"
    for doc_id, text in acknowledged.items():
        got = httpx.get(f"{base}/documents/{doc_id}", headers=headers, timeout=30)
        lost += got.status_code != 200 or got.json()["text"] != text
    server.terminate()
    return {"cycles": cycles, "acknowledged_writes": len(acknowledged),
            "acknowledged_deletes": len(deleted), "lost": lost}


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("what", choices=["load", "kill", "serve"])
    args.add_argument("--seconds", type=float, default=60)
    args.add_argument("--heavy", action="store_true")
    args.add_argument("--cycles", type=int, default=20)
    args.add_argument("--root", type=Path, default=None)
    args.add_argument("--port", type=int, default=None)
    opts = args.parse_args()
    root = opts.root or Path(tempfile.mkdtemp(prefix="cormorant-reliability-"))
    clients = [f"s{i}" for i in range(32)] + [f"w{i}" for i in range(4)] + ["heavy", "fuzz"]
    _, config = prepare(root, clients)
    if opts.what == "kill":
        print(json.dumps(kill_cycles(config, opts.cycles)))
        return
    server = start(config, root, opts.port)
    # SIGTERM to this script stops the server too (the default handler would skip `finally`
    # and leave `cormorant serve` running, holding the index's lock).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if opts.what == "serve":
            print(f"serving on {server.url} with key {KEY.format('fuzz')}", flush=True)
            server.proc.wait()
        else:
            print(json.dumps(asyncio.run(load(server.url, opts.seconds, opts.heavy))))
    finally:
        if server.proc.poll() is None:
            server.terminate()


if __name__ == "__main__":
    main()
