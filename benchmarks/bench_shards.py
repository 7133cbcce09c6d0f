"""Sharded indexes against one index over the same documents: quality and speed.

For SciFact and NFCorpus (BEIR test splits), one index of
``rrf(bm25, dense, dense(index=ivf), dense(index=hnsw))`` (all-MiniLM-L6-v2, corpus
embeddings from the cache) and sharded ones of S = 1, 2, 4, 8 shards built from the same
pipeline (``save_sharded_index``: the pipeline built once, split by the routing hash, IVF
centroids shared). For each S:

- nDCG@10 and R@100 of ``bm25``, flat ``dense`` and ``rrf(bm25, dense)``, sharded and single,
  and whether the top 100 are the same ids in the same order (with the largest score
  difference): the goal for exact stages is identity;
- for the approximate kinds (``dense(index=ivf)``, ``dense(index=hnsw)``), recall of the exact
  (flat, single index) top 10, sharded and single;
- search time for all test queries (batches of 64, median of ``--repeats`` interleaved runs):
  all shards share this process's cores, so this measures the router's overhead, not a
  speed-up.

Fan-out (``--part fanout``): searches/s of SciFact ``bm25``, ``dense`` and
``rrf(bm25, dense)`` sharded S = 1, 2, 4 in this process, the first ``--requests`` test
queries (default 20) one query per search, with the router calling its shards at once
(``retrieval/fanout.py``) against one after another (the loop it had before, patched in
here), interleaved, medians of ``--repeats`` runs.

Encoding throughput (``--part encoding``): the first ``--docs`` SciFact documents encoded
with all-MiniLM-L6-v2 in this process (``corpus_embeddings``, what a build does without
``--ray``) and through ``RayCluster`` (Ray Data ``map_batches`` on an actor pool of 1 and 2
actors, a local ``ray.init(num_cpus=2)``), the same texts, medians of ``--repeats`` runs after a
warm-up; plus Ray's start-up time (``ray.init``) and the first encoding on a fresh pool
(actors loading the model). Ray gives each actor one CPU, so torch runs one thread per actor;
in process, torch uses both cores.

Serving (``--part serving``): SciFact ``bm25`` in 2 shards behind the REST API, three ways at
once: ``cormorant serve`` in its own process (the shards opened in process: what a user runs
without Ray), and on Ray Serve (a local ``ray.init(num_cpus=2)``) with 1 and with 2 reader
replicas per shard (each shard also has its writer; the ingress holds the router), each on
its own copy of the index. Per round, in turn: the test queries at concurrency 8 (client
latency p50/p99, requests/s; the same top 10 as the single index checked), then 20 writes of
one document each, one at a time (latency from request to acknowledgement: the write is in
the owning shard's fsynced log). Percentiles pool the rounds.

Speed on a synthetic collection (``--part synthetic``, ``--docs``, default 1,000,000;
``synthetic_shards.py``: Zipf-distributed words, random unit vectors in the embedding cache,
so no encoder runs on documents): for the single index (S=0 in ``--shard-counts``) and
S = 1, 2, 4, 8 shards of ``rrf(bm25, dense)``, the build time (``save_index`` /
``save_sharded_index`` in process, corpus embeddings from the cache), queries per second and
p50/p99 latency of one query at a time (``bm25``; flat ``dense`` searched from query vectors
encoded beforehand by the real query encoder, whose time is reported once), and the latency
of adding one document through the index's write path (``handle.live.add``: routed to its
shard, logged durably, encoded for ``dense``). Each ``--shard-counts`` run adds its rows to
what earlier runs wrote, so the sizes can be measured one process at a time (memory);
``--quick`` there means 20,000 documents.

All of it is simulated on one 2-core machine: shards are folders, searched in one process;
the "cluster" is two CPU actors on the same cores. ``--quick`` runs SciFact with S = 1, 2
only and encodes 200 documents.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    dataset_path,
    earlier,
    interleaved,
    machine,
    memory_gb,
    parser,
    repeats,
    reset_peak_memory,
)

from cormorant.data import load_dataset  # noqa: E402
from cormorant.eval.measures import evaluate  # noqa: E402
from cormorant.retrieval.assemble import open_index, save_index  # noqa: E402
from cormorant.retrieval.shard_index import save_sharded_index  # noqa: E402

BUILT = "rrf(bm25, dense, dense(index=ivf), dense(index=hnsw))"
EXACT = ["bm25", "dense", "rrf(bm25, dense)"]
APPROXIMATE = ["dense(index=ivf)", "dense(index=hnsw)"]
MEASURES = ["nDCG@10", "R@100"]


def search(handle, text: str, queries: dict[str, str], k: int):  # noqa: ANN001, ANN201
    pipe = handle.open_pipeline(text)
    ids = list(queries)
    run = {}
    for start in range(0, len(ids), 64):
        run.update(pipe.search({q: queries[q] for q in ids[start:start + 64]}, k=k))
    return run


def same_ranking(got: dict, want: dict) -> tuple[bool, float]:
    identical, worst = True, 0.0
    for qid, docs in want.items():
        if list(got.get(qid, {})) != list(docs):
            identical = False
        for doc, score in docs.items():
            if doc in got.get(qid, {}):
                worst = max(worst, abs(got[qid][doc] - score))
    return identical, worst


def recall_of_exact(got: dict, exact: dict, k: int = 10) -> float:
    values = []
    for qid, docs in exact.items():
        top = list(docs)[:k]
        if top:
            values.append(len(set(top) & set(list(got.get(qid, {}))[:k])) / len(top))
    return statistics.fmean(values)


def bench_dataset(name: str, shard_counts: list[int], root: Path, rounds: int) -> dict:
    dataset = load_dataset(dataset_path(name))
    split = dataset.split("test")
    queries, qrels = split.queries, split.qrels
    single = open_index(save_index(BUILT, dataset.corpus, root / f"{name}-single"))
    want = {text: search(single, text, queries, 100) for text in EXACT + APPROXIMATE}
    flat = want["dense"]
    result: dict = {"documents": single.live.count, "queries": len(queries), "single": {
        text: {**evaluate(want[text], qrels, MEASURES).aggregate,
               "recall_of_exact_top10": recall_of_exact(want[text], flat)}
        for text in want}, "sharded": {}}
    for shards in shard_counts:
        handle = open_index(save_sharded_index(BUILT, dataset.corpus,
                                               root / f"{name}-{shards}", shards))
        rows = {}
        for text in EXACT + APPROXIMATE:
            got = search(handle, text, queries, 100)
            identical, worst = same_ranking(got, want[text])
            rows[text] = {**evaluate(got, qrels, MEASURES).aggregate,
                          "identical_top100": identical, "max_score_difference": worst,
                          "recall_of_exact_top10": recall_of_exact(got, flat)}
        times = interleaved({"single": lambda: search(single, "rrf(bm25, dense)", queries, 10),
                             "sharded": lambda h=handle: search(h, "rrf(bm25, dense)",
                                                                queries, 10)}, rounds)
        rows["search_seconds_rrf"] = {k: statistics.median(v) for k, v in times.items()}
        result["sharded"][str(shards)] = rows
        print(name, shards, json.dumps(rows, default=float), flush=True)
    return result


FANOUT_PIPELINES = ["bm25", "dense", "rrf(bm25, dense)"]


def bench_fanout(root: Path, shard_counts: list[int], count: int, rounds: int) -> dict:
    """Searches/s of a sharded SciFact index in this process, one query per search (what a
    served search is), the router fanning its shard calls out on its thread pool against the
    loop it had before (every call made one after another), interleaved on the same load."""
    import cormorant.retrieval.shard_index as shard_index
    import cormorant.retrieval.sharded as sharded
    from cormorant.retrieval.fanout import fan_out

    def one_after_another(calls, parallel=True):  # noqa: ANN001, ANN202, ARG001
        return [call() for call in calls]

    dataset = load_dataset(dataset_path("scifact"))
    texts = list(dataset.split("test").queries.values())[:count]
    results: dict = {"queries": len(texts), "per_search": 1, "shards": {}}
    for shards in shard_counts:
        handle = open_index(save_sharded_index("rrf(bm25, dense)", dataset.corpus,
                                               root / f"fanout-{shards}", shards))
        pipes = {text: handle.open_pipeline(text) for text in FANOUT_PIPELINES}

        def run(pipe, fan) -> None:  # noqa: ANN001
            sharded.fan_out = shard_index.fan_out = fan
            try:
                for text in texts:
                    pipe.search(text, k=10)
            finally:
                sharded.fan_out = shard_index.fan_out = fan_out

        row = {}
        for text, pipe in pipes.items():
            times = interleaved({"parallel": lambda p=pipe: run(p, fan_out),
                                 "sequential": lambda p=pipe: run(p, one_after_another)},
                                rounds)
            row[text] = {k: len(texts) / statistics.median(v) for k, v in times.items()}
        handle.close()
        results["shards"][str(shards)] = row
        print("fanout", shards, json.dumps(row), flush=True)
    return results


def bench_encoding(count: int, rounds: int) -> dict:
    import os
    import secrets
    import time

    import numpy as np

    from cormorant.index.embeddings import corpus_embeddings
    from cormorant.retrieval.dense import DenseRetriever, corpus_encoder
    from cormorant.retrieval.distributed import RayCluster, length_sorted_batches
    from cormorant.types import Corpus

    docs = [d for _, d in zip(range(count), load_dataset(dataset_path("scifact")).corpus,
                              strict=False)]
    corpus = Corpus.from_documents(docs, name="scifact-head")
    settings = DenseRetriever.declared({})
    encoder = corpus_encoder(settings)
    batches = length_sorted_batches(corpus, 256)
    reference = np.array(corpus_embeddings(encoder, corpus, use_cache=False))
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # this script's own process
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    began = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - began
    results: dict = {"documents": count, "ray_init_seconds": startup}

    def on_ray(actors: int) -> None:
        out = np.zeros_like(reference)
        for batch in RayCluster("auto", actors=actors).encode(settings, batches):
            out[batch["row"]] = batch["vector"]
        results[f"max_difference_ray_{actors}"] = float(np.abs(out - reference).max())

    first = {}
    for actors in (1, 2):
        began = time.perf_counter()
        on_ray(actors)
        first[f"ray_{actors}_actors"] = time.perf_counter() - began
    times = interleaved({"in_process": lambda: corpus_embeddings(encoder, corpus, use_cache=False),
                         "ray_1_actor": lambda: on_ray(1), "ray_2_actors": lambda: on_ray(2)},
                        rounds, warmup=False)
    results["first_run_seconds"] = first
    results["seconds"] = {k: statistics.median(v) for k, v in times.items()}
    results["documents_per_second"] = {k: count / v for k, v in results["seconds"].items()}
    ray.shutdown()
    print("encoding", json.dumps(results), flush=True)
    return results


SYNTHETIC = "rrf(bm25, dense)"


def latencies(search, items: list) -> dict:  # noqa: ANN001
    """``search(item)`` one at a time (a single client), after a warm-up of 20."""
    import time

    for item in items[:20]:
        search(item)
    seconds = []
    for item in items:
        began = time.perf_counter()
        search(item)
        seconds.append(time.perf_counter() - began)
    values = sorted(seconds)
    return {"qps": len(values) / sum(values), "p50_ms": 1000 * values[len(values) // 2],
            "p99_ms": 1000 * values[min(len(values) - 1, int(0.99 * len(values)))]}


def write_latency(path: Path, count: int) -> dict:
    """Milliseconds to add one new document (durable and searchable on return), median and
    worst of ``count`` adds, through the index's own write path."""
    import time

    from cormorant.types import Document

    seconds = []
    with open_index(path, write=True) as handle:
        handle.live.add([Document("warm-0", "w10 w20 w30")])
        for i in range(count):
            doc = Document(f"new-{i}", f"w{10 + i} w{200 + i} w{3000 + i} w{7 * i}")
            began = time.perf_counter()
            handle.live.add([doc])
            seconds.append(time.perf_counter() - began)
    return {"median_ms": 1000 * statistics.median(seconds), "max_ms": 1000 * max(seconds)}


