"""BM25 speed: ``bm25`` (bm25s, in process) against ``bm25.lucene`` (Lucene through Pyserini).

Compared: ``BM25Retriever.build(corpus)`` and ``LuceneBM25Retriever.build(corpus)`` (both with
cormorant's defaults: k1=0.9, b=0.4, title and text as one field) over the SciFact corpus, each
answering the same SciFact test queries for the top 1000 with ``.retrieve(queries, 1000)``.

Reported for each: start-up (imports; for Lucene, starting the JVM), index build time (one
run), queries/s (one warm-up each, then interleaved rounds A, B, A, B; median round) and
nDCG@10 of the last run over the queries asked, so a fast-but-wrong run shows. Lucene searches
with cormorant's default of 2 threads; bm25s scores queries one after another in one thread.
If Lucene cannot start (no Java, no ``[lucene]`` extra), the error is recorded and bm25 is
still measured.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from _common import dataset_path, interleaved, keeping, parser, repeats, summary, timed, write_json

QUERIES = {"quick": 50, "full": None}  # None: every test query (300)
DEPTH = 1000


def start_bm25s() -> Callable[..., Any]:
    import bm25s  # noqa: F401  (timed: the import is part of starting up)
    import Stemmer  # noqa: F401

    from cormorant.retrieval.bm25 import BM25Retriever

    return BM25Retriever.build


def start_lucene() -> Callable[..., Any]:
    from cormorant.retrieval.lucene import LuceneBM25Retriever, import_pyserini

    import_pyserini("index.lucene")  # loads the JVM
    import_pyserini("search.lucene")

    return LuceneBM25Retriever.build


ENGINES: dict[str, Callable[[], Callable[..., Any]]] = {"bm25": start_bm25s,
                                                        "bm25.lucene": start_lucene}


def build_all(corpus: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Every engine that starts, built over ``corpus``; results so far (or the error) per engine."""
    retrievers: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    for name, start in ENGINES.items():
        try:
            build, startup = timed(start)
            retriever, build_s = timed(lambda build=build: build(corpus))
        except Exception as exc:  # no Java, no extra, a JVM that will not start: record, go on
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{name}: not measured ({results[name]['error']})")
            continue
        retrievers[name] = retriever
        results[name] = {"startup_s": startup, "build_s": build_s}
    return retrievers, results


def run(quick: bool, rounds: int) -> dict[str, Any]:
    from cormorant.data import load_dataset
    from cormorant.eval.measures import evaluate

    dataset = load_dataset(dataset_path("scifact"))
    test = dataset.split("test")
    count = QUERIES["quick" if quick else "full"]
    queries = dict(itertools.islice(test.queries.items(), count))
    qrels = {qid: judged for qid, judged in test.qrels.items() if qid in queries}

    retrievers, results = build_all(dataset.corpus)
    runs: dict[str, Any] = {}
    samples = interleaved({name: keeping(runs, name, lambda r=r: r.retrieve(queries, DEPTH))
                           for name, r in retrievers.items()}, rounds)
    for name, times in samples.items():
        timing = summary(times, len(queries))
        results[name].update({
            "qps": timing["per_s"],
            "nDCG@10": evaluate(runs[name], qrels, ["nDCG@10"]).aggregate["nDCG@10"],
            "timing": timing})
    if "bm25" in samples and "bm25.lucene" in samples:
        results["qps_ratio_bm25_over_lucene"] = results["bm25"]["qps"] / results["bm25.lucene"]["qps"]
    threads = getattr(retrievers.get("bm25.lucene"), "threads", None)
    return {"benchmark": "bm25", "quick": quick, "dataset": "scifact", "split": "test",
            "documents": len(dataset.corpus), "queries": len(queries), "judged_queries": len(qrels),
            "depth": DEPTH, "repeats": rounds, "lucene_threads": threads,
            "method": "builds timed once; one warm-up each, then interleaved rounds (A, B, A, B),"
                      " median round; nDCG@10 over the queries asked",
            "results": results}


def main() -> None:
    args = parser(__doc__.split("\n\n")[0], "bm25.json").parse_args()
    result = run(args.quick, repeats(args))
    for name, r in result["results"].items():
        if isinstance(r, dict) and "qps" in r:
            print(f"{name:12} startup {r['startup_s']:.1f} s, build {r['build_s']:.1f} s,"
                  f" {r['qps']:.0f} queries/s (top {result['depth']}), nDCG@10 {r['nDCG@10']:.4f}")
    ratio = result["results"].get("qps_ratio_bm25_over_lucene")
    if ratio is not None:
        print(f"bm25 / bm25.lucene queries/s: {ratio:.2f}"
              f" ({result['queries']} queries, median of {result['repeats']})")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
