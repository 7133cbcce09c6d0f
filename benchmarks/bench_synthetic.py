"""A retriever trained on synthetic queries only (Promptagator), against zero-shot.

1. ``cormorant data synth-queries``: SmolLM2-135M-Instruct (``--llm``, default the GGUF through
   llama-cpp-python) writes ``--per-doc`` queries for each of a seeded sample of ``--docs``
   SciFact documents from the few-shot examples in ``--examples`` (default: the first two of four
   seeded-random SciFact training claims, ``benchmarks/promptagator-scifact-examples-random2.jsonl``),
   each document (and each example's document) clipped to ``--doc-words`` words in the prompt;
   round-trip filter: BM25 over the whole corpus must return the source document first
   (``--filter-k``).
2. ``cormorant train`` (in-batch negatives, defaults) on that folder alone: no labelled query.
3. The trained model and zero-shot all-MiniLM-L6-v2 on SciFact test (nDCG@10, R@100), paired
   randomisation and t-tests per query. Zero-shot per-query scores come from
   ``benchmarks/results/training.json`` (same model, same test set), so the corpus is encoded
   once, for the trained model.

Each step keeps its output (``--work``) and is skipped when it exists, so an interrupted run
resumes. Results: ``benchmarks/results/synthetic.json``.

    python benchmarks/bench_synthetic.py  # 700 documents x 2 queries, about 30 min here
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import REPO, dataset_path, parser, write_json
from bench_training import RESULTS as TRAINING_RESULTS
from bench_training import significance, timed_training

# SciFact training claims drawn with random.Random(0). The first four by id (the older
# promptagator-scifact-examples.jsonl) all open with a number, and SmolLM2 copied that: all 400
# of its queries opened with an invented statistic, and 11 survived the round-trip filter. With
# all four random claims it copies the last one (about DNA damage) into most queries; two claims
# and 50-word documents kept 14 of 24 in a probe (docs/reformulation.md).
EXAMPLES = REPO / "benchmarks" / "promptagator-scifact-examples-random2.jsonl"
MIN_QUERIES = 256  # eight steps of the default batch: below that, training is not measured


def main() -> None:
    args = parser("Retriever trained on synthetic queries only, against zero-shot",
                  "synthetic.json")
    args.add_argument("--dataset", default="scifact")
    args.add_argument("--docs", type=int, default=700, help="seeded sample of documents")
    args.add_argument("--per-doc", type=int, default=2, help="sampled queries per document")
    args.add_argument("--filter-k", type=int, default=1, help="round-trip filter depth (BM25)")
    args.add_argument("--doc-words", type=int, default=50, help="words of each prompt document")
    args.add_argument("--llm", default="llama-cpp:smollm2")
    args.add_argument("--examples", type=Path, default=EXAMPLES, help="few-shot examples JSONL")
    args.add_argument("--work", type=Path, default=REPO / "indexes" / "bench-synthetic")
    opts = args.parse_args()
    dataset = dataset_path(opts.dataset)
    opts.work.mkdir(parents=True, exist_ok=True)
    run = (f"{opts.dataset}-{opts.examples.stem}-{opts.docs}x{opts.per_doc}-w{opts.doc_words}"
           f"-k{opts.filter_k}")
    synth = opts.work / run
    model = opts.work / f"{run}-in-batch"
    generation = generate(dataset, synth, opts)
    kept = sum(1 for _ in (synth / "queries.jsonl").open())
    zero = json.loads(TRAINING_RESULTS.read_text())["rows"][opts.dataset]["zero-shot"]
    out = {"dataset": opts.dataset, "llm": opts.llm, "examples": opts.examples.name,
           "documents": opts.docs, "doc_words": opts.doc_words,
           "per_doc": opts.per_doc, "filter_k": opts.filter_k, "generation": generation,
           "kept_queries": kept, "rows": {"zero-shot": {"metrics": zero["metrics"]}}}
    if kept < MIN_QUERIES:
        # A handful of queries is a step or two of training: nothing a test set could show.
        out["not_trained"] = f"only {kept} queries survived the round-trip filter"
        write_json(opts.out, out)
        return
    out["training"] = _train(synth, model)
    trained = evaluate(dataset, model)
    out["rows"]["synthetic-only in-batch"] = {"metrics": trained["metrics"],
                                              **significance(trained, zero)}
    write_json(opts.out, out)


def generate(dataset: Path, synth: Path, opts: Any) -> dict[str, Any]:
    """Run synth-queries once; its summary line and wall time."""
    record = synth.with_suffix(".json")
    if record.is_file():
        return json.loads(record.read_text())
    command = [sys.executable, "-m", "cormorant.cli", "data", "synth-queries", "--dataset",
               str(dataset), "--examples", str(opts.examples), "--out", str(synth), "--llm", opts.llm,
               "--per-doc", str(opts.per_doc), "--max-docs", str(opts.docs),
               "--filter-k", str(opts.filter_k), "--doc-words", str(opts.doc_words),
               "--example-words", str(opts.doc_words), "--overwrite"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"synth-queries failed:\n{done.stderr[-3000:]}")
    seconds = time.perf_counter() - start
    out = {"seconds": round(seconds, 1), "summary": done.stdout.strip().splitlines()[-1],
           "seconds_per_generation": round(seconds / (opts.docs * opts.per_doc), 3)}
    record.write_text(json.dumps(out, indent=2))
    return out


def _train(synth: Path, model: Path) -> dict[str, Any]:
    record = model.with_suffix(".json")
    if record.is_file():
        return json.loads(record.read_text())
    out = timed_training([sys.executable, "-m", "cormorant.cli", "train", "--dataset", str(synth),
                          "--split", "train", "--negatives", "in-batch", "--out", str(model),
                          "--overwrite"])
    record.write_text(json.dumps(out, indent=2))
    return out


def evaluate(dataset: Path, model: Path) -> dict[str, Any]:
    from cormorant.data import DatasetSpec
    from cormorant.eval.harness import run_split
    from cormorant.retrieval.assemble import build_pipeline

    ds = DatasetSpec(dataset).load()
    result = run_split(build_pipeline(f"dense(model={model})", ds.corpus), ds, "test",
                       measures=["nDCG@10", "R@100"])
    return {"metrics": result.metrics,
            "per_query": {q: m["nDCG@10"] for q, m in result.per_query.items()}}


if __name__ == "__main__":
    main()
