"""Chinese BM25: the analyzers of ``bm25(language=zh)`` against English analysis, and against
``bm25.lucene(language=zh)`` (Lucene's CJKAnalyzer through Pyserini), the peer a user would
otherwise use.

1. Quality on the 20-passage fixture shipped in tests (``tests/data/t2ranking-mini``, T2Ranking's
   layout, 5 dev queries with graded judgments): nDCG@10, RR@10 and R(rel=2)@10 per pipeline.
2. Speed on synthetic Chinese text: passages of 3 to 8 clauses drawn (seeded) from the
   fixture's passages, so the characters and words are real Chinese though the collection is
   repetitive. Reported: analysis throughput (characters/s) of each ``Analyzer`` on the same
   texts (one warm-up, interleaved rounds, median), and one index build of each BM25 stage
   (``bm25.lucene``'s includes writing its files; its JVM start is not counted).

Run: ``PYTHONPATH=src python benchmarks/bench_chinese.py [--quick]``
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from _common import REPO, interleaved, parser, repeats, summary, timed, write_json

FIXTURE = REPO / "tests" / "data" / "t2ranking-mini"
PIPELINES = ["bm25", "bm25(language=zh)", "bm25(language=zh, segmenter=jieba)",
             "bm25.lucene", "bm25.lucene(language=zh)"]
MEASURES = ["nDCG@10", "RR@10", "R(rel=2)@10"]
ANALYZERS = {"en (bm25s, English)": ("en", "bigram"), "zh bigram": ("zh", "bigram"),
             "zh jieba (rjieba)": ("zh", "jieba")}


def quality() -> dict[str, Any]:
    from cormorant.data import load_dataset
    from cormorant.errors import CormorantError
    from cormorant.eval.measures import evaluate
    from cormorant.retrieval.assemble import build_pipeline

    dataset = load_dataset(FIXTURE)
    dev = dataset.split("dev")
    rows: dict[str, Any] = {}
    for pipeline in PIPELINES:
        try:
            run = build_pipeline(pipeline, dataset.corpus).search(dev.queries, k=10)
        except CormorantError as exc:  # no Java or no [lucene]/[zh] extra: say so, go on
            rows[pipeline] = {"error": str(exc)}
            continue
        rows[pipeline] = evaluate(run, dev.qrels, MEASURES).aggregate
        print(pipeline, {k: round(v, 4) for k, v in rows[pipeline].items()})
    return rows


def synthetic(passages: int, seed: int = 0) -> list[str]:
    """Chinese passages of 3 to 8 clauses drawn from the fixture's passages."""
    from cormorant.data import load_dataset

    clauses = [c for d in load_dataset(FIXTURE).corpus
               for c in re.split("[，。：、；]", d.text) if c]
    rng = random.Random(seed)
    return ["，".join(rng.choices(clauses, k=rng.randint(3, 8))) + "。" for _ in range(passages)]


def speed(texts: list[str], rounds: int) -> dict[str, Any]:
    from cormorant.retrieval.analysis import Analyzer

    chars = sum(map(len, texts))
    analyzers = {name: Analyzer(lang, "english", "en", seg) for name, (lang, seg) in
                 ANALYZERS.items()}
    samples = interleaved({name: (lambda a=a: a(texts)) for name, a in analyzers.items()}, rounds)
    result: dict[str, Any] = {"passages": len(texts), "characters": chars, "analysis": {}}
    for name, times in samples.items():
        result["analysis"][name] = summary(times, chars)
        terms = sum(map(len, analyzers[name](texts)))
        result["analysis"][name]["terms_per_passage"] = terms / len(texts)
        print(f"{name:22} {chars / min(times) / 1e6:6.2f} M chars/s (best),"
              f" {terms / len(texts):5.1f} terms/passage")
    result["build_s"] = builds(texts)
    return result


def builds(texts: list[str]) -> dict[str, Any]:
    from cormorant.errors import CormorantError
    from cormorant.retrieval.assemble import build_pipeline
    from cormorant.types import Corpus, Document

    corpus = Corpus.from_documents([Document(str(i), t) for i, t in enumerate(texts)])
    out: dict[str, Any] = {}
    for pipeline in PIPELINES[1:3] + PIPELINES[4:]:
        try:
            if "lucene" in pipeline:  # start the JVM outside the timing
                build_pipeline(pipeline, Corpus.from_documents([Document("0", "预热")]))
            _, seconds = timed(lambda p=pipeline: build_pipeline(p, corpus))
        except CormorantError as exc:
            out[pipeline] = {"error": str(exc)}
            continue
        out[pipeline] = seconds
        print(f"build {pipeline:40} {seconds:6.2f} s")
    return out


def main() -> None:
    args = parser(__doc__.splitlines()[0], "chinese.json").parse_args()
    texts = synthetic(2_000 if args.quick else 20_000)
    payload = {"fixture": str(Path(FIXTURE).relative_to(REPO)), "quality": quality(),
               "speed": speed(texts, repeats(args))}
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
