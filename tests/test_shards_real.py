"""Sharded SciFact gives the single index's rankings: for 1, 2 and 3 shards, ``bm25``, flat
``dense`` (all-MiniLM-L6-v2, cached embeddings) and ``rrf(bm25, dense)`` return the same ids
in the same order with the same scores (within float tolerance) for every test query."""

from __future__ import annotations

import pytest

from cormorant.data import load_dataset
from cormorant.retrieval.assemble import open_index, save_index
from cormorant.retrieval.shard_index import save_sharded_index

from .conftest import assert_same_run, shared_dataset

pytestmark = pytest.mark.slow
PIPELINES = ["bm25", "dense", "rrf(bm25, dense)", "bm25 % 100 >> dense"]


@pytest.fixture(scope="module")
def scifact(tmp_path_factory):
    dataset = load_dataset(shared_dataset("scifact"))
    root = tmp_path_factory.mktemp("scifact-shards")
    single = open_index(save_index("rrf(bm25, dense)", dataset.corpus, root / "single"))
    return dataset, root, single


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_scifact_sharded_equals_single(scifact, shards):
    dataset, root, single = scifact
    queries = dataset.split("test").queries
    sharded = open_index(save_sharded_index("rrf(bm25, dense)", dataset.corpus,
                                            root / f"s{shards}", shards))
    assert sharded.live.count == single.live.count == 5183
    for text in PIPELINES:
        expected = single.open_pipeline(text).search(queries, k=100)
        got = sharded.open_pipeline(text).search(queries, k=100)
        assert sum(map(len, expected.values())) > 0.9 * 100 * len(queries), text
        assert_same_run(got, expected, tol=1e-5)
