"""bm25.lucene and rm3 with language=zh (Lucene's CJKAnalyzer) on the Chinese fixture."""

import pytest

pytest.importorskip("pyserini", reason="needs the [lucene] extra")
pytestmark = pytest.mark.java

from cormorant.data import load_dataset  # noqa: E402
from cormorant.errors import PipelineError  # noqa: E402
from cormorant.retrieval.assemble import build_pipeline, open_index, save_index  # noqa: E402
from cormorant.types import Corpus  # noqa: E402
from tests.conftest import assert_same_run  # noqa: E402
from tests.test_chinese import BIGRAM_TOP, FIXTURE, NEW  # noqa: E402


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(FIXTURE)


@pytest.fixture(scope="module")
def queries(dataset):
    return dataset.split("dev").queries


def test_lucene_cjk_analyzer_scores_as_bm25_bigrams(dataset, queries):
    """Same analysis (CJK bigrams) and the same BM25 (k1=0.9, b=0.4): the same ranking, scores
    equal up to Lucene's one-byte encoding of document lengths."""
    lucene = build_pipeline("bm25.lucene(language=zh)", dataset.corpus).search(queries, k=10)
    ours = build_pipeline("bm25(language=zh)", dataset.corpus).search(queries, k=10)
    assert {q: list(docs)[:3] for q, docs in lucene.items()} == BIGRAM_TOP
    assert_same_run(lucene, ours, tol=1e-3)


def test_lucene_english_analyzer_matches_single_characters(dataset, queries):
    """Lucene's default analyzer already cuts Chinese into single characters (its standard
    tokenizer): it matches, but on characters, so looser passages come in (101's fish-keeping
    passage shares 鱼 and 活 with the query, no character pair)."""
    english = build_pipeline("bm25.lucene", dataset.corpus).search(queries, k=10)
    chinese = build_pipeline("bm25.lucene(language=zh)", dataset.corpus).search(queries, k=10)
    assert list(english["101"])[:2] == ["9", "10"]
    assert list(chinese["101"]) == ["9"]


def test_zh_index_reopens_takes_rm3_and_writes(dataset, queries, tmp_path):
    out = save_index("bm25.lucene(language=zh)", dataset.corpus, tmp_path / "idx")
    with pytest.raises(PipelineError, match="language='zh'.*rebuild"):
        open_index(out, pipeline="bm25.lucene(language=en)")
    rm3 = open_index(out, pipeline="rm3(fb_docs=2)")
    assert str(rm3.pipeline) == "rm3(fb_docs=2, language=zh)"
    assert {q: list(docs)[0] for q, docs in rm3.pipeline.search(queries, k=5).items()} == \
        {q: docs[0] for q, docs in BIGRAM_TOP.items()}
    probes = {"p": "杜仲茶的功效"}
    with open_index(out, write=True) as handle:
        handle.live.add([NEW])  # indexed by Anserini with -language zh, as the build was
        written = handle.pipeline.search(probes, k=5)
    fresh = build_pipeline("bm25.lucene(language=zh)", Corpus.from_documents(
        [*dataset.corpus, NEW])).search(probes, k=5)
    assert list(written["p"])[:2] == ["n1", "0"]
    assert_same_run(written, fresh)
