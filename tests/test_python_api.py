"""The Python face: top-level functions, short reprs, pandas round trips (issue 28, item 6)."""

import subprocess
import sys

import pytest

from cormorant.types import Corpus, Document, Run
from tests.conftest import QRELS, write_beir


def test_everyday_functions_import_from_the_top_without_heavy_modules():
    code = ("import sys; from cormorant import build_pipeline, open_index, evaluate, load_dataset;"
            "print(sorted({'torch', 'faiss', 'sentence_transformers', 'fastapi'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_short_reprs(tmp_path):
    from cormorant import build_pipeline, evaluate, load_dataset, open_index
    from cormorant.eval.harness import run_split
    from cormorant.retrieval.assemble import save_index

    ds = load_dataset(write_beir(tmp_path / "tiny"))
    len(ds.corpus)
    assert repr(ds) == "Dataset('tiny', Corpus('tiny', 6 documents), splits=['test'])"
    assert repr(ds.split("test")) == "Split(3 queries, 5 judgments)"
    pipe = build_pipeline("rrf(bm25, bm25(k1=2.0)) % 5", ds.corpus)
    assert repr(pipe) == "WithDocuments('rrf(bm25, bm25(k1=2.0)) % 5')"
    result = run_split(pipe, ds, "test")
    assert repr(result).startswith("EvalResult(tiny/test, 'rrf(bm25, bm25(k1=2.0)) % 5': nDCG@10=")
    assert repr(result).endswith("; 3 queries)") and len(repr(result)) < 150
    assert repr(evaluate(result.run, QRELS, ["P@1"])) == "Evaluation(P@1=1.0000; 3 queries)"
    big = Run({f"q{i}": {f"d{j}": 1.0 for j in range(10)} for i in range(30)})
    assert repr(big) == "Run(30 queries, 300 results)"
    assert repr(Run({"q": {"a": 1.0}})) == "{'q': {'a': 1.0}}"
    save_index("bm25", ds.corpus, tmp_path / "idx")
    assert repr(open_index(tmp_path / "idx")) == \
        f"IndexHandle('{tmp_path / 'idx'}', 'bm25', 6 documents of 'tiny')"
    assert repr(Corpus.from_documents([Document("a", "x")], name="c")) == "Corpus('c', 1 documents)"


def test_runs_round_trip_through_pandas_in_each_toolkits_names():
    pd = pytest.importorskip("pandas")
    run = Run({"q1": {"a": 1.0, "b": 2.0, "c": 2.0}, "q2": {"x": 0.5}})
    frame = run.to_pandas()
    assert list(frame.columns) == ["query_id", "doc_id", "score", "rank"]
    assert frame[frame.query_id == "q1"].doc_id.tolist() == ["c", "b", "a"]  # trec_eval's order
    assert frame["rank"].tolist() == [1, 2, 3, 1]
    assert Run.from_pandas(frame) == run
    pyterrier = frame.rename(columns={"query_id": "qid", "doc_id": "docno"})
    assert Run.from_pandas(pyterrier) == run
    ranx_style = frame.rename(columns={"query_id": "q_id"})
    assert Run.from_pandas(ranx_style) == run
    from cormorant.errors import DataError

    with pytest.raises(DataError, match="needs query, document and score columns"):
        Run.from_pandas(pd.DataFrame({"qid": ["q"], "docno": ["a"]}))
