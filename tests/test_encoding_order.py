"""Corpus encoding sorts documents by length across the whole corpus, not per chunk, and puts
every vector back at its document's row."""

from __future__ import annotations

import numpy as np

from cormorant.index import embeddings
from cormorant.types import Corpus, Document


class Recorder:
    """An encoder whose vector is the text's length, remembering each call's texts."""

    dim = 1

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        self.calls.append(texts)
        return np.array([[len(t)] for t in texts], dtype=np.float32)


def test_chunks_are_length_sorted_over_the_corpus_and_rows_stay_in_place(monkeypatch):
    rng = np.random.default_rng(0)
    texts = ["x" * int(n) for n in rng.integers(1, 500, size=23)]
    corpus = Corpus.from_documents([Document(f"d{i}", t) for i, t in enumerate(texts)])
    monkeypatch.setattr(embeddings, "STEP", 5)
    encoder = Recorder()
    vectors = embeddings.corpus_embeddings(encoder, corpus, use_cache=False)
    assert vectors[:, 0].tolist() == [float(len(t)) for t in texts]  # corpus order
    lengths = [len(t) for call in encoder.calls for t in call]
    assert lengths == sorted(lengths, reverse=True)  # longest first across chunks
    assert [len(c) for c in encoder.calls] == [5, 5, 5, 5, 3]
