import pytest

from cormorant.data import load_dataset
from cormorant.errors import PipelineError
from cormorant.retrieval.assemble import open_index, save_index
from cormorant.retrieval.bm25 import BM25Retriever
from tests.conftest import QUERIES, assert_same_run


def test_ranks_matching_documents_first(beir_dir):
    bm25 = BM25Retriever.build(load_dataset(beir_dir).corpus)
    run = bm25.search(QUERIES, k=2)
    assert list(run["q3"])[0] == "d3"
    assert list(run["q1"])[0] == "d1"
    # Stemming: "birds" and "fish" match "birds", "fishing", "fishermen", "fish".
    assert set(run["q2"]) <= {"d2", "d5"}


def test_query_with_no_corpus_term_returns_nothing(beir_dir):
    bm25 = BM25Retriever.build(load_dataset(beir_dir).corpus)
    assert bm25.search({"q": "zzyzx qwerty"}, k=5) == {"q": {}}


def test_save_load_same_results_and_settings_checked(beir_dir, tmp_path):
    ds = load_dataset(beir_dir)
    built = BM25Retriever.build(ds.corpus, k1=1.2)
    out = save_index("bm25(k1=1.2)", ds.corpus, tmp_path / "idx")
    loaded = open_index(out).pipeline
    assert str(loaded) == "bm25(k1=1.2)"
    assert_same_run(loaded.search(QUERIES, k=5), built.search(QUERIES, k=5))
    with pytest.raises(PipelineError, match="would need a rebuild"):
        open_index(out, pipeline="bm25(k1=2.0)")


def test_unknown_stemmer(beir_dir):
    with pytest.raises(PipelineError, match="no stemmer for 'klingon'"):
        BM25Retriever.build(load_dataset(beir_dir).corpus, stemmer="klingon")
