"""BM25 queries per second: ``bm25`` (bm25s, in process) against ``bm25.lucene`` (Pyserini).

Both index the same SciFact corpus and answer its test queries for the top 1000; nDCG@10 is
reported beside speed so a fast-but-wrong run shows.
"""

from __future__ import annotations

import time
from typing import Any

from _common import dataset_path, median_seconds, parser, write_json


def measure(name: str, build: Any, dataset: Any, queries: dict[str, str], repeats: int) -> dict:
    from cormorant.eval.measures import evaluate

    start = time.perf_counter()
    retriever = build(dataset.corpus)
    build_s = time.perf_counter() - start
    seconds = median_seconds(lambda: retriever.retrieve(queries, 1000), repeats)
    run = retriever.retrieve(queries, 1000)
    ndcg = evaluate(run, dataset.split("test").qrels, ["nDCG@10"]).aggregate["nDCG@10"]
    result = {"build_s": build_s, "qps": len(queries) / seconds, "nDCG@10": ndcg}
    print(f"{name}: {result}")
    return result


def main() -> None:
    args = parser(__doc__.split("\n\n")[0], "bm25.json").parse_args()
    from cormorant.data import load_dataset
    from cormorant.retrieval.bm25 import BM25Retriever

    dataset = load_dataset(dataset_path("scifact"))
    queries = dataset.split("test").queries
    repeats = 2 if args.quick else 5
    results = {"bm25": measure("bm25", BM25Retriever.build, dataset, queries, repeats)}
    try:
        from cormorant.retrieval.lucene import LuceneBM25Retriever

        results["bm25.lucene"] = measure("bm25.lucene", LuceneBM25Retriever.build, dataset,
                                         queries, repeats)
        results["qps_ratio_bm25s_over_lucene"] = (results["bm25"]["qps"]
                                                  / results["bm25.lucene"]["qps"])
    except Exception as exc:  # no Java or no [lucene] extra: record it, keep the bm25s numbers
        results["bm25.lucene"] = {"error": str(exc)}
    write_json(args.out, {"benchmark": "bm25", "quick": args.quick, "dataset": "scifact",
                          "queries": len(queries), "depth": 1000, "results": results})


if __name__ == "__main__":
    main()
