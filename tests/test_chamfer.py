"""Token encoders, the token store and exact Chamfer (MaxSim) retrieval."""

import numpy as np
import pytest

from cormorant.data import load_dataset
from cormorant.index.token_store import TokenStore, write_token_store
from cormorant.retrieval import chamfer
from cormorant.retrieval.assemble import open_index, save_index
from cormorant.retrieval.chamfer import ChamferRetriever, chamfer_scores
from cormorant.retrieval.multivector import MultiVectorEncoder, TokenEncoder
from tests.conftest import QUERIES, assert_same_run


def naive_chamfer(query, doc):
    if len(doc) == 0:
        return -np.inf
    return sum(max(float(q @ d) for d in doc) for q in query)


def test_block_scores_match_a_direct_reading_of_the_definition():
    rng = np.random.default_rng(0)
    docs = [rng.normal(size=(n, 8)).astype("float32") for n in (3, 1, 0, 5, 2)]
    query = rng.normal(size=(4, 8)).astype("float32")
    tokens = np.concatenate([d for d in docs if len(d)])
    starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
    got = chamfer_scores(query, tokens, starts)
    expected = [naive_chamfer(query, d) for d in docs]
    assert got[2] == -np.inf
    assert np.allclose(np.delete(got, 2), np.delete(expected, 2), atol=1e-4)


def test_token_store_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    docs = [rng.normal(size=(n, 4)).astype("float32") for n in (2, 0, 3)]
    assert write_token_store(tmp_path, iter(docs), 4) == 3
    store = TokenStore(tmp_path)
    assert len(store) == 3 and store.dim == 4
    assert np.allclose(store.document(2), docs[2], atol=1e-2)  # float16 on disk
    assert store.document(1).shape == (0, 4)
    block, starts = store.block(1, 3)
    assert block.shape == (3, 4) and starts.tolist() == [0, 0]


def test_token_encoder_drops_padding_and_special_tokens(tiny_encoder):
    encoder = TokenEncoder(str(tiny_encoder))
    assert isinstance(encoder, MultiVectorEncoder)
    short, long = encoder.encode_documents(["fish", "birds that catch fish underwater"])
    ids = encoder._model.tokenizer("birds that catch fish underwater")["input_ids"]
    assert long.shape == (len(ids) - 2, 32)  # [CLS] and [SEP] removed
    assert short.shape[0] < long.shape[0]  # no padding rows
    assert np.allclose(np.linalg.norm(long, axis=1), 1.0, atol=1e-5)


def test_chamfer_retrieval_is_exact_and_survives_save_load(tiny_encoder, beir_dir, tmp_path,
                                                           isolated_cache, monkeypatch):
    ds = load_dataset(beir_dir)
    exact = ChamferRetriever.build(ds.corpus, model=str(tiny_encoder))
    encoder = exact.encoder
    doc_tokens = encoder.encode_documents([d.contents for d in ds.corpus])
    ids = [d.doc_id for d in ds.corpus]
    run = exact.search(QUERIES, k=6)
    for qid, text in QUERIES.items():
        query = encoder.encode_queries([text])[0]
        scores = [naive_chamfer(query, d) for d in doc_tokens]
        assert list(run[qid]) == [ids[i] for i in np.argsort(scores)[::-1]]
        assert run[qid][ids[int(np.argmax(scores))]] == pytest.approx(max(scores), abs=1e-2)
    monkeypatch.setattr(chamfer, "BLOCK_TOKENS", 7)  # many small blocks: same answer
    assert_same_run(exact.search(QUERIES, k=6), run, tol=1e-4)
    rescored = exact.rescore(QUERIES, run)
    for qid in QUERIES:
        assert rescored[qid] == pytest.approx(run[qid], abs=1e-4)
    out = save_index(f"chamfer(model={tiny_encoder})", ds.corpus, tmp_path / "idx")
    assert_same_run(open_index(out).pipeline.search(QUERIES, k=6), run, tol=1e-4)


