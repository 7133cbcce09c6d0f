"""Vector search: cormorant's FaissIndex against raw FAISS, and approximate indexes against exact.

Vectors are a normalised Gaussian mixture (clustered, like real embeddings; uniform noise would
make every approximate index look bad). Flat search is timed for cormorant and raw
``faiss.IndexFlatIP`` on the same vectors, batched and one query at a time (goal: ratio >= 0.95).
HNSW, IVF and IVF-PQ report build time, queries per second and recall@10 of the exact top 10.
"""

from __future__ import annotations

import time

import numpy as np
from _common import interleaved, parser, write_json


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(256, dim))
    points = centers[rng.integers(0, 256, n)] + 0.6 * rng.normal(size=(n, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype("float32")


def recall_at_10(truth: np.ndarray, found: np.ndarray) -> float:
    return float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)]))


def main() -> None:
    args = parser(__doc__.split("\n\n")[0], "search.json").parse_args()
    import faiss

    from cormorant.index.faiss_index import FaissIndex

    n, dim, nq = (20_000, 384, 200) if args.quick else (100_000, 384, 1000)
    vectors, queries = clustered(n, dim, 0), clustered(nq, dim, 1)
    ids = [f"d{i}" for i in range(n)]
    ours = FaissIndex(dim, "flat")
    ours.add(ids, vectors)
    raw = faiss.IndexFlatIP(dim)
    raw.add(vectors)
    single = queries[:50]
    seconds = interleaved({
        "cormorant_batch": lambda: ours.search(queries, 10),
        "faiss_batch": lambda: raw.search(queries, 10),
        "cormorant_single": lambda: [ours.search(q[None], 10) for q in single],
        "faiss_single": lambda: [raw.search(q[None], 10) for q in single],
    }, repeats=3 if args.quick else 5)
    flat = {"qps_batch": {"cormorant": nq / seconds["cormorant_batch"],
                          "faiss": nq / seconds["faiss_batch"]},
            "ms_single": {"cormorant": 1000 * seconds["cormorant_single"] / len(single),
                          "faiss": 1000 * seconds["faiss_single"] / len(single)}}
    flat["ratio_batch"] = flat["qps_batch"]["cormorant"] / flat["qps_batch"]["faiss"]
    flat["ratio_single"] = flat["ms_single"]["faiss"] / flat["ms_single"]["cormorant"]
    print(f"flat: batch ratio {flat['ratio_batch']:.3f}, single ratio {flat['ratio_single']:.3f}")

    _, truth = raw.search(queries, 10)
    approximate = {}
    for kind in ("hnsw", "ivf", "ivfpq"):
        index = FaissIndex(dim, kind)
        start = time.perf_counter()
        index.add(ids, vectors)
        build = time.perf_counter() - start
        search_s = interleaved({"search": lambda index=index: index.search(queries, 10)}, 3)
        _, found = index.search(queries, 10)
        approximate[kind] = {"factory": index.factory, "build_s": build,
                             "qps": nq / search_s["search"],
                             "recall@10": recall_at_10(truth, found)}
        print(f"{kind}: {approximate[kind]}")
    write_json(args.out, {"benchmark": "search", "quick": args.quick, "vectors": n, "dim": dim,
                          "queries": nq, "data": "normalised Gaussian mixture, 256 clusters",
                          "flat": flat, "approximate": approximate,
                          "exact_qps": nq / seconds["faiss_batch"]})


if __name__ == "__main__":
    main()