def bench_synthetic(count: int, shard_counts: list[int], root: Path, queries: int) -> dict:
    """Build time, query latency and write latency against shard count (0: one index)."""
    import os
    import resource
    import shutil
    import time

    from synthetic_shards import prefill_random_embeddings, synthetic_corpus, synthetic_queries

    from cormorant.retrieval.dense import DenseRetriever

    os.environ["CORMORANT_CACHE"] = str(root / "cache")  # 1.5 GB of random vectors: not kept
    began = time.perf_counter()
    corpus = synthetic_corpus(count)
    prefill_random_embeddings(corpus, DenseRetriever.declared({}))
    generated = time.perf_counter() - began
    asked = synthetic_queries(queries)
    rows: dict = {}
    for shards in shard_counts:
        out = root / f"synthetic-{shards}"
        reset_peak_memory()
        before = memory_gb("VmRSS")
        began = time.perf_counter()
        if shards == 0:
            save_index(SYNTHETIC, corpus, out)
        else:
            save_sharded_index(SYNTHETIC, corpus, out, shards)
        # The build's own peak (resident, file-backed pages of the mapped cache included),
        # from what the process held before it (the corpus, in memory here).
        row: dict = {"build_seconds": time.perf_counter() - began,
                     "rss_before_build_gb": before, "build_peak_rss_gb": memory_gb()}
        handle = open_index(out)
        bm25 = handle.open_pipeline("bm25")
        row["bm25"] = latencies(lambda text, p=bm25: p.search(text, k=10), list(asked.values()))
        # dense: the index's search alone, from query vectors encoded once beforehand (the
        # query encoder's time is the same for every S: measured once, below).
        dense = handle.open_pipeline("dense").stage
        began = time.perf_counter()
        vectors = dense.encode_queries(asked)
        row["query_encoding_ms_per_query"] = 1000 * (time.perf_counter() - began) / len(asked)
        row["dense"] = latencies(lambda v, d=dense: d.search_vectors(["q"], v[None], 10),
                                 list(vectors))
        handle.close()
        row["add_one_document"] = write_latency(out, 20)
        row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        rows["single" if shards == 0 else str(shards)] = row
        print("synthetic", shards, json.dumps(row), flush=True)
        shutil.rmtree(out)
    return {"documents": count, "queries": queries, "generate_seconds": generated,
            "pipeline": SYNTHETIC, "rows": rows}


