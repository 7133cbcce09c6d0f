"""Vector search: cormorant's FaissIndex against raw FAISS, and approximate indexes against exact.

Compared, on the same vectors and queries:

(a) exact search: ``FaissIndex(dim, kind="flat", metric="ip").search(q, 10)`` against a raw
    ``faiss.IndexFlatIP``, both on the CPU, for a batch of queries (queries/s) and one query at
    a time (latency). Goal: cormorant/raw ratio >= 0.95 for both.
(b) approximate search through FaissIndex: ``hnsw``, ``ivf`` and ``ivfpq`` with cormorant's
    default parameters: build time (train + add, one run), queries/s and recall@10 against the
    exact top 10 from (a).

Data: clustered synthetic unit vectors, because real embeddings are clustered and approximate
indexes exploit that (on uniform noise every approximate index looks bad, and neighbours are
meaningless). A Gaussian mixture with Zipf-weighted clusters (one per 16 vectors) lives in a
64-dimensional latent space, is projected at random to 384 dimensions and gets isotropic noise;
queries come from the same mixture. The parameters were chosen so that, at SciFact's size, the
mean top-1 and top-10 neighbour cosines (0.68, 0.54) and IVF recall (0.99) are close to those of
real all-MiniLM-L6-v2 SciFact embeddings (0.67, 0.51, 0.98). ``--vectors FILE.npy`` uses real
embeddings instead (for example an entry of cormorant's embedding cache), holding out random
rows as queries.

How: one warm-up of each, then interleaved rounds (A, B, A, B, ...); the median round counts.
One-query latency alternates the two on every query and takes the median query. Builds are
timed once. ``--quick`` uses 20k vectors and leaves out ``ivfpq`` while its factory string
turns on FAISS's polysemous training (over a minute on 2 cores; see ``quick_kinds``);
``--kinds`` picks kinds. The full run uses 100k vectors.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from _common import interleaved, parser, repeats, summary, timed, write_json

SIZES = {"quick": 20_000, "full": 100_000}
DIM = 384
QUERIES = 1000
SINGLE_QUERIES = {"quick": 100, "full": 200}
K = 10
LATENT_DIM = 64
VECTORS_PER_CLUSTER = 16
SPREAD = 0.8  # within-cluster standard deviation in the latent space (centres: standard normal)
NOISE = 0.3  # isotropic noise added after projection, before normalising
APPROXIMATE = ("hnsw", "ivf", "ivfpq")


def quick_kinds() -> tuple[str, ...]:
    """The approximate kinds ``--quick`` measures: all, unless IVF-PQ's build would be slow.

    A factory string ``PQ48x8`` (without ``np``) makes FAISS run polysemous training, which
    dominates the build (over a minute on 2 cores, at any size) and changes no search result
    unless polysemous search is switched on; ``PQ48x8np`` skips it.
    """
    from cormorant.index.faiss_index import factory_string

    slow = not factory_string("ivfpq", SIZES["quick"], DIM).endswith("np")
    return tuple(kind for kind in APPROXIMATE if not (slow and kind == "ivfpq"))


def unit_rows(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def mixture(count: int, queries: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Corpus and query unit vectors drawn from one clustered distribution (module docstring)."""
    rng = np.random.default_rng(seed)
    clusters = max(1, count // VECTORS_PER_CLUSTER)
    centres = rng.standard_normal((clusters, LATENT_DIM), dtype=np.float32)
    weights = 1 / np.sqrt(np.arange(1, clusters + 1))  # Zipf-like: a few big topics, many small
    weights /= weights.sum()
    projection = rng.standard_normal((LATENT_DIM, dim), dtype=np.float32) / np.sqrt(LATENT_DIM)

    def draw(n: int) -> np.ndarray:
        latent = centres[rng.choice(clusters, n, p=weights)]
        latent += SPREAD * rng.standard_normal((n, LATENT_DIM), dtype=np.float32)
        return unit_rows(latent @ projection + NOISE * rng.standard_normal((n, dim), dtype=np.float32))

    return draw(count), draw(queries)


def real(path: Path, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a saved embedding matrix, ``queries`` random rows held out as queries."""
    rows = unit_rows(np.load(path).astype(np.float32))
    if len(rows) < 2 * queries:
        raise SystemExit(f"{path}: {len(rows)} rows; need at least {2 * queries}")
    order = np.random.default_rng(seed).permutation(len(rows))
    return rows[order[queries:]], rows[order[:queries]]


def row_ids(count: int) -> list[str]:
    return [str(i) for i in range(count)]


def recall(truth: np.ndarray, found: np.ndarray) -> float:
    """Mean fraction of each query's true top-k found in its approximate top-k."""
    hits = [len(np.intersect1d(t, f[f >= 0])) for t, f in zip(truth, found, strict=True)]
    return float(np.mean(hits)) / truth.shape[1]


def exact(vectors: np.ndarray, queries: np.ndarray, single: int,
          rounds: int) -> tuple[dict[str, Any], np.ndarray]:
    """Flat search, cormorant against raw FAISS: batch throughput and one-query latency.

    Returns the measurements and the exact top-K rows of every query (raw FAISS's).
    """
    import faiss

    from cormorant.index.faiss_index import FaissIndex

    dim = vectors.shape[1]
    ours = FaissIndex(dim, kind="flat", metric="ip", use_gpu=False)
    _, ours_build = timed(lambda: ours.add(row_ids(len(vectors)), vectors))
    raw = faiss.IndexFlatIP(dim)
    _, raw_build = timed(lambda: raw.add(vectors))
    searchers = {"cormorant": ours.search, "faiss": raw.search}
    samples = interleaved({name: partial(search, queries, K) for name, search in searchers.items()},
                          rounds)
    batch = {name: summary(samples[name], len(queries)) for name in searchers}
    # One query at a time: alternate the two on every query, so even a brief stall on a shared
    # machine hits both; the median per-query latency is robust to the stalls themselves.
    latencies: dict[str, list[float]] = {name: [] for name in searchers}
    for search in searchers.values():
        search(queries[:1], K)  # warm-up of the one-query path
    for query in queries[:single]:
        calls = {name: partial(search, query[None], K) for name, search in searchers.items()}
        for name, times in interleaved(calls, rounds, warmup=False).items():
            latencies[name].extend(times)
    one = {name: summary(times, 1) for name, times in latencies.items()}
    for timing in one.values():
        del timing["samples_s"]  # thousands of them; the spread is in min_s and max_s
    _, ours_rows = ours.search(queries, K)
    raw_scores, raw_rows = raw.search(queries, K)
    return {
        "build_s": {"cormorant": ours_build, "faiss": raw_build},
        "batch": {"queries": len(queries), "qps": {n: t["per_s"] for n, t in batch.items()},
                  "ratio": batch["cormorant"]["per_s"] / batch["faiss"]["per_s"], "timing": batch},
        "single": {"queries": single, "samples_per_query": rounds,
                   "latency_ms": {n: 1000 * t["median_s"] for n, t in one.items()},
                   "qps": {n: t["per_s"] for n, t in one.items()},
                   "ratio": one["cormorant"]["per_s"] / one["faiss"]["per_s"], "timing": one},
        "same_results": bool(np.array_equal(ours_rows, raw_rows)),
        "mean_neighbour_cosine": {"top1": float(raw_scores[:, 0].mean()),
                                  f"top{K}": float(raw_scores[:, K - 1].mean())},
        "goal_ratio": 0.95,
    }, raw_rows


def approximate(kind: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray,
                rounds: int) -> dict[str, Any]:
    """Build time, throughput and recall@K of one approximate FaissIndex kind."""
    from cormorant.index.faiss_index import FaissIndex

    index = FaissIndex(vectors.shape[1], kind=kind, metric="ip", use_gpu=False)
    _, build = timed(lambda: index.add(row_ids(len(vectors)), vectors))
    timing = summary(interleaved({kind: lambda: index.search(queries, K)}, rounds)[kind],
                     len(queries))
    _, found = index.search(queries, K)
    params = ({"ef_search": index.ef_search, "ef_construction": index.ef_construction}
              if kind == "hnsw" else {"nprobe": index.nprobe})
    return {"factory": index.factory, **params, "build_s": build, "qps": timing["per_s"],
            f"recall@{K}": recall(truth, found), "timing": timing}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import faiss

    size = "quick" if args.quick else "full"
    rounds = repeats(args)
    if args.vectors:
        vectors, queries = real(args.vectors, QUERIES)
        data = f"real embeddings from {args.vectors}; {QUERIES} random rows held out as queries"
    else:
        vectors, queries = mixture(SIZES[size], QUERIES, DIM)
        data = (f"synthetic clustered: Zipf-weighted Gaussian mixture (one centre per"
                f" {VECTORS_PER_CLUSTER} vectors, spread {SPREAD}) in {LATENT_DIM} latent dims,"
                f" randomly projected to {DIM} dims plus noise {NOISE}, unit length;"
                f" queries from the same mixture")
    flat, truth = exact(vectors, queries, min(SINGLE_QUERIES[size], len(queries)), rounds)
    print(f"flat, {len(vectors)} x {vectors.shape[1]}: batch of {len(queries)}:"
          f" cormorant {flat['batch']['qps']['cormorant']:.0f} q/s,"
          f" faiss {flat['batch']['qps']['faiss']:.0f} q/s, ratio {flat['batch']['ratio']:.3f};"
          f" one at a time: cormorant {flat['single']['latency_ms']['cormorant']:.3f} ms,"
          f" faiss {flat['single']['latency_ms']['faiss']:.3f} ms,"
          f" ratio {flat['single']['ratio']:.3f} (goal >= 0.95)")
    results = {}
    kinds = args.kinds if args.kinds is not None else (quick_kinds() if args.quick else APPROXIMATE)
    for kind in kinds:
        results[kind] = approximate(kind, vectors, queries, truth, rounds)
        r = results[kind]
        print(f"{kind:6} {r['factory']:>16}: build {r['build_s']:.1f} s, {r['qps']:.0f} q/s,"
              f" recall@{K} {r[f'recall@{K}']:.3f}")
    return {"benchmark": "search", "quick": args.quick, "data": data, "vectors": len(vectors),
            "dim": int(vectors.shape[1]), "queries": len(queries), "k": K, "metric": "ip",
            "device": "cpu", "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
            "repeats": rounds,
            "method": "one warm-up each, then interleaved rounds (A, B, A, B), median round;"
                      " one-query latency alternates A and B on every query, median query;"
                      " builds timed once",
            "flat": flat, "approximate": results,
            "not_measured": [kind for kind in APPROXIMATE if kind not in kinds]}


def main() -> None:
    args = parser(__doc__.split("\n\n")[0], "search.json")
    args.add_argument("--vectors", type=Path, help="a .npy matrix of real embeddings to use"
                      " instead of synthetic clustered vectors")
    args.add_argument("--kinds", nargs="*", choices=APPROXIMATE, default=None,
                      help=f"approximate kinds to measure (default: {' '.join(APPROXIMATE)};"
                           " with --quick, ivfpq only if its build is quick)")
    options = args.parse_args()
    write_json(options.out, run(options))


if __name__ == "__main__":
    main()
