"""Long documents: windows with MaxP/FirstP/SumP against truncation, for the dense stage.

On SciFact and NFCorpus test, all-MiniLM-L6-v2 (``dense``, flat index):

- ``dense(max_length=128)``: every document truncated to 128 tokens (half the model's window),
- ``dense``: truncated at the model's own 256 tokens,
- ``dense(max_length=128, passages=128/64, aggregate=max|first|sum)``: windows of 128 tokens
  (title and special tokens included), 64 apart, scores aggregated per document.

Quality: nDCG@10 and R@100, and the share of the 128 -> 256 truncation gap the windows win back
((windows - trunc128) / (trunc256 - trunc128)). Cost: the number of windows, the wall time of
the build (which encodes everything unless the embedding cache has it: reruns are cheap), and
an encoding throughput measured apart on the first ``SAMPLE`` documents of each corpus
(interleaved rounds, no cache): seconds per 1,000 documents for each way of reading them.

SciFact abstracts and NFCorpus documents are mostly short (a few hundred tokens), so the text
truncation loses, and the windows can win back, is bounded.

``--docs N`` measures on a smaller collection when the machine cannot encode the whole one in
time (windows cost about five times the encoding of truncation at 128): the documents judged
relevant for a seeded sample of test queries, at most N/2 of them (queries are taken in the
sample's order while their relevant documents fit), then seeded random other documents up to
N; those queries, judged on that collection. Every configuration sees the same collection.
"""

from __future__ import annotations

import itertools
import statistics
import time
from typing import Any

from _common import dataset_path, interleaved, parser, write_json

DATASETS = ("scifact", "nfcorpus")
TRUNC = "dense(max_length=128)"
FULL = "dense"
WINDOWS = "dense(max_length=128, passages=128/64{})"
AGGREGATES = {"max": "", "first": ", aggregate=first", "sum": ", aggregate=sum"}
SAMPLE = {"quick": 64, "full": 256}
MEASURES = ["nDCG@10", "R@100"]
SEED = 13


def subset(dataset: Any, split: Any, docs: int | None) -> tuple[Any, Any]:
    """(corpus, split) reduced to ``docs`` documents as the module docstring says; unchanged
    when ``docs`` is None."""
    import random

    from cormorant.types import Corpus, Split

    if docs is None:
        return dataset.corpus, split
    rng = random.Random(SEED)
    qids = sorted(split.queries)
    rng.shuffle(qids)
    kept_queries, relevant = [], set()
    for qid in qids:
        wanted = {d for d, rel in split.qrels.get(qid, {}).items() if rel > 0}
        if wanted and len(relevant | wanted) <= docs // 2:
            kept_queries.append(qid)
            relevant |= wanted
    everything = list(dataset.corpus)
    others = [d for d in everything if d.doc_id not in relevant]
    rng.shuffle(others)
    chosen = relevant | {d.doc_id for d in others[:docs - len(relevant)]}
    corpus = Corpus.from_documents([d for d in everything if d.doc_id in chosen],
                                   name=f"{dataset.name}-{docs}")
    qrels = {q: {d: r for d, r in split.qrels[q].items() if d in chosen} for q in kept_queries}
    return corpus, Split({q: split.queries[q] for q in kept_queries}, qrels)


def evaluate(stage: Any, dataset: Any, split: Any) -> dict[str, float]:
    from cormorant.eval.harness import score_run

    start = time.perf_counter()
    run = stage.search(split.queries, k=100)
    seconds = time.perf_counter() - start
    result = score_run(run, dataset.name, "test", split, str(stage), {}, 100, MEASURES)
    return {**{m: float(result.metrics[m]) for m in MEASURES},
            "queries_per_s": len(split.queries) / seconds}


def windows_of(stage: Any) -> int:
    """Index entries of the first leaf: documents, or windows."""
    return sum(len(s) for s in next(iter(stage.leaves())).segments)


def quality(name: str, docs: int | None) -> dict[str, Any]:
    from cormorant.data import load_dataset
    from cormorant.retrieval.assemble import build_pipeline

    dataset = load_dataset(dataset_path(name))
    corpus, split = subset(dataset, dataset.split("test"), docs)
    print(name, f"{len(corpus):,} documents, {len(split.queries)} queries", flush=True)
    specs = [TRUNC, FULL] + [WINDOWS.format(extra) for extra in AGGREGATES.values()]
    rows: dict[str, Any] = {}
    for spec in specs:
        start = time.perf_counter()
        stage = build_pipeline(spec, corpus)
        built = time.perf_counter() - start
        rows[spec] = {**evaluate(stage, dataset, split), "build_s": built,
                      "entries": windows_of(stage), "documents": len(corpus),
                      "queries": len(split.queries)}
        print(name, spec, {k: round(v, 4) for k, v in rows[spec].items()}, flush=True)
    low, high = rows[TRUNC], rows[FULL]
    for row in rows.values():
        for measure in MEASURES:
            gap = high[measure] - low[measure]
            row[f"{measure} gap won"] = (row[measure] - low[measure]) / gap if gap else None
    return rows


def encoding(name: str, count: int, rounds: int) -> dict[str, Any]:
    """Seconds per 1,000 documents: truncated at 128, at 256, and split into 128/64 windows
    (the split included), on the first ``count`` documents, no cache."""
    from cormorant.data import load_dataset
    from cormorant.retrieval.encoders import SentenceTransformerEncoder
    from cormorant.retrieval.windows import Splitter, WindowSpec

    docs = list(itertools.islice(load_dataset(dataset_path(name)).corpus, count))
    short = SentenceTransformerEncoder(max_length=128)
    full = SentenceTransformerEncoder()
    splitter = Splitter(short.tokenizer, WindowSpec(128, 64),
                        short.tokenizer.num_special_tokens_to_add())
    texts = [d.contents for d in docs]
    fns = {"truncate 128": lambda: short.encode_documents(texts),
           "truncate 256": lambda: full.encode_documents(texts),
           "windows 128/64": lambda: short.encode_documents(splitter.split_documents(docs)[0])}
    samples = interleaved(fns, rounds, warmup=False)
    return {key: {"s_per_1000_docs": statistics.median(times) * 1000 / count,
                  "windows": len(splitter.split_documents(docs)[0]) if "windows" in key
                  else count}
            for key, times in samples.items()}


def main() -> None:
    args = parser(__doc__.splitlines()[0], "long_documents.json")
    args.add_argument("--part", choices=["quality", "encoding", "all"], default="all")
    args.add_argument("--docs", type=int, default=None,
                      help="measure on a collection of this many documents (see above)")
    args.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    opts = args.parse_args()
    found: dict[str, Any] = {"quality": {}, "encoding": {}}
    found["docs"] = opts.docs
    for name in opts.datasets:
        if opts.part in ("quality", "all") and not opts.quick:
            found["quality"][name] = quality(name, opts.docs)
            write_json(opts.out, found)
    for name in opts.datasets:
        if opts.part in ("encoding", "all"):
            found["encoding"][name] = encoding(name, SAMPLE["quick" if opts.quick else "full"],
                                               1 if opts.quick else 2)
            print(name, found["encoding"][name], flush=True)
            write_json(opts.out, found)


if __name__ == "__main__":
    main()
