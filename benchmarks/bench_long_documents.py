"""Long documents: windows with MaxP/FirstP/SumP against truncation, for the dense stage.

On SciFact and NFCorpus test, all-MiniLM-L6-v2 (``dense``, flat index):

- ``dense(max_length=128)``: every document truncated to 128 tokens (half the model's window),
- ``dense``: truncated at the model's own 256 tokens,
- ``dense(max_length=128, passages=128/64, aggregate=max|first|sum)``: windows of 128 tokens
  (title and special tokens included), 64 apart, scores aggregated per document.

Quality: nDCG@10 and R@100, paired significance of MaxP against each truncation (two-sided
randomization and paired t tests, Holm-corrected together), and the share of the 128 -> 256
truncation gap the windows win back ((windows - trunc128) / (trunc256 - trunc128)). Cost:
the number of windows (index entries) and the wall time of the build, which is the encoding
when the embedding cache does not have it (a first run; FirstP and SumP reuse MaxP's windows,
so they build from the cache; reruns are cheap and their build times say nothing about
encoding).

SciFact abstracts and NFCorpus documents are mostly short (a few hundred tokens), so the text
truncation loses, and the windows can win back, is bounded.

``--docs N`` measures on a smaller collection when the machine cannot encode the whole one in
time (windows cost about five times the encoding of truncation at 128): the documents judged
relevant for a seeded sample of test queries, at most N/2 of them (queries are taken in the
sample's order while their relevant documents fit), then seeded random other documents up to
N; those queries, judged on that collection. Every configuration sees the same collection.
``--quick`` is ``--docs 200``.
"""

from __future__ import annotations

import time
from typing import Any

from _common import dataset_path, parser, write_json

DATASETS = ("scifact", "nfcorpus")
TRUNC = "dense(max_length=128)"
FULL = "dense"
WINDOWS = "dense(max_length=128, passages=128/64{})"
AGGREGATES = {"max": "", "first": ", aggregate=first", "sum": ", aggregate=sum"}
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


def evaluate(stage: Any, dataset: Any, split: Any) -> tuple[dict[str, float], Any]:
    """The row's measures and speed, and its per-query values (for the paired tests)."""
    from cormorant.eval.harness import score_run
    from cormorant.eval.measures import evaluate as per_query

    start = time.perf_counter()
    run = stage.search(split.queries, k=100)
    seconds = time.perf_counter() - start
    result = score_run(run, dataset.name, "test", split, str(stage), {}, 100, MEASURES)
    return ({**{m: float(result.metrics[m]) for m in MEASURES},
             "queries_per_s": len(split.queries) / seconds},
            per_query(run, split.qrels, MEASURES).per_query)


def significance(name: str, per_query: dict[str, Any]) -> list[dict[str, Any]]:
    """MaxP against truncation at 128 and at 256, on both measures."""
    from cormorant.eval.significance import compare, correct

    maxp = WINDOWS.format(AGGREGATES["max"])
    found = correct([compare(name, m, maxp, base,
                             {q: v[m] for q, v in per_query[maxp].items()},
                             {q: v[m] for q, v in per_query[base].items()})
                     for base in (TRUNC, FULL) for m in MEASURES])
    return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.to_json().items()}
            for c in found]


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
    per_query: dict[str, Any] = {}
    for spec in specs:
        start = time.perf_counter()
        stage = build_pipeline(spec, corpus)
        built = time.perf_counter() - start
        found, per_query[spec] = evaluate(stage, dataset, split)
        rows[spec] = {**found, "build_s": built,
                      "entries": windows_of(stage), "documents": len(corpus),
                      "queries": len(split.queries)}
        print(name, spec, {k: round(v, 4) for k, v in rows[spec].items()}, flush=True)
    low, high = rows[TRUNC], rows[FULL]
    for row in rows.values():
        for measure in MEASURES:
            gap = high[measure] - low[measure]
            row[f"{measure} gap won"] = (row[measure] - low[measure]) / gap if gap else None
    return {"rows": rows, "significance": significance(name, per_query)}


def main() -> None:
    args = parser(__doc__.splitlines()[0], "long_documents.json")
    args.add_argument("--docs", type=int, default=None,
                      help="measure on a collection of this many documents (see above)")
    args.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    opts = args.parse_args()
    docs = 200 if opts.quick and opts.docs is None else opts.docs
    found: dict[str, Any] = {"docs": docs, "quality": {}}
    for name in opts.datasets:
        found["quality"][name] = quality(name, docs)
        write_json(opts.out, found)


if __name__ == "__main__":
    main()
