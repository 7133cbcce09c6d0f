"""MUVERA at scale on synthetic token sets: query latency against exact brute-force Chamfer,
index size and build time, and FDE encoding speed against ``muvera-python``.

Synthetic collection: each document draws 40-100 tokens (mean 70) around 8 of 4,096 shared
"term" directions plus noise, L2-normalised; each query takes 32 tokens near one document's
terms. Token vectors go to the float16, memory-mapped token store the ``muvera`` and
``chamfer`` stages use. Exact brute force is measured in its fastest honest form: float32
matrix products over blocks of contiguous token rows, queries batched (``exact_search``).

Sizes: 100k documents of 384-d tokens (all-MiniLM-L6-v2's size), and the growth curve at
128-d tokens (ColBERT's size) over 10k, 30k, 100k and 300k documents. 1M documents of
128-d tokens (~9 GB as float16 at 70 tokens) is out of reach for the exact baseline on this
2-core machine within a benchmark run (~8 s of brute force per query); the curve's fitted
growth exponent gives the 1M figure as an extrapolation, marked as such.

FDE indexes: ``flat`` (exact inner product over 10,240 float32 dims; up to 100k documents,
beyond which it does not fit in memory), and ``pqfs``, FAISS's fast-scan PQ ``PQ2560x4fs``
(2,560 four-bit codes, 1,280 bytes per document), trained on the first 10k documents. Latency is
per query, single queries one at a time and a batch of 32 at once; muvera re-ranks its
FDE top ``DEFAULT_CANDIDATES`` exactly (the stage's default).

Run: ``python benchmarks/bench_muvera_speed.py`` (about 25 minutes; ``--quick``: 10k only).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np

from cormorant.index.faiss_index import INDEX_FILE, FaissIndex
from cormorant.index.muvera import FDEConfig, encode_sets
from cormorant.index.token_store import TokenStore, write_token_store
from cormorant.retrieval.chamfer import exact_search
from cormorant.retrieval.muvera import DEFAULT_CANDIDATES, DEFAULT_FDE, MuveraEncoder, muvera_search

TERMS, TOPICS, QUERY_TOKENS, K = 4096, 8, 32, 10
CANDIDATES = DEFAULT_CANDIDATES  # what `muvera` re-ranks unless told otherwise


class _Tokens:
    """Just enough of a MultiVectorEncoder for MuveraEncoder: queries arrive as tokens."""

    def __init__(self, dim: int) -> None:
        self.dim = dim


def synthetic_store(directory: Path, count: int, dim: int, seed: int = 0) -> TokenStore:
    rng = np.random.default_rng(seed)
    terms = _unit(rng.standard_normal((TERMS, dim), dtype=np.float32))
    np.save(directory / "terms.npy", terms)

    def documents() -> Any:
        for start in range(0, count, 2000):
            n = min(2000, count - start)
            lengths = rng.integers(40, 101, n)
            topics = rng.integers(0, TERMS, (n, TOPICS))
            picks = topics[np.repeat(np.arange(n), lengths), rng.integers(0, TOPICS, lengths.sum())]
            noise = rng.standard_normal((len(picks), dim), dtype=np.float32)
            tokens = _unit(terms[picks] + 0.5 / np.sqrt(dim) * noise)  # noise of norm ~0.5
            yield from np.split(tokens, np.cumsum(lengths)[:-1])

    write_token_store(directory, documents(), dim)
    return TokenStore(directory)


def synthetic_queries(store: TokenStore, count: int, seed: int = 1) -> list[np.ndarray]:
    """Queries near a random document: 32 of its tokens (with repeats) plus noise."""
    rng = np.random.default_rng(seed)
    out = []
    for doc in rng.integers(0, len(store), count):
        tokens = store.document(int(doc))
        picked = tokens[rng.integers(0, len(tokens), QUERY_TOKENS)]
        out.append(_unit(picked + 0.3 / np.sqrt(store.dim) * rng.standard_normal(
            picked.shape, dtype=np.float32)))
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build_indexes(store: TokenStore, config: FDEConfig, kinds: list[str],
                  chunk: int = 10_000) -> tuple[dict[str, FaissIndex], dict[str, float], float]:
    """Encode the store's FDEs a chunk at a time into every index of ``kinds``.

    Trained kinds learn from the first chunk (a 10k-document sample), as the ``muvera`` stage
    does, so no more than one chunk of FDEs is ever held outside the indexes. Returns the
    indexes, each one's build seconds (training and adding) and the total FDE encoding seconds.
    """
    indexes = {kind: FaissIndex(config.output_dim, kind=kind, metric="ip",
                                expected_count=len(store)) for kind in kinds}
    build = dict.fromkeys(kinds, 0.0)
    encode = 0.0
    for start in range(0, len(store), chunk):
        stop = min(start + chunk, len(store))
        began = time.perf_counter()
        tokens, starts = store.block(start, stop)
        fdes = encode_sets(tokens, np.append(starts, len(tokens)), config, document=True)
        encode += time.perf_counter() - began
        for kind, index in indexes.items():
            began = time.perf_counter()
            index.add([str(i) for i in range(start, stop)], fdes)
            build[kind] += time.perf_counter() - began
    return indexes, build, encode


def index_bytes(index: FaissIndex) -> int:
    """Bytes of the FAISS file alone (the id map is the same for every kind)."""
    with tempfile.TemporaryDirectory() as tmp:
        index.save(Path(tmp))
        return (Path(tmp) / INDEX_FILE).stat().st_size


def latencies(fn: Any, queries: list[np.ndarray], singles: int, batch: int) -> dict[str, float]:
    fn(queries[:1])  # warm-up: page cache, FAISS threads
    start = time.perf_counter()
    for q in queries[:singles]:
        fn([q])
    single = (time.perf_counter() - start) / singles
    start = time.perf_counter()
    fn(queries[:batch])
    return {"single_ms": round(1000 * single, 2),
            "batch_ms_per_query": round(1000 * (time.perf_counter() - start) / batch, 2)}


def recall(found: list[tuple[np.ndarray, np.ndarray]],
           exact: list[tuple[np.ndarray, np.ndarray]]) -> float:
    return float(np.mean([len(set(f[0][:K]) & set(e[0][:K])) / K
                          for f, e in zip(found, exact, strict=True)]))


def bench_size(root: Path, count: int, dim: int, kinds: list[str],
               exact_queries: int) -> dict[str, Any]:
    directory = root / f"{count}x{dim}"
    directory.mkdir()
    store, build_store = _common.timed(lambda: synthetic_store(directory, count, dim))
    queries = synthetic_queries(store, 32)
    config = FDEConfig(dim, **DEFAULT_FDE)  # the stage's defaults
    token_bytes = store.tokens.nbytes / count
    if count > 100_000:  # 10,240 float32 dims per document: 41 GB at 1M, 12 GB at 300k
        kinds = [k for k in kinds if k != "flat"]
    indexes, build, encode_s = build_indexes(store, config, kinds)
    result: dict[str, Any] = {
        "documents": count, "token_dim": dim,
        "tokens_per_doc": round(store.tokens.shape[0] / count, 1),
        "token_store_bytes_per_doc": round(token_bytes), "store_write_s": round(build_store, 1),
        "fde_encode_docs_per_s": round(count / encode_s), "fde_dim": config.output_dim,
    }
    exact_fn = lambda qs: exact_search(store, qs, K)  # noqa: E731
    truth = exact_search(store, queries[:exact_queries], K)
    result["exact"] = latencies(exact_fn, queries, singles=min(3, exact_queries),
                                batch=exact_queries)
    fde = MuveraEncoder(_Tokens(dim), config)
    for kind, index in indexes.items():
        size = index_bytes(index)
        fn = lambda qs, index=index: muvera_search(qs, fde, index, store, CANDIDATES, K)  # noqa: E731
        timing = latencies(fn, queries, singles=16, batch=32)
        result[kind] = {
            **timing, "factory": index.factory, "build_s": round(build[kind], 1),
            "bytes_per_doc": round(size / count),
            "share_of_token_store": round(size / count / token_bytes, 3),
            "recall_of_exact_top10": round(recall(fn(queries[:exact_queries]), truth), 3),
            "speedup_single": round(result["exact"]["single_ms"] / timing["single_ms"], 1),
            "speedup_batch": round(result["exact"]["batch_ms_per_query"]
                                   / timing["batch_ms_per_query"], 1),
        }
    del indexes
    shutil.rmtree(directory)
    return result


def encode_speed_vs_muvera_python(dim: int = 384, count: int = 2000) -> dict[str, Any]:
    from muvera import Muvera

    rng = np.random.default_rng(5)
    docs = [_unit(rng.standard_normal((int(n), dim), dtype=np.float32))
            for n in rng.integers(40, 101, count)]
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    stacked = np.vstack(docs)
    config = FDEConfig(dim)  # the paper's settings, which muvera-python is given too
    theirs = Muvera(num_repetitions=20, num_simhash_projections=5, dimension=dim,
                    projection_type="ams_sketch", projection_dimension=16, seed=1)
    times = _common.interleaved({
        "cormorant": lambda: encode_sets(stacked, offsets, config, document=True),
        "muvera-python": lambda: theirs.encode_documents(docs),
    }, repeats=3)
    return {name: {"docs_per_s": round(count / float(np.median(t)))} for name, t in times.items()}


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0], "muvera-speed.json")
    args.add_argument("--workdir", type=Path, default=None,
                      help="where the synthetic token stores go (default: a temp dir)")
    options = args.parse_args()
    kinds = ["flat", "pqfs"]
    root = Path(tempfile.mkdtemp(prefix="muvera-bench-", dir=options.workdir))
    try:
        results: dict[str, Any] = {"encode_vs_muvera_python": encode_speed_vs_muvera_python()}
        if options.quick:
            results["10000x384"] = bench_size(root, 10_000, 384, kinds, 8)
        else:
            results["100000x384"] = bench_size(root, 100_000, 384, kinds, 16)
            curve = {}
            for count in (10_000, 30_000, 100_000, 300_000):
                curve[count] = bench_size(root, count, 128, kinds, 16 if count < 300_000 else 8)
            results["growth_128d"] = curve
            results["extrapolated_1m_128d"] = extrapolate(curve, kinds[-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _common.write_json(options.out, {"benchmark": "muvera-speed", "results": results})


def extrapolate(curve: dict[int, dict[str, Any]], kind: str) -> dict[str, Any]:
    """Fit latency = a * N^b on the curve (log-log least squares) and evaluate at 1M."""
    sizes = np.log(np.array(sorted(curve), dtype=float))
    out: dict[str, Any] = {"note": "extrapolated from the 10k-300k curve, not measured"}
    for label, pick in {"exact_single_ms": lambda r: r["exact"]["single_ms"],
                        "muvera_single_ms": lambda r: r[kind]["single_ms"]}.items():
        values = np.log([pick(curve[n]) for n in sorted(curve)])
        slope, intercept = np.polyfit(sizes, values, 1)
        out[label] = round(float(np.exp(intercept + slope * np.log(1e6))), 1)
        out[label.replace("_ms", "_growth_exponent")] = round(float(slope), 2)
    out["speedup_single"] = round(out["exact_single_ms"] / out["muvera_single_ms"], 1)
    return out


if __name__ == "__main__":
    main()
