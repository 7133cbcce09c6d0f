import numpy as np
import pytest

from cormorant.data.trec import read_qrels, read_trec_run, write_qrels, write_trec_run
from cormorant.errors import DataError
from cormorant.types import Corpus, Document, Run


def test_topk_keeps_best_and_breaks_ties_as_trec_eval():
    run = Run({"q": {"b": 1.0, "a": 1.0, "c": 3.0, "d": 0.5}})
    assert list(run.topk(2)["q"]) == ["c", "b"]  # tied: the larger doc id ranks first
    assert run.ranked("q") == [("c", 3.0), ("b", 1.0), ("a", 1.0), ("d", 0.5)]


TIED_DOCS = ["d1", "d10", "d2", "D3", "doc-9", "x", "a_b", "é"]


@pytest.mark.parametrize("relevant", TIED_DOCS)
def test_tied_scores_are_ordered_as_trec_eval_orders_them(relevant, tmp_path):
    """trec_eval (pytrec_eval, ir-measures' trec_eval backend) reads the run and sorts ties
    itself, so its RR of the one relevant document gives that document's rank in trec_eval's
    order: ours must agree, in ranked(), in the written file and in the depth cut."""
    import ir_measures

    run = Run({"q": {d: 1.0 for d in TIED_DOCS} | {"top": 2.0}})
    qrels = {"q": {relevant: 1}}
    backend = ir_measures.pytrec_eval
    trec_rr = backend.calc_aggregate([ir_measures.RR], qrels, run)[ir_measures.RR]
    ours = [d for d, _ in run.ranked("q")]
    assert 1 / (ours.index(relevant) + 1) == pytest.approx(trec_rr)
    write_trec_run(run, tmp_path / "run.trec")
    lines = (tmp_path / "run.trec").read_text().split("\n")
    assert f"q Q0 {relevant} {ours.index(relevant) + 1} 1 cormorant" in lines
    # The depth cut keeps what trec_eval would rank in its top 3.
    for depth in (2, 3, 5):
        cut = run.topk(depth)
        precision = backend.calc_aggregate([ir_measures.P @ depth], qrels, run)[ir_measures.P @ depth]
        assert (relevant in cut["q"]) == (precision > 0)


def test_topk_rejects_zero():
    with pytest.raises(DataError, match="at least 1"):
        Run({"q": {"a": 1.0}}).topk(0)


def test_from_arrays_skips_missing_results():
    scores = np.array([[0.9, 0.1], [0.5, 0.0]], dtype="float32")
    rows = np.array([[1, 0], [2, -1]])
    run = Run.from_arrays(["q1", "q2"], scores, rows, ["a", "b", "c"])
    assert run == {"q1": {"b": pytest.approx(0.9), "a": pytest.approx(0.1)},
                   "q2": {"c": 0.5}}


def test_without_removes_excluded_ids_per_query():
    run = Run({"q1": {"a": 3.0, "b": 2.0}, "q2": {"a": 1.0}})
    assert run.without({"q1": {"a"}}) == {"q1": {"b": 2.0}, "q2": {"a": 1.0}}


def test_corpus_streams_again_on_every_pass():
    opened = []

    def stream():
        opened.append(1)
        yield Document("d1", "x")
        yield Document("d2", "y")

    corpus = Corpus(stream)
    assert [d.doc_id for d in corpus] == ["d1", "d2"]
    assert [d.doc_id for d in corpus] == ["d1", "d2"]
    assert len(opened) == 2
    assert [len(b) for b in corpus.batches(1)] == [1, 1]


def test_fingerprint_changes_with_content():
    a = Corpus.from_documents([Document("d1", "x")])
    b = Corpus.from_documents([Document("d1", "y")])
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == Corpus.from_documents([Document("d1", "x")]).fingerprint


def test_trec_run_round_trip(tmp_path):
    run = Run({"q1": {"d1": 2.5, "d2": 1.25}, "q2": {"d3": -1.0}})
    write_trec_run(run, tmp_path / "run.trec", tag="test")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0] == "q1 Q0 d1 1 2.5 test"
    assert read_trec_run(tmp_path / "run.trec") == run


def test_qrels_read_trec_and_beir_forms(tmp_path):
    (tmp_path / "a.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\n")
    (tmp_path / "b.txt").write_text("q1 0 d1 2\nq1 0 d2 0\n")
    assert read_qrels(tmp_path / "a.tsv") == {"q1": {"d1": 2}}
    qrels = read_qrels(tmp_path / "b.txt")
    assert qrels == {"q1": {"d1": 2, "d2": 0}}
    write_qrels(qrels, tmp_path / "c.txt")
    assert read_qrels(tmp_path / "c.txt") == qrels


@pytest.mark.parametrize("content, message", [
    ("q1 0 d1 1\nq1 0\n", "bad.txt:2: expected"),
    ("q1 0 d1 high\n", "not a finite number"),
])
def test_malformed_qrels_name_the_line(tmp_path, content, message):
    (tmp_path / "bad.txt").write_text(content)
    with pytest.raises(DataError, match=message):
        read_qrels(tmp_path / "bad.txt")


def test_malformed_run_names_the_line(tmp_path):
    (tmp_path / "bad.trec").write_text("q1 Q0 d1 1 0.5 tag\nq1 Q0 d2 2\n")
    with pytest.raises(DataError, match="bad.trec:2"):
        read_trec_run(tmp_path / "bad.trec")
