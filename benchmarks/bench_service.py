"""The REST service's own cost: a real uvicorn process on 127.0.0.1 against in-process search.

Index: SciFact (5,183 abstracts) with ``dense`` (all-MiniLM-L6-v2, flat inner product), built
from the embedding cache. Queries: SciFact's 300 test queries, cycled; k = 10.

Measured:

(a) in process: ``open_index(path).pipeline.search({"0": q}, k=10)`` one query at a time
    (latency p50/p99, queries/s), and 32 queries per call (the best case for batching);
(b) the service, started as ``cormorant serve --config ...`` in its own process, with
    micro-batching on (max wait 2 ms, batch 32) and off, at concurrency 1, 8 and 32: client
    latency p50/p99 (request sent to response parsed) and requests/s over a bounded loop of
    requests (``--requests``, default 150 per setting and round; 30 warm-up requests first).

Both servers run throughout and every setting is measured once per round, interleaved with
the in-process runs (``--rounds``, default 2), so load from other work hits all alike;
percentiles pool the rounds' latencies.

Ratios: service p50 / in-process p50 at concurrency 1 (the per-request overhead), and service
requests/s / in-process one-at-a-time queries/s at each concurrency. Client, server and
in-process runs share the machine's two cores, so the client's own work (httpx, JSON) is part
of what the service numbers pay. Results are checked to be the same documents in the same order.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import dataset_path, parser, write_json

# As the service sets for itself (cormorant/service/__init__.py): this process encodes too, and
# its OpenMP threads must not spin on the cores the servers are measured on.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CONCURRENCY = (1, 8, 32)
K = 10
KEY = "bench-key-not-secret"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def latency_summary(latencies: list[float], wall: float) -> dict[str, Any]:
    return {"requests": len(latencies), "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "mean_ms": statistics.fmean(latencies) * 1000, "per_s": len(latencies) / wall}


def build_index(out: Path) -> Path:
    from cormorant.data import load_dataset
    from cormorant.retrieval.assemble import save_index

    corpus = load_dataset(dataset_path("scifact")).corpus
    start = time.perf_counter()
    save_index("dense", corpus, out)
    print(f"index built in {time.perf_counter() - start:.1f}s (embeddings from the cache if there)")
    return out


def queries() -> list[str]:
    from cormorant.data import load_dataset

    split = load_dataset(dataset_path("scifact")).split("test")
    return list(split.queries.values())


def open_in_process(index: Path) -> Any:
    from cormorant.retrieval.assemble import open_index

    pipeline = open_index(index).pipeline
    for text in queries()[:30]:  # warm-up
        pipeline.search({"0": text}, k=K)
    return pipeline


def in_process(pipeline: Any, texts: list[str], total: int
               ) -> tuple[dict[str, Any], float, dict[str, list[str]]]:
    """One query per call (latencies kept), then 32 per call (rate only), and each query's top."""
    latencies, tops = [], {}
    start = time.perf_counter()
    for i in range(total):
        text = texts[i % len(texts)]
        t0 = time.perf_counter()
        run = pipeline.search({"0": text}, k=K)
        latencies.append(time.perf_counter() - t0)
        tops.setdefault(text, [d for d, _ in run.ranked("0")])
    one = latency_summary(latencies, time.perf_counter() - start)
    one["latencies"] = latencies
    start = time.perf_counter()
    for i in range(0, total, 32):
        chunk = [texts[j % len(texts)] for j in range(i, min(total, i + 32))]
        pipeline.search({str(n): t for n, t in enumerate(chunk)}, k=K)
    return one, total / (time.perf_counter() - start), tops


class Server:
    """``cormorant serve`` in its own process, on a free loopback port."""

    def __init__(self, index: Path, work: Path, batching: bool) -> None:
        from cormorant.service.auth import hash_key

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.service.server import ServerProcess

        config = work / f"service-{batching}.yaml"
        config.write_text(json.dumps({
            "indexes": {"scifact": str(index)},
            "api_keys": [{"name": "bench", "sha256": hash_key(KEY), "scopes": ["read"]}],
            "micro_batching": {"enabled": batching, "max_wait_ms": 2, "max_batch_size": 32},
            # One client at up to 32 requests in flight: the per-key caps, there to keep one key
            # from starving others, are lifted for this single-client throughput measurement.
            "limits": {"max_in_flight_per_key": 64, "requests_per_second_per_key": 100_000,
                       "burst_per_key": 100_000},
            "search_threads": 32, "log_level": "warning"}))
        self.process = ServerProcess(config, work / f"server-{batching}.log")

    def __enter__(self) -> Any:
        return self.process.start(timeout=300)

    def __exit__(self, *exc: object) -> None:
        if self.process.proc is not None and self.process.proc.poll() is None:
            self.process.proc.send_signal(signal.SIGTERM)
            try:
                self.process.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()


