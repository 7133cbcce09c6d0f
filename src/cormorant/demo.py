"""``make demo``: index the bundled SciFact collection with BM25 and the default dense encoder,
evaluate both and their fusion, and write ``reports/demo.md`` and ``reports/demo.json``.

Run as ``python -m cormorant.demo [--dataset DIR] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from cormorant.data import load_dataset
from cormorant.data.files import atomic_write
from cormorant.errors import CormorantError
from cormorant.eval.harness import EvalResult, markdown_table, run_split
from cormorant.pipeline import RRF
from cormorant.retrieval.bm25 import BM25Retriever
from cormorant.retrieval.dense import DenseRetriever

# Published nDCG@10 on SciFact test, for the reader to compare against (../shared/data README).
REFERENCE = {"bm25": ("Pyserini BM25 flat", 0.679), "dense": ("MTEB all-MiniLM-L6-v2", 0.645)}


def bundled_scifact() -> Path:
    """The demo collection shipped in the repository's ``data/scifact``."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / "data" / "scifact" / "corpus.jsonl.gz").is_file():
            return root / "data" / "scifact"
    raise CormorantError("the bundled data/scifact collection was not found; pass --dataset")


def run_demo(dataset_path: Path, out: Path) -> list[EvalResult]:
    dataset = load_dataset(dataset_path)
    results = []
    start = time.perf_counter()
    bm25 = BM25Retriever.build(dataset.corpus)
    bm25_build = time.perf_counter() - start
    start = time.perf_counter()
    dense = DenseRetriever.build(dataset.corpus)
    dense_build = time.perf_counter() - start
    for stage, build in ((bm25, bm25_build), (dense, dense_build),
                         (RRF([bm25, dense]), bm25_build + dense_build)):
        results.append(run_split(stage, dataset, "test", build_seconds=build))
        print(f"{results[-1].pipeline}: nDCG@10 {results[-1].metrics['nDCG@10']:.4f}",
              file=sys.stderr)
    _write(results, out)
    return results


def _write(results: list[EvalResult], out: Path) -> None:
    lines = ["# Cormorant demo: SciFact (test split, 300 queries)", "",
             markdown_table(results), "Reference nDCG@10 (published):", ""]
    lines += [f"- `{name}`: {label} {value:.3f}" for name, (label, value) in REFERENCE.items()]
    lines += ["", "Build time includes encoding the corpus (cached for later runs)."]
    with atomic_write(out / "demo.md") as handle:
        handle.write("\n".join(lines) + "\n")
    with atomic_write(out / "demo.json") as handle:
        json.dump([r.to_json() for r in results], handle, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=None, help="BEIR folder (default: bundled SciFact)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="report directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        results = run_demo(args.dataset or bundled_scifact(), args.out)
    except CormorantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(results), end="")
    print(f"wrote {args.out / 'demo.md'} and {args.out / 'demo.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