def test_rerank_bm25_candidates_with_chamfer(tiny_encoder, beir_dir, isolated_cache):
    from cormorant.retrieval.assemble import build_pipeline

    ds = load_dataset(beir_dir)
    pipe = build_pipeline(f"bm25 % 2 >> chamfer(model={tiny_encoder})", ds.corpus)
    bm25 = build_pipeline("bm25 % 2", ds.corpus).search(QUERIES, k=5)
    run = pipe.search(QUERIES, k=5)
    assert all(set(run[q]) == set(bm25[q]) for q in QUERIES)


def test_muvera_equals_the_exact_oracle_when_candidates_cover_the_corpus(
        tiny_encoder, beir_dir, tmp_path, isolated_cache):
    from cormorant.index.format import read_meta
    from cormorant.retrieval.muvera import MuveraRetriever

    ds = load_dataset(beir_dir)
    exact = ChamferRetriever.build(ds.corpus, model=str(tiny_encoder)).search(QUERIES, k=6)
    muvera = MuveraRetriever.build(ds.corpus, model=str(tiny_encoder), candidates=6,
                                   repetitions=4, k_sim=2, d_proj=8)
    assert muvera.fde.dim == 4 * 4 * 8
    assert_same_run(muvera.search(QUERIES, k=6), exact, tol=1e-4)
    few = MuveraRetriever.build(ds.corpus, model=str(tiny_encoder), candidates=2,
                                repetitions=4, k_sim=2, d_proj=8)
    assert all(len(docs) == 2 for docs in few.search(QUERIES, k=6).values())

    spec = f"muvera(model={tiny_encoder}, candidates=6, repetitions=4, k_sim=2, d_proj=8)"
    out = save_index(spec, ds.corpus, tmp_path / "idx")
    meta = read_meta(out / "0-muvera")
    assert meta["fde"]["repetitions"] == 4 and meta["fde"]["k_sim"] == 2
    assert_same_run(open_index(out).pipeline.search(QUERIES, k=6), exact, tol=1e-4)
    from cormorant.errors import PipelineError

    with pytest.raises(PipelineError, match="would need a rebuild"):
        open_index(out, pipeline="muvera(k_sim=4)")
    # Ball carving is a query-time option: no rebuild, recorded in the stage's parameters.
    carved = open_index(out, pipeline="muvera(carve=0.5)").pipeline
    assert str(carved).endswith("candidates=6, carve=0.5)") and carved.carve == 0.5
    assert set(carved.search(QUERIES, k=6)) == set(QUERIES)
    for bad, message in (("candidates=0", "candidates must be at least 1"),
                         ("carve=2", "carve must be at most 1")):
        with pytest.raises(PipelineError, match=message):
            MuveraRetriever.build(ds.corpus, model=str(tiny_encoder), **eval(f"dict({bad})"))


def test_ball_carving_groups_similar_tokens_into_their_sum():
    from cormorant.retrieval.muvera import ball_carve

    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    near_a = np.array([0.9, np.sqrt(1 - 0.81), 0.0])
    query = np.stack([a, b, near_a, b]).astype(np.float32)
    carved = ball_carve(query, threshold=0.7)
    # first free token, then every free token at similarity >= 0.7 to it: {a, near_a}, {b, b}
    assert np.allclose(carved, [a + near_a, 2 * b])
    assert np.allclose(ball_carve(query, threshold=1.01), query)  # nothing close enough
    assert len(ball_carve(query, threshold=-1.0)) == 1  # one ball holds everything


def test_batched_scores_equal_one_query_at_a_time():
    from cormorant.retrieval.chamfer import batch_chamfer_scores

    rng = np.random.default_rng(5)
    docs = [rng.normal(size=(n, 6)).astype("float32") for n in (2, 0, 4, 1)]
    tokens = np.concatenate([d for d in docs if len(d)])
    starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
    queries = [rng.normal(size=(n, 6)).astype("float32") for n in (3, 0, 1)]
    batched = batch_chamfer_scores(queries, tokens, starts)
    for row, query in enumerate(queries):
        if len(query):
            assert np.allclose(batched[row], chamfer_scores(query, tokens, starts), atol=1e-4)
    assert (batched[1][[0, 2, 3]] == 0).all() and np.isinf(batched[:, 1]).all()