async def load(url: str, texts: list[str], total: int, concurrency: int,
               tops: dict[str, list[str]]) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": KEY}, limits=limits,
                                 timeout=120) as client:
        async def one(text: str) -> tuple[float, float, list[str]]:
            t0 = time.perf_counter()
            response = await client.post("/v1/indexes/scifact/search", json={"query": text, "k": K})
            body = response.json()
            elapsed = time.perf_counter() - t0
            response.raise_for_status()
            return elapsed, body["timing"]["total_ms"], [h["doc_id"] for h in body["results"][0]["hits"]]

        async def worker(jobs: asyncio.Queue[str], out: list[tuple[float, float, list[str], str]]) -> None:
            while True:
                try:
                    text = jobs.get_nowait()
                except asyncio.QueueEmpty:
                    return
                elapsed, server_ms, ids = await one(text)
                out.append((elapsed, server_ms, ids, text))

        async def run(count: int) -> tuple[list[tuple[float, float, list[str], str]], float]:
            jobs: asyncio.Queue[str] = asyncio.Queue()
            for i in range(count):
                jobs.put_nowait(texts[i % len(texts)])
            out: list[tuple[float, float, list[str], str]] = []
            start = time.perf_counter()
            await asyncio.gather(*(worker(jobs, out) for _ in range(concurrency)))
            return out, time.perf_counter() - start

        await run(30)  # warm-up: connections, threads, encoder
        results, wall = await run(total)
    mismatches = sum(1 for _, _, ids, text in results if text in tops and ids != tops[text])
    summary = latency_summary([r[0] for r in results], wall)
    summary["latencies"] = [r[0] for r in results]
    summary["server_p50_ms"] = percentile([r[1] for r in results], 50)
    summary["different_results"] = mismatches
    return summary


def pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary of several rounds: percentiles over every latency, rate over all time."""
    latencies = [x for r in rounds for x in r.pop("latencies")]
    wall = sum(r["requests"] / r["per_s"] for r in rounds)
    out = latency_summary(latencies, wall)
    out["per_round_per_s"] = [r["per_s"] for r in rounds]
    for key in ("server_p50_ms", "different_results"):
        if key in rounds[0]:
            out[key] = statistics.median(r[key] for r in rounds) if key == "server_p50_ms" \
                else sum(r[key] for r in rounds)
    return out


def main() -> None:
    args = parser(__doc__.splitlines()[0], "service.json")
    args.add_argument("--requests", type=int, default=None,
                      help="timed requests per setting and round (default 150; 60 with --quick)")
    args.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 2)")
    options = args.parse_args()
    total = options.requests or (60 if options.quick else 150)
    rounds = options.rounds or (1 if options.quick else 2)
    texts = queries()
    samples: dict[str, list[dict[str, Any]]] = {}
    batched: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        work = Path(tmp)
        index = build_index(work / "scifact-dense")
        pipeline = open_in_process(index)
        # One process per index directory (it holds the live-write lock): the second gets a copy.
        copy = Path(shutil.copytree(index, work / "scifact-dense-2"))
        with Server(index, work, True) as on, Server(copy, work, False) as off:
            for round_ in range(rounds):
                # Interleaved: every setting sees the same share of whatever else the machine runs.
                one, rate, tops = in_process(pipeline, texts, total)
                samples.setdefault("in_process", []).append(one)
                batched.append(rate)
                for concurrency in CONCURRENCY:
                    for name, server in (("micro_batching", on), ("no_batching", off)):
                        result = asyncio.run(load(server.url, texts, total, concurrency, tops))
                        samples.setdefault(f"{name}/{concurrency}", []).append(result)
                        print(f"round {round_ + 1} {name} c={concurrency}: p50 {result['p50_ms']:.1f} ms,"
                              f" p99 {result['p99_ms']:.1f} ms, {result['per_s']:.1f} req/s,"
                              f" different results {result['different_results']}")
    summary = {key: pooled(runs) for key, runs in samples.items()}
    base = summary.pop("in_process")
    print(f"in process: p50 {base['p50_ms']:.1f} ms, {base['per_s']:.1f} q/s;"
          f" 32 per call {statistics.median(batched):.1f} q/s")
    service = {name: {str(c): summary[f"{name}/{c}"] for c in CONCURRENCY}
               for name in ("micro_batching", "no_batching")}
    ratios = {name: {c: {"p50_vs_in_process": r["p50_ms"] / base["p50_ms"],
                         "throughput_vs_in_process": r["per_s"] / base["per_s"]}
                     for c, r in runs.items()} for name, runs in service.items()}
    write_json(options.out, {
        "index": "scifact dense (all-MiniLM-L6-v2, flat)", "k": K, "requests_per_setting": total,
        "rounds": rounds, "in_process": {"one_at_a_time": base,
                                         "batched_32_per_s": statistics.median(batched)},
        "service": service, "ratios": ratios,
        "notes": "client, servers and in-process runs share the machine's 2 cores; no GPU"})


if __name__ == "__main__":
    main()
