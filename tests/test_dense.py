import numpy as np
import pytest

from cormorant.data import load_dataset
from cormorant.errors import PipelineError
from cormorant.index import embeddings
from cormorant.retrieval.assemble import build_pipeline, open_index, save_index
from cormorant.retrieval.dense import DenseRetriever
from cormorant.retrieval.encoders import Encoder, SentenceTransformerEncoder
from tests.conftest import QUERIES, assert_same_run


def test_encoder_protocol_shapes_and_normalisation(tiny_encoder):
    encoder = SentenceTransformerEncoder(str(tiny_encoder), show_progress=False)
    assert isinstance(encoder, Encoder)
    docs = encoder.encode_documents(["one document", "another, longer document here"])
    queries = encoder.encode_queries(["a query"])
    assert docs.shape == (2, 32) and queries.shape == (1, 32) and docs.dtype == np.float32
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)  # cosine model
    assert encoder.encode_documents([]).shape == (0, 32)


def test_dense_equals_exact_search_and_survives_save_load(tiny_encoder, beir_dir, tmp_path,
                                                           isolated_cache):
    ds = load_dataset(beir_dir)
    dense = DenseRetriever.build(ds.corpus, model=str(tiny_encoder))
    run = dense.search(QUERIES, k=3)
    encoder = dense.encoder
    docs = encoder.encode_documents([d.contents for d in ds.corpus])
    ids = [d.doc_id for d in ds.corpus]
    for qid, text in QUERIES.items():
        scores = docs @ encoder.encode_queries([text])[0]
        assert list(run[qid]) == [ids[i] for i in np.argsort(-scores)[:3]]

    out = save_index(f"dense(model={tiny_encoder})", ds.corpus, tmp_path / "idx")
    handle = open_index(out)
    assert_same_run(handle.pipeline.search(QUERIES, k=3), run)
    assert handle.docs.get("d2").title == "Cormorants"
    assert handle.meta["count"] == 6


def test_embeddings_are_cached_and_reused(tiny_encoder, beir_dir, isolated_cache, monkeypatch):
    ds = load_dataset(beir_dir)
    DenseRetriever.build(ds.corpus, model=str(tiny_encoder))
    assert len(list((isolated_cache / "embeddings").glob("*.npy"))) == 1

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again despite the cache")

    monkeypatch.setattr(embeddings, "_encode_all", no_encoding)
    again = DenseRetriever.build(ds.corpus, model=str(tiny_encoder))
    assert again.segments.count == 6


def test_interrupted_encoding_leaves_no_cache_entry(tiny_encoder, beir_dir, isolated_cache,
                                                     monkeypatch):
    ds = load_dataset(beir_dir)
    encoder = SentenceTransformerEncoder(str(tiny_encoder), show_progress=False)

    def crash(texts):
        raise KeyboardInterrupt

    monkeypatch.setattr(encoder, "encode_documents", crash)
    with pytest.raises(KeyboardInterrupt):
        embeddings.corpus_embeddings(encoder, ds.corpus)
    assert list((isolated_cache / "embeddings").iterdir()) == []


def test_index_built_with_another_encoder_is_refused(tiny_encoder, other_tiny_encoder,
                                                     beir_dir, tmp_path, isolated_cache):
    ds = load_dataset(beir_dir)
    out = save_index(f"dense(model={tiny_encoder})", ds.corpus, tmp_path / "idx")
    with pytest.raises(PipelineError, match=r"was built with dense\(model=.*would need a rebuild"):
        open_index(out, pipeline=f"dense(model={other_tiny_encoder})")


def test_dense_rescores_bm25_candidates(tiny_encoder, beir_dir, isolated_cache):
    ds = load_dataset(beir_dir)
    pipe = build_pipeline(f"bm25 % 2 >> dense(model={tiny_encoder})", ds.corpus)
    run = pipe.search(QUERIES, k=10)
    bm25_top2 = build_pipeline("bm25 % 2", ds.corpus).search(QUERIES, k=10)
    for qid in QUERIES:
        assert set(run[qid]) == set(bm25_top2[qid])


def test_rrf_index_recomposes_without_rebuilding(tiny_encoder, beir_dir, tmp_path,
                                                 isolated_cache):
    ds = load_dataset(beir_dir)
    out = save_index(f"rrf(bm25, dense(model={tiny_encoder}))", ds.corpus, tmp_path / "idx")
    assert {p.name for p in out.iterdir()} == {"meta.json", "docs.sqlite", "0-bm25", "1-dense"}
    fused = open_index(out).pipeline.search(QUERIES, k=3)
    assert all(len(hits) == 3 for hits in fused.values())
    only_bm25 = open_index(out, pipeline="bm25").pipeline.search(QUERIES, k=3)
    assert list(only_bm25["q3"])[0] == "d3"
    with pytest.raises(PipelineError, match="has no bm25.lucene stage"):
        open_index(out, pipeline="bm25.lucene")


def test_fingerprint_follows_weights_not_paths(tiny_encoder, tmp_path) -> None:
    import shutil

    from cormorant.retrieval.encoders import model_fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(tiny_encoder, copy)
    assert model_fingerprint(str(copy)) == model_fingerprint(str(tiny_encoder))
    weights = copy / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF  # retrained in place: same size, same config, other weights
    weights.write_bytes(bytes(raw))
    assert model_fingerprint(str(copy)) != model_fingerprint(str(tiny_encoder))


def test_fingerprint_ignores_training_records(tiny_encoder, tmp_path) -> None:
    import shutil

    from cormorant.retrieval.encoders import model_fingerprint

    copy = tmp_path / "trained"
    shutil.copytree(tiny_encoder, copy)
    (copy / "training").mkdir()
    (copy / "training" / "summary.json").write_text("{}")
    assert model_fingerprint(str(copy)) == model_fingerprint(str(tiny_encoder))