SERVE_SHARDS, SERVE_CONCURRENCY, SERVE_WRITES = 2, 8, 20


def bench_serving(root: Path, requests: int, rounds: int) -> dict:
    """Queries/s and p50/p99 latency of searches and of writes through the router: in
    process (``cormorant serve``) against Ray Serve with 1 and 2 replicas per shard."""
    import asyncio
    import os
    import secrets
    import shutil

    from bench_service import KEY, load, pooled

    from cormorant.service.auth import hash_key

    corpus = load_dataset(dataset_path("scifact"))
    texts = list(corpus.split("test").queries.values())
    built = save_sharded_index("bm25", corpus.corpus, root / "serve-idx", SERVE_SHARDS)
    single = open_index(save_index("bm25", corpus.corpus, root / "serve-one"))
    tops = {t: [d for d, _ in single.pipeline.search({"0": t}, k=10).ranked("0")] for t in texts}
    single.close()
    keys = [{"name": "bench", "sha256": hash_key(KEY), "scopes": ["read", "write"]}]
    limits = {"max_in_flight_per_key": 64, "requests_per_second_per_key": 100_000,
              "burst_per_key": 100_000}

    def config(name: str) -> dict:
        return {"indexes": {"scifact": str(shutil.copytree(built, root / f"serve-{name}"))},
                "api_keys": keys, "limits": limits, "log_level": "warning"}

    os.environ.setdefault("RAY_AUTH_MODE", "token")  # this script's own process
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import ray
    from ray import serve
    from tests.service.server import ServerProcess, free_port

    from cormorant.service import load_settings
    from cormorant.service.ray_serve import build_application

    (root / "serve-in-process.yaml").write_text(json.dumps(config("in-process")))
    server = ServerProcess(root / "serve-in-process.yaml", root / "serve.log").start(300)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    urls = {"in_process": server.url}
    for replicas in (1, 2):
        name = f"ray_{replicas}_replicas"
        app = build_application(load_settings(None, **config(name)), replicas, replica_cpus=0)
        serve.run(app, name=name, route_prefix=f"/{name}")
        urls[name] = f"http://127.0.0.1:{port}/{name}"
        wait_ready(urls[name])  # the app is up; its index loads after
    searches: dict[str, list] = {n: [] for n in urls}
    writes: dict[str, list[float]] = {n: [] for n in urls}
    try:
        for round_ in range(rounds):
            for name, url in urls.items():
                searches[name].append(asyncio.run(load(url, texts, requests,
                                                       SERVE_CONCURRENCY, tops)))
                writes[name].extend(write_latencies(url, f"{name}-{round_}"))
    finally:
        serve.shutdown()
        ray.shutdown()
        server.proc.terminate()
        server.proc.wait(120)  # it commits its shards' writes on the way out
    results = {"shards": SERVE_SHARDS, "concurrency": SERVE_CONCURRENCY,
               "requests_per_round": requests, "rounds": rounds,
               "search": {n: pooled(r) for n, r in searches.items()},
               "write": {n: write_summary(w) for n, w in writes.items()}}
    print("serving", json.dumps(results), flush=True)
    return results


