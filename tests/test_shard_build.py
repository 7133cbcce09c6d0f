"""A sharded build builds each shard from its own documents: no stage is built over the whole
collection, what the shards share (IVF centroids, PQ codebooks) is learnt once from a seeded
sample, and a stage that cannot build a shard alone is built whole and split."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from cormorant.index.faiss_index import FaissIndex, sample_rows
from cormorant.index.sharding import shard_of
from cormorant.retrieval import dense as dense_module
from cormorant.retrieval import shard_index
from cormorant.retrieval.assemble import open_index, save_index
from cormorant.retrieval.bm25 import BM25Retriever
from cormorant.retrieval.dense import DenseRetriever, corpus_rows
from cormorant.retrieval.distributed import InProcess
from cormorant.retrieval.shard_index import save_sharded_index

from .conftest import assert_same_run
from .test_shards import QUERIES, corpus_of


def test_no_stage_is_built_over_the_whole_collection(tmp_path, tiny_encoder, isolated_cache,
                                                     monkeypatch):
    text = f"rrf(bm25, dense(model={tiny_encoder}))"
    corpus = corpus_of(40, seed=3)
    single = open_index(save_index(text, corpus, tmp_path / "single"))
    sizes = [sum(shard_of(d.doc_id, 3) == n for d in corpus) for n in range(3)]
    built: list[int] = []
    create = BM25Retriever.create.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(BM25Retriever, "create", classmethod(
        lambda cls, c, s: built.append(len(c)) or create(cls, c, s)))
    added: list[int] = []
    add = FaissIndex.add
    monkeypatch.setattr(FaissIndex, "add", lambda self, ids, v: added.append(len(ids))
                        or add(self, ids, v))

    def whole(*_: object) -> None:
        raise AssertionError("a stage was built over the whole collection")

    monkeypatch.setattr(DenseRetriever, "create", classmethod(whole))
    monkeypatch.setattr(shard_index, "build_pipeline", whole)
    sharded = open_index(save_sharded_index(text, corpus, tmp_path / "sharded", 3))
    assert built == sizes  # bm25 indexed one shard's documents at a time
    assert max(added) == max(sizes) < 40  # and FAISS held one shard's vectors at most
    assert_same_run(sharded.pipeline.search(QUERIES, k=10), single.pipeline.search(QUERIES, k=10))


def ivf_centroids(stage) -> np.ndarray:  # noqa: ANN001
    import faiss

    quantizer = faiss.extract_index_ivf(stage.segments.items[0].data.index._index).quantizer  # noqa: SLF001
    return quantizer.reconstruct_n(0, quantizer.ntotal)


def test_ivf_centroids_are_trained_once_on_a_seeded_sample(tmp_path, tiny_encoder,
                                                           isolated_cache, monkeypatch):
    corpus = corpus_of(90, seed=4)
    text = f"dense(model={tiny_encoder}, index=ivf)"
    monkeypatch.setattr(dense_module, "TRAIN_SAMPLE", 50)  # fewer than the collection
    handle = open_index(save_sharded_index(text, corpus, tmp_path / "ivf", 3))
    settings = DenseRetriever.declared({"model": str(tiny_encoder), "index": "ivf"})
    _, _, vectors = corpus_rows(corpus, settings)
    expected = FaissIndex(vectors.shape[1], kind="ivf", expected_count=90)
    expected.train(np.asarray(vectors[sample_rows(90, 50)]))
    want = expected._index.quantizer.reconstruct_n(0, expected._index.quantizer.ntotal)  # noqa: SLF001
    parts = handle.pipeline.stage.parts
    assert len(parts) == 3 and want.shape[0] == 37  # 4 * sqrt(90) lists: the whole's count
    for part in parts:
        np.testing.assert_array_equal(ivf_centroids(part), want)
        assert part.trained_on == 90
    hits = handle.pipeline.search(QUERIES, k=5)
    assert all(len(found) == 5 for found in hits.values())


def test_muvera_shards_share_pq_codebooks_learnt_once(tmp_path, tiny_encoder, isolated_cache):
    import faiss

    corpus = corpus_of(60, seed=5)
    text = f"muvera(model={tiny_encoder}, index=pqfs, repetitions=2, k_sim=2, d_proj=8)"
    handle = open_index(save_sharded_index(text, corpus, tmp_path / "muvera", 2))
    books = []
    for part in handle.pipeline.stage.parts:
        index = faiss.downcast_index(part.segments.items[0].data.index._index)  # noqa: SLF001
        books.append(faiss.vector_to_array(index.pq.centroids))
        assert part.trained_on == 60
    assert books[0].size > 0
    np.testing.assert_array_equal(books[0], books[1])
    assert handle.live.count == 60
    assert all(handle.pipeline.search(QUERIES, k=3).values())


def test_a_stage_that_cannot_build_a_shard_alone_is_built_whole_then_split(
        tmp_path, tiny_encoder, isolated_cache, monkeypatch):
    text = f"rrf(bm25, dense(model={tiny_encoder}, cache=false))"
    corpus = corpus_of(30, seed=6)
    calls: list[str] = []
    build = shard_index.build_pipeline
    monkeypatch.setattr(shard_index, "build_pipeline",
                        lambda t, c: calls.append(t) or build(t, c))
    sharded = open_index(save_sharded_index(text, corpus, tmp_path / "split", 2))
    assert calls == [text]
    single = open_index(save_index(text, corpus, tmp_path / "single"))
    assert_same_run(sharded.pipeline.search(QUERIES, k=10), single.pipeline.search(QUERIES, k=10))
    save_sharded_index(f"dense(model={tiny_encoder})", corpus, tmp_path / "parts", 2)
    assert calls == [text]  # a stage that builds its shards alone is never built whole
    remote = save_sharded_index(text, corpus, tmp_path / "remote", 2, runner=Remote())
    assert sorted(p.name for p in remote.iterdir()) == ["meta.json", "shard-000", "shard-001"]
    assert_same_run(open_index(remote).pipeline.search(QUERIES, k=10),
                    single.pipeline.search(QUERIES, k=10))  # split from the staged copy


class Remote(InProcess):
    """Tasks that would leave this process: the whole-then-split path stages its index."""

    remote = True


def test_a_trained_index_pickles_with_what_it_learnt():
    """The shared template travels to a Ray shard task as FAISS's bytes."""
    rng = np.random.default_rng(0)
    index = FaissIndex(8, kind="IVF4,PQ2x4", expected_count=500)
    index.train(rng.standard_normal((200, 8)).astype(np.float32))
    copy = pickle.loads(pickle.dumps(index))
    vectors = rng.standard_normal((20, 8)).astype(np.float32)
    here, there = index.template(), copy.template()
    for one in (here, there):
        one.add([str(i) for i in range(20)], vectors)
    assert here.factory == there.factory == "IVF4,PQ2x4"
    np.testing.assert_array_equal(here.search(vectors, 3, nprobe=4)[1],
                                  there.search(vectors, 3, nprobe=4)[1])
    np.testing.assert_array_equal(here.reconstruct(list(range(20))),
                                  there.reconstruct(list(range(20))))


@pytest.mark.parametrize("count, size", [(5, 10), (1000, 10)])
def test_training_samples_are_seeded_and_ordered(count, size):
    rows = sample_rows(count, size)
    assert len(rows) == min(count, size) and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, sample_rows(count, size))
