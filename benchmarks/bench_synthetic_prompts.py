"""Which few-shot prompt keeps a small model's synthetic queries on their document?

The same 24 seeded SciFact documents, one sampled query each (Promptagator sampling:
temperature 0.7, top-p 0.95), under prompts that differ in the number of examples and in how
many words of each document they show. A query counts if BM25 over the whole corpus returns
its source document first (the round-trip filter at k=1) or in the top 10. Results:
``benchmarks/results/synthetic-prompts.json``; generations are cached, so a re-run replays.

    python benchmarks/bench_synthetic_prompts.py   # ~3 min with llama-cpp here
"""

from __future__ import annotations

from _common import REPO, dataset_path, parser, write_json

EXAMPLES = REPO / "benchmarks" / "promptagator-scifact-examples-random.jsonl"
# (examples used, words per document, words per example's document)
PROMPTS = [(4, 120, 80), (4, 50, 50), (4, 30, 30), (4, 40, 25), (2, 50, 50), (1, 50, 50)]


def main() -> None:
    args = parser("Synthetic-query prompt shapes against the round-trip filter",
                  "synthetic-prompts.json")
    args.add_argument("--docs", type=int, default=24)
    args.add_argument("--llm", default="llama-cpp:smollm2")
    opts = args.parse_args()

    from cormorant.data import DatasetSpec
    from cormorant.llm import load_llm
    from cormorant.retrieval.assemble import build_pipeline
    from cormorant.training import synthetic as syn

    ds = DatasetSpec(dataset_path("scifact")).load()
    shots = syn.load_examples(EXAMPLES, ds.corpus)
    docs = syn.pick_documents(ds.corpus, opts.docs, seed=7)
    llm = load_llm(opts.llm)
    bm25 = build_pipeline("bm25", ds.corpus)
    rows = []
    for used, doc_words, example_words in PROMPTS:
        config = syn.SynthConfig(per_doc=1, doc_words=doc_words, example_words=example_words)
        # The cache wrapper counts model time on misses only: a replayed row costs nothing.
        seconds, misses = llm.generate_seconds, llm.misses
        result = syn.generate_queries(llm, shots[:used], docs, config, progress=False)
        seconds, misses = llm.generate_seconds - seconds, llm.misses - misses
        rows.append({"examples": used, "doc_words": doc_words, "example_words": example_words,
                     "generated": result.generated,
                     "kept_at_1": len(syn.round_trip_filter(result, bm25, 1, progress=False).queries),
                     "kept_at_10": len(syn.round_trip_filter(result, bm25, 10, progress=False).queries),
                     "generated_now": misses,
                     "seconds_per_generation": round(seconds / misses, 2) if misses else None,
                     "sample": list(result.queries.values())[:3]})
        print(rows[-1])
    write_json(opts.out, {"dataset": "scifact", "llm": opts.llm, "examples": EXAMPLES.name,
                          "documents": len(docs), "rows": rows})


if __name__ == "__main__":
    main()
