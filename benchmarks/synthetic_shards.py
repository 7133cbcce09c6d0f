"""A reproducible synthetic collection for the sharding speed benchmark: no encoder runs.

Documents are 10-59 words drawn from a 50,000-word vocabulary with Zipf-distributed
frequencies (exponent 1.2, as natural text's word frequencies roughly are), so BM25's postings
have a realistic skew; the ``dense`` stage's corpus embeddings are random unit vectors written
straight into the embedding cache entry a build reads (:func:`prefill_random_embeddings`).
Queries are 2-4 words of the vocabulary's middle ranks (10-5,000: neither stop words nor
hapaxes), encoded at search time by the real query encoder.

Example:
    >>> corpus = synthetic_corpus(1000)  # doctest: +SKIP
    >>> prefill_random_embeddings(corpus)  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from cormorant import cache
from cormorant.index.embeddings import KIND, embeddings_name
from cormorant.types import Corpus, Document

VOCABULARY = 50_000
ZIPF = 1.2


def synthetic_corpus(count: int, seed: int = 0) -> Corpus:
    """``count`` documents ``s0``, ``s1``, ..., the same for the same ``count`` and ``seed``."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(VOCABULARY)], dtype=object)
    lengths = rng.integers(10, 60, count)
    ranks = np.minimum(rng.zipf(ZIPF, int(lengths.sum())), VOCABULARY) - 1
    words = vocab[ranks]
    ends = np.cumsum(lengths)
    docs = [Document(f"s{i}", " ".join(words[end - size:end]))
            for i, (end, size) in enumerate(zip(ends.tolist(), lengths.tolist(), strict=True))]
    return Corpus.from_documents(docs, name=f"synthetic-{count}")


def synthetic_queries(count: int, seed: int = 1) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    return {f"q{i}": " ".join(f"w{r}" for r in rng.integers(10, 5000, int(rng.integers(2, 5))))
            for i in range(count)}


def prefill_random_embeddings(corpus: Corpus, settings: dict, seed: int = 2) -> None:  # type: ignore[type-arg]
    """Random unit vectors as ``corpus``'s cached embeddings for the ``dense`` stage built
    with ``settings`` (written in blocks: a million 384-d rows are 1.5 GB)."""
    from cormorant.retrieval.dense import corpus_encoder

    encoder = corpus_encoder(settings)
    name = embeddings_name(encoder.settings, corpus)
    if cache.lookup(KIND, name) is not None:
        return
    rng = np.random.default_rng(seed)
    shape = (len(corpus), encoder.dim)
    with cache.write(KIND, name) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        for start in range(0, shape[0], 65536):
            block = rng.standard_normal((min(65536, shape[0] - start), shape[1]),
                                        dtype=np.float32)
            out[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        out.flush()
        del out
