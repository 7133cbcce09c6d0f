"""SEAL's corpus index built in shards against one in-memory suffix array (pydivsufsort).

The peer is what a user would otherwise do: sort the whole token stream with pydivsufsort in
memory (``shard_tokens`` at its default, one shard for any BEIR corpus). Against it, the same
corpus cut into shards of at most a quarter and a sixteenth of its tokens (documents are not
split, so one more shard holds the remainder). Each setting runs in a fresh child process and
reports: build seconds; peak memory of the build (numpy's allocations, through tracemalloc;
memory-mapped shards are page cache and do not count); and the cost per n-gram of what a query
asks (count, successors, positions) over a fixed sample of corpus n-grams, every answer checked
equal to the one-index answer. The corpus is tokenized once with SmolLM2's tokenizer.

    python benchmarks/bench_seal_shards.py               # SciFact, about 2 minutes
    python benchmarks/bench_seal_shards.py --quick       # the first 1,000 documents
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, dataset_path, parser, write_json

SAMPLE_NGRAMS = 2000


def main() -> None:
    args = parser("SEAL index: sharded build against one suffix array", "seal-shards.json")
    args.add_argument("--dataset", default="scifact")
    args.add_argument("--child", nargs=3, metavar=("TOKENS", "SHARD_TOKENS", "OUT"),
                      help=argparse.SUPPRESS)  # one measured build
    opts = args.parse_args()
    if opts.child:
        child(Path(opts.child[0]), int(opts.child[1]), Path(opts.child[2]))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-seal-shards-"))
    stream = tokenize(opts.dataset, work / "tokens.npz", 1000 if opts.quick else None)
    total = int(np.load(stream)["lengths"].sum())
    settings = {"one suffix array (pydivsufsort)": 1 << 40,
                "shards of 1/4 of the tokens": -(-total // 4),
                "shards of 1/16 of the tokens": -(-total // 16)}
    rows = {}
    for label, shard_tokens in settings.items():
        out = work / f"{shard_tokens}.json"
        subprocess.run([sys.executable, __file__, "--child", str(stream), str(shard_tokens),
                        str(out)], check=True)
        rows[label] = json.loads(out.read_text())
        print(label, rows[label], flush=True)
    peer = rows["one suffix array (pydivsufsort)"]
    reference = peer["digest"]
    for row in rows.values():
        row["build_ratio"] = round(row["build_seconds"] / peer["build_seconds"], 2)
        row["memory_ratio"] = round(row["peak_build_mb"] / peer["peak_build_mb"], 2)
        row["query_ratio"] = round(row["us_per_ngram"] / peer["us_per_ngram"], 2)
        row["same_answers"] = row.pop("digest") == reference
    write_json(opts.out, {"dataset": opts.dataset, "corpus_tokens": total,
                          "documents": int(len(np.load(stream)["lengths"])),
                          "load_average": os.getloadavg()[0], "rows": rows})


def tokenize(name: str, path: Path, limit: int | None) -> Path:
    """The corpus in SmolLM2 tokens, as one flat array plus document lengths."""
    from cormorant.data import DatasetSpec
    from cormorant.retrieval.seal.generator import Generator, resolve_generator

    generator = Generator.load(resolve_generator(None))
    corpus = DatasetSpec(dataset_path(name)).load().corpus
    docs = [generator.tokenize(generator.document_text(d.title, d.text))
            for d in list(corpus)[:limit]]
    np.savez(path, tokens=np.concatenate([np.asarray(d, np.int32) for d in docs]),
             lengths=np.array([len(d) for d in docs]), vocab=generator.vocab_size)
    return path


def child(stream: Path, shard_tokens: int, out: Path) -> None:
    """One build and its query costs, measured in this process."""
    from cormorant.retrieval.seal.sharded import ShardedIndex

    data = np.load(stream)
    tokens, lengths, vocab = data["tokens"], data["lengths"], int(data["vocab"])
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    docs = (tokens[bounds[i]:bounds[i + 1]] for i in range(len(lengths)))
    # numpy reports its allocations to tracemalloc; memory-mapped shards are page cache, which
    # the kernel can drop, so they rightly do not count.
    tracemalloc.start()
    start = time.perf_counter()
    index = ShardedIndex.build(docs, vocab, shard_tokens)
    build = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    with tempfile.TemporaryDirectory() as directory:
        index.save(Path(directory))  # moves spilled shards; the arrays stay memory-mapped
        ngrams = _sample(tokens, bounds, np.random.default_rng(0))
        answers, seconds = _ask(index, ngrams)
    out.write_text(json.dumps({
        "shards": len(index.shards), "build_seconds": round(build, 2),
        "peak_build_mb": round(peak, 1),
        "us_per_ngram": round(seconds / len(ngrams) * 1e6, 1),
        "digest": hash(tuple(answers)) & 0xFFFFFFFF}))


def _sample(tokens: np.ndarray, bounds: np.ndarray, rng: np.random.Generator) -> list[tuple]:
    """SAMPLE_NGRAMS corpus n-grams of 1-4 tokens, inside documents."""
    found = []
    while len(found) < SAMPLE_NGRAMS:
        doc = int(rng.integers(0, len(bounds) - 1))
        size = int(rng.integers(1, 5))
        if bounds[doc + 1] - bounds[doc] > size:
            at = int(rng.integers(bounds[doc], bounds[doc + 1] - size))
            found.append(tuple(tokens[at:at + size].tolist()))
    return found


def _ask(index: Any, ngrams: list[tuple]) -> tuple[list, float]:
    """Count, successors and positions of each n-gram, as decoding and scoring ask them."""
    answers = []
    start = time.perf_counter()
    for ngram in ngrams:
        count = index.count(ngram)
        # Scoring reads every position of n-grams up to 1500 occurrences (the paper's cut).
        positions = index.positions(ngram) if count <= 1500 else np.zeros(0, np.int64)
        answers.append((count, len(index.next_token_array(ngram)),
                        int(np.sort(positions)[:3].sum()) if len(positions) else -1))
    return answers, time.perf_counter() - start


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "benchmarks"))
    main()
