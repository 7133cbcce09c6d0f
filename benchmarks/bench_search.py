"""Vector search: cormorant's FaissIndex against raw FAISS, and approximate indexes against exact.

Compared, on the same vectors and queries:

(a) exact search: ``FaissIndex(dim, kind="flat", metric="ip").search(q, 10)`` against a raw
    ``faiss.IndexFlatIP``, both on the CPU, for a batch of queries (queries/s) and one query at
    a time (latency). Goal: cormorant/raw ratio >= 0.95 for both.
(b) approximate search through FaissIndex: ``hnsw``, ``ivf`` and ``ivfpq`` with cormorant's
    default parameters: build time (train + add, one run), queries/s and recall@10 against the
    exact top 10 from (a).

Data: unit vectors from a Gaussian mixture (queries drawn from the same mixture), because real
embeddings are clustered and approximate indexes exploit that; on uniform noise every
approximate index looks bad. ``--vectors FILE.npy`` uses real embeddings instead (for example
an entry of cormorant's embedding cache), holding out random rows as queries.

How: one warm-up of each, then interleaved rounds (A, B, A, B, ...); the median round counts.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from _common import interleaved, parser, repeats, summary, timed, write_json

SIZES = {"quick": 20_000, "full": 100_000}
DIM = 384
QUERIES = 1000
SINGLE_QUERIES = {"quick": 100, "full": 200}
K = 10
CLUSTERS = 256
SPREAD = 0.6  # noise scale relative to cluster centres (both per-coordinate standard normal)
APPROXIMATE = ("hnsw", "ivf", "ivfpq")
# IVF-PQ's build is mostly FAISS training 48 product quantizers (k-means, 256 centroids each):
# over a minute at 20k vectors on 2 cores, so --quick leaves it out unless --kinds names it.
QUICK_APPROXIMATE = ("hnsw", "ivf")


def unit_rows(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def mixture(count: int, queries: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Corpus and query unit vectors drawn from one Gaussian mixture of ``CLUSTERS`` centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, dim), dtype=np.float32)

    def draw(n: int) -> np.ndarray:
        noise = rng.standard_normal((n, dim), dtype=np.float32)
        return unit_rows(centres[rng.integers(0, CLUSTERS, n)] + SPREAD * noise)

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
    ones = [q[None] for q in queries[:single]]
    samples = interleaved({
        "cormorant_batch": lambda: ours.search(queries, K),
        "faiss_batch": lambda: raw.search(queries, K),
        "cormorant_single": lambda: [ours.search(q, K) for q in ones],
        "faiss_single": lambda: [raw.search(q, K) for q in ones],
    }, rounds)
    batch = {name: summary(samples[f"{name}_batch"], len(queries)) for name in ("cormorant", "faiss")}
    one = {name: summary(samples[f"{name}_single"], single) for name in ("cormorant", "faiss")}
    _, ours_rows = ours.search(queries, K)
    _, raw_rows = raw.search(queries, K)
    return {
        "build_s": {"cormorant": ours_build, "faiss": raw_build},
        "batch": {"queries": len(queries), "qps": {n: t["per_s"] for n, t in batch.items()},
                  "ratio": batch["cormorant"]["per_s"] / batch["faiss"]["per_s"], "timing": batch},
        "single": {"queries": single,
                   "latency_ms": {n: 1000 / t["per_s"] for n, t in one.items()},
                   "qps": {n: t["per_s"] for n, t in one.items()},
                   "ratio": one["cormorant"]["per_s"] / one["faiss"]["per_s"], "timing": one},
        "same_results": bool(np.array_equal(ours_rows, raw_rows)),
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
    return {"factory": index.factory, "nprobe": index.nprobe, "ef_search": index.ef_search,
            "ef_construction": index.ef_construction, "build_s": build, "qps": timing["per_s"],
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
        data = (f"synthetic clustered: unit vectors from a Gaussian mixture of {CLUSTERS} standard"
                f" normal centres, noise {SPREAD} x standard normal; queries from the same mixture")
    flat, truth = exact(vectors, queries, min(SINGLE_QUERIES[size], len(queries)), rounds)
    print(f"flat, {len(vectors)} x {vectors.shape[1]}: batch of {len(queries)}:"
          f" cormorant {flat['batch']['qps']['cormorant']:.0f} q/s,"
          f" faiss {flat['batch']['qps']['faiss']:.0f} q/s, ratio {flat['batch']['ratio']:.3f};"
          f" one at a time: cormorant {flat['single']['latency_ms']['cormorant']:.3f} ms,"
          f" faiss {flat['single']['latency_ms']['faiss']:.3f} ms,"
          f" ratio {flat['single']['ratio']:.3f} (goal >= 0.95)")
    results = {}
    kinds = args.kinds if args.kinds is not None else (
        QUICK_APPROXIMATE if args.quick else APPROXIMATE)
    for kind in kinds:
        results[kind] = approximate(kind, vectors, queries, truth, rounds)
        r = results[kind]
        print(f"{kind:6} {r['factory']:>16}: build {r['build_s']:.1f} s, {r['qps']:.0f} q/s,"
              f" recall@{K} {r[f'recall@{K}']:.3f}")
    return {"benchmark": "search", "quick": args.quick, "data": data, "vectors": len(vectors),
            "dim": int(vectors.shape[1]), "queries": len(queries), "k": K, "metric": "ip",
            "device": "cpu", "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
            "repeats": rounds,
            "method": "one warm-up each, then interleaved rounds (A, B, A, B); median round;"
                      " builds timed once",
            "flat": flat, "approximate": results,
            "not_measured": [kind for kind in APPROXIMATE if kind not in kinds]}


def main() -> None:
    args = parser(__doc__.split("\n\n")[0], "search.json")
    args.add_argument("--vectors", type=Path, help="a .npy matrix of real embeddings to use"
                      " instead of synthetic clustered vectors")
    args.add_argument("--kinds", nargs="*", choices=APPROXIMATE, default=None,
                      help=f"approximate kinds to measure (default: {' '.join(APPROXIMATE)};"
                           f" with --quick: {' '.join(QUICK_APPROXIMATE)})")
    options = args.parse_args()
    write_json(options.out, run(options))


if __name__ == "__main__":
    main()
