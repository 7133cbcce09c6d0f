"""Embedding quantization in the dense stage: int8 (scalar-quantized FAISS) and binary (sign
bits, Hamming) first passes re-scored with float vectors; Matryoshka truncation with ``dim=``."""

from __future__ import annotations

import numpy as np
import pytest

from cormorant.errors import PipelineError
from cormorant.index.binary_index import BinaryIndex, binarize
from cormorant.retrieval.assemble import build_pipeline, open_index, save_index
from cormorant.types import Corpus, Document
from tests.conftest import assert_same_run


def corpus_of(count: int, seed: int = 0) -> tuple[Corpus, dict[str, str]]:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(200)]
    docs = [Document(f"d{i}", " ".join(rng.choice(words, 12))) for i in range(count)]
    queries = {f"q{i}": " ".join(rng.choice(words, 4)) for i in range(20)}
    return Corpus.from_documents(docs), queries


def test_binary_index_packs_eight_dimensions_a_byte():
    vectors = np.random.default_rng(0).standard_normal((50, 64)).astype(np.float32)
    index = BinaryIndex(64)
    index.add([str(i) for i in range(50)], vectors)
    assert index.nbytes == 50 * 64 // 8  # 1/32 of float32's 50 * 64 * 4
    assert binarize(vectors).shape == (50, 8)
    scores, rows = index.search(vectors[:3], k=1)
    assert rows[:, 0].tolist() == [0, 1, 2] and (scores[:, 0] == 0).all()  # Hamming 0


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_full_rescoring_equals_float_search(tiny_encoder, precision):
    """With every document re-scored, the float ranking comes back exactly; with fewer, the
    scores are still float inner products."""
    corpus, queries = corpus_of(60)
    exact = build_pipeline(f"dense(model={tiny_encoder})", corpus).search(queries, k=5)
    full = build_pipeline(f"dense(model={tiny_encoder}, precision={precision}, rescore=12)",
                          corpus).search(queries, k=5)
    assert_same_run(full, exact)
    few = build_pipeline(f"dense(model={tiny_encoder}, precision={precision}, rescore=1)",
                         corpus).search(queries, k=5)
    for qid in queries:
        for doc, score in few[qid].items():
            if doc in exact[qid]:
                assert abs(score - exact[qid][doc]) < 1e-5


@pytest.mark.parametrize("precision,index", [("binary", "flat"), ("binary", "hnsw"),
                                             ("int8", "hnsw")])
def test_quantized_index_survives_save_load_and_takes_writes(tiny_encoder, tmp_path,
                                                             precision, index):
    corpus, queries = corpus_of(40)
    spec = f"dense(model={tiny_encoder}, precision={precision}, index={index}, rescore=10)"
    path = save_index(spec, corpus, tmp_path / "idx")
    before = build_pipeline(spec, corpus).search(queries, k=3)
    with open_index(path, write=True) as handle:
        assert_same_run(handle.pipeline.search(queries, k=3), before)
        handle.live.add([Document("new", "w1 w2 w3 w4")])
        assert "new" in handle.pipeline.search({"q": "w1 w2 w3 w4"}, k=1)["q"]
        handle.live.merge()
        assert "new" in handle.pipeline.search({"q": "w1 w2 w3 w4"}, k=1)["q"]
    with pytest.raises(PipelineError, match="rebuild"):
        open_index(path, pipeline=f"dense(model={tiny_encoder}, index={index},"
                   " precision=float32)")


def test_int8_needs_flat_or_hnsw(tiny_encoder):
    corpus, _ = corpus_of(10)
    with pytest.raises(PipelineError, match="precision=int8"):
        build_pipeline(f"dense(model={tiny_encoder}, precision=int8, index=ivf)", corpus)


def test_dim_truncates_and_renormalises(tiny_encoder):
    corpus, queries = corpus_of(20)
    full = build_pipeline(f"dense(model={tiny_encoder})", corpus)
    cut = build_pipeline(f"dense(model={tiny_encoder}, dim=16)", corpus)
    assert cut.dim == 16 and cut.encoder.settings["dim"] == 16
    vectors = cut.encoder.encode_documents(["w1 w2", "w3"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    whole = full.encoder.encode_documents(["w1 w2", "w3"])[:, :16]
    assert np.allclose(vectors, whole / np.linalg.norm(whole, axis=1, keepdims=True), atol=1e-5)
    with pytest.raises(Exception, match="more than the model's"):
        build_pipeline(f"dense(model={tiny_encoder}, dim=64)", corpus)