def wait_ready(url: str, timeout: float = 300) -> None:
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/readyz", timeout=30).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready in {timeout:g} s")
        time.sleep(0.5)


def write_latencies(url: str, tag: str) -> list[float]:
    """Seconds from sending a one-document write to its acknowledgement, one at a time."""
    import time

    import httpx
    from bench_service import KEY

    out = []
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=60) as client:
        for i in range(SERVE_WRITES):
            doc = {"doc_id": f"bench-{tag}-{i}", "text": f"written document {i} about {tag}"}
            began = time.perf_counter()
            client.put("/v1/indexes/scifact/documents",
                       json={"documents": [doc]}).raise_for_status()
            out.append(time.perf_counter() - began)
    return out


def write_summary(latencies: list[float]) -> dict:
    from bench_service import percentile

    return {"writes": len(latencies), "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "per_s": len(latencies) / sum(latencies)}


def main() -> None:
    args = parser(__doc__.splitlines()[0], "shards.json")
    args.add_argument("--part", choices=("all", "quality", "encoding", "serving", "synthetic",
                                         "fanout"), default="all")
    args.add_argument("--requests", type=int, default=None,
                      help="searches per serving setting and round (default 150), or per"
                      " fan-out setting and run (default 20)")
    args.add_argument("--docs", type=int, default=None,
                      help="documents encoded (default 1000), or synthetic (default 1000000)")
    args.add_argument("--shard-counts", type=int, nargs="+", default=[0, 1, 2, 4, 8],
                      help="synthetic: shard counts, 0 for the single index")
    args.add_argument("--queries", type=int, default=200, help="synthetic: queries timed")
    args = args.parse_args()
    rounds = repeats(args)
    plan = {"scifact": [1, 2]} if args.quick else {"scifact": [1, 2, 4, 8],
                                                   "nfcorpus": [1, 2, 4, 8]}
    out = {"machine": {**machine(), "note": "shards simulated on one machine"},
           "built": BUILT, "datasets": {}}
    before = earlier(args.out)  # one part at a time keeps the other's results
    out = {**before, **out, "datasets": before.get("datasets", {})}
    if args.part == "synthetic":
        count = args.docs or (20_000 if args.quick else 1_000_000)
        with tempfile.TemporaryDirectory() as tmp:
            got = bench_synthetic(count, args.shard_counts, Path(tmp), args.queries)
        kept = out.get("synthetic", {})
        if kept.get("documents") == count:  # earlier runs' shard counts kept
            got["rows"] = {**kept.get("rows", {}), **got["rows"]}
            got["generate_seconds"] = kept.get("generate_seconds", got["generate_seconds"])
        out["synthetic"] = got
    if args.part in ("all", "encoding"):
        out["encoding"] = bench_encoding(args.docs or (200 if args.quick else 1000), rounds)
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("all", "fanout"):
            out["fanout"] = bench_fanout(Path(tmp), [1, 2, 4], args.requests or 20, rounds)
        if args.part in ("all", "serving"):
            out["serving"] = bench_serving(Path(tmp), args.requests or (60 if args.quick
                                                                        else 150), rounds)
        for name, counts in plan.items() if args.part in ("all", "quality") else ():
            out["datasets"][name] = bench_dataset(name, counts, Path(tmp), rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
