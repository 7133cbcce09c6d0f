"""Run files as first-class: topics in, TREC runs out, any run scored and fused (issue 28)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cormorant.data.topics import read_topics
from cormorant.data.trec import read_trec_run
from cormorant.errors import DataError
from tests.conftest import QRELS, QUERIES, write_beir

SCIFACT = Path(__file__).parents[1] / ".." / "shared" / "data" / "scifact"


def cormorant(*args, stdin=None, cache=None):
    import os

    env = {**os.environ, "CORMORANT_CACHE": str(cache)} if cache is not None else None
    return subprocess.run([sys.executable, "-m", "cormorant.cli", *map(str, args)], input=stdin,
                          capture_output=True, text=True, env=env, timeout=900)


def ok(result):
    assert result.returncode == 0, result.stderr
    return result


def error_line(result):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return next(line for line in result.stderr.splitlines() if line.startswith("error:"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dataset = write_beir(root / "tiny")
    ok(cormorant("index", "build", "-d", dataset, "-p", "bm25", "-o", root / "idx"))
    return dataset, root / "idx", root


def test_topics_formats(tmp_path):
    (tmp_path / "t.tsv").write_text("q1\tvitamin d\nq2\tbirds that fish\n")
    (tmp_path / "t.jsonl").write_text('{"query_id": "q1", "text": "vitamin d"}\n'
                                      '{"qid": 2, "query": "birds"}\n')
    (tmp_path / "t.txt").write_text("<top>\n<num> Number: 301\n<title> Topic: international\n"
                                    " organized crime\n<desc> Description:\nx\n</top>\n"
                                    "<top><num>302<title>poliomyelitis</top>\n")
    assert read_topics(tmp_path / "t.tsv") == {"q1": "vitamin d", "q2": "birds that fish"}
    assert read_topics(tmp_path / "t.jsonl") == {"q1": "vitamin d", "2": "birds"}
    assert read_topics(tmp_path / "t.txt") == {"301": "international organized crime",
                                              "302": "poliomyelitis"}
    folder = write_beir(tmp_path / "tiny")
    assert read_topics(folder) == QUERIES
    assert read_topics(folder, split="test") == QUERIES
    (tmp_path / "bad.tsv").write_text("q1 no tab\n")
    with pytest.raises(DataError, match=r"bad.tsv:1: expected 'query_id<TAB>text'"):
        read_topics(tmp_path / "bad.tsv")


def test_search_topics_writes_a_run_that_eval_scores_as_the_pipeline(tiny, tmp_path):
    dataset, index, _ = tiny
    run = tmp_path / "bm25.trec"
    ok(cormorant("search", "-i", index, "--topics", dataset, "--split", "test", "--output", run,
                 "--tag", "mybm25", "--batch-size", "2"))
    lines = run.read_text().splitlines()
    assert lines[0].split()[1:] == ["Q0", "d1", "1", lines[0].split()[4], "mybm25"]
    assert set(read_trec_run(run)) == set(QUERIES)
    by_run = ok(cormorant("eval", "-d", dataset, "--run", run, "--save-json", tmp_path / "r.json"))
    ok(cormorant("eval", "-d", dataset, "-p", "bm25", "--save-json", tmp_path / "p.json"))
    r, p = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "rp")
    assert r["metrics"] == p["metrics"] and r["per_query"] == p["per_query"]
    assert r["pipeline"] == str(run) and f"`{run}`" in by_run.stdout
    # The run file is never replaced without --overwrite.
    assert "already exists (use --overwrite" in error_line(
        cormorant("search", "-i", index, "--topics", dataset, "--output", run))
    ok(cormorant("search", "-i", index, "--topics", dataset, "--output", run, "--overwrite"))


def test_search_reads_queries_from_stdin(tiny):
    _, index, _ = tiny
    found = ok(cormorant("search", "-i", index, "-", "--json", "-k", "1",
                         stdin="cholesterol drugs\nbirds that fish\n"))
    hits = json.loads(found.stdout)
    assert [h["query"] for h in hits] == ["cholesterol drugs", "birds that fish"]
    assert hits[0]["hits"][0]["doc_id"] == "d3"


def test_eval_several_runs_with_a_baseline_and_qrels_file(tiny, tmp_path):
    dataset, index, _ = tiny
    a, b = tmp_path / "a.trec", tmp_path / "b.trec"
    ok(cormorant("search", "-i", index, "--topics", dataset, "-o", a))
    b.write_text("".join(f"{q} Q0 d4 1 1.0 other\n" for q in QUERIES))  # a run that finds nothing
    result = ok(cormorant("eval", "-d", dataset, "-r", a, b, "--baseline", a,
                          "--save-json", tmp_path / "both.json"))
    both = json.loads((tmp_path / "both.json").read_text())
    assert [r["pipeline"] for r in both["results"]] == [str(a), str(b)]
    assert both["results"][1]["metrics"]["nDCG@10"] == 0.0
    assert {c["system"] for c in both["significance"]} == {str(b)}
    assert "| queries |" in result.stdout and "†: differs from the baseline" in result.stdout
    # pyserini.eval.trec_eval's habit: a qrels file and a run, no dataset.
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("".join(f"{q} 0 {d} {r}\n" for q, ds in QRELS.items() for d, r in ds.items()))
    by_qrels = ok(cormorant("eval", "--qrels", qrels, "--run", a, "-m", "nDCG@10",
                            "--save-json", tmp_path / "q.json"))
    assert json.loads((tmp_path / "q.json").read_text())["metrics"]["nDCG@10"] == \
        both["results"][0]["metrics"]["nDCG@10"]
    assert "| qrels | test |" in by_qrels.stdout


def test_average_judged_or_retrieved(tiny, tmp_path):
    dataset, _, _ = tiny
    run = tmp_path / "partial.trec"
    run.write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 d6 2 1.0 x\n")  # q2 and q3 get nothing
    def ndcg(*extra):
        ok(cormorant("eval", "-d", dataset, "--run", run, "-m", "nDCG@10", "--save-json",
                     tmp_path / "o.json", *extra))
        return json.loads((tmp_path / "o.json").read_text())["metrics"]["nDCG@10"]
    assert ndcg() == pytest.approx(1 / 3)  # trec_eval -c: the two unanswered queries count 0
    assert ndcg("--average", "retrieved") == pytest.approx(1.0)  # BEIR / MTEB


def test_save_run_never_overwrites_and_run_file_is_renamed(tiny, tmp_path):
    dataset, _, _ = tiny
    kept = tmp_path / "mine.trec"
    kept.write_text("q1 Q0 d9 1 5.0 mine\n")
    message = error_line(cormorant("eval", "-d", dataset, "--save-run", kept))
    assert "already exists (use --overwrite" in message
    assert kept.read_text() == "q1 Q0 d9 1 5.0 mine\n"
    message = error_line(cormorant("eval", "-d", dataset, "--run-file", kept))
    assert "--run-file is now --save-run" in message
    assert kept.read_text() == "q1 Q0 d9 1 5.0 mine\n"
    ok(cormorant("eval", "-d", dataset, "--save-run", kept, "--overwrite"))
    assert set(read_trec_run(kept)) == set(QUERIES)


def test_fuse_equals_the_pipeline_fuser(tiny, tmp_path):
    dataset, _, root = tiny
    a, b, fused = tmp_path / "a.trec", tmp_path / "b.trec", tmp_path / "fused.trec"
    ok(cormorant("eval", "-d", dataset, "-p", "bm25", "--save-run", a))
    ok(cormorant("eval", "-d", dataset, "-p", "bm25(k1=2.0, b=0.9)", "--save-run", b))
    ok(cormorant("fuse", "--runs", a, b, "--method", "rrf", "-o", fused))
    ok(cormorant("eval", "-d", dataset, "-p", "rrf(bm25, bm25(k1=2.0, b=0.9))",
                 "--save-run", tmp_path / "piped.trec"))
    def untagged(path):
        return [line.rsplit(" ", 1)[0] for line in path.read_text().splitlines()]

    assert untagged(fused) == untagged(tmp_path / "piped.trec")
    ok(cormorant("fuse", "--runs", a, b, "--method", "wsum", "--norm", "zscore", "--weights",
                 "0.3", "0.7", "-o", tmp_path / "w.trec"))
    assert "did you mean 'combmnz'" in error_line(
        cormorant("fuse", "--runs", a, b, "--method", "combmzn", "-o", tmp_path / "x.trec"))


def test_fuse_optimises_weights_on_a_dev_split(tiny, tmp_path):
    dataset, _, _ = tiny
    good, bad = tmp_path / "good.trec", tmp_path / "bad.trec"
    good.write_text("".join(f"{q} Q0 {d} 1 {r} g\n" for q, ds in QRELS.items() for d, r in ds.items()))
    bad.write_text("".join(f"{q} Q0 d4 1 1.0 b\n" for q in QRELS))
    result = ok(cormorant("fuse", "--runs", bad, good, "--method", "wsum", "--optimize", "nDCG@10",
                          "-d", dataset, "--split", "test", "--step", "0.5", "-o", tmp_path / "f"))
    assert "weights 0 1: nDCG@10 1.0000" in result.stderr


def test_an_index_of_another_collection_is_refused(tiny, tmp_path):
    dataset, index, _ = tiny
    other = tmp_path / "other"
    other.mkdir()
    (other / "corpus.jsonl").write_text('{"_id": "x1", "title": "", "text": "vitamin d"}\n')
    (other / "queries.jsonl").write_text('{"_id": "q1", "text": "vitamin d"}\n')
    (other / "qrels").mkdir()
    (other / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tx1\t1\n")
    message = error_line(cormorant("eval", "-d", other, "--index", index))
    assert "was built from corpus 'tiny', not 'other'" in message and "--allow-mismatch" in message
    ok(cormorant("eval", "-d", other, "--index", index, "--allow-mismatch"))


@pytest.mark.slow
def test_scifact_search_topics_eval_run_and_fuse_are_the_pipelines_numbers(tmp_path):
    """Over SciFact's test queries: a bm25 run from `search --topics` scores as `eval -p bm25`
    does, and `fuse` of the bm25 and dense runs gives rrf(bm25, dense)'s 0.7149."""
    if not SCIFACT.is_dir():
        pytest.skip("../shared/data/scifact is not here")
    index = tmp_path / "idx"
    ok(cormorant("index", "build", "-d", SCIFACT, "-p", "bm25", "-o", index))
    runs = {}
    for name in ("bm25", "dense"):
        runs[name] = tmp_path / f"{name}.trec"
        ok(cormorant("eval", "-d", SCIFACT, "-p", name, "--save-run", runs[name],
                     "--save-json", tmp_path / f"{name}.json"))
    topics = tmp_path / "topics.trec"
    ok(cormorant("search", "-i", index, "--topics", SCIFACT, "--split", "test", "-o", topics))
    ok(cormorant("eval", "-d", SCIFACT, "--run", topics, "--save-json", tmp_path / "t.json"))
    by_topics = json.loads((tmp_path / "t.json").read_text())
    by_pipeline = json.loads((tmp_path / "bm25.json").read_text())
    assert by_topics["metrics"] == by_pipeline["metrics"]
    assert by_topics["per_query"] == by_pipeline["per_query"]
    fused = tmp_path / "fused.trec"
    ok(cormorant("fuse", "--runs", runs["bm25"], runs["dense"], "--method", "rrf", "-o", fused))
    ok(cormorant("eval", "-d", SCIFACT, "--run", fused, "--save-json", tmp_path / "f.json"))
    ok(cormorant("eval", "-d", SCIFACT, "-p", "rrf(bm25, dense)", "--save-json", tmp_path / "p.json"))
    fused_ndcg = json.loads((tmp_path / "f.json").read_text())["metrics"]["nDCG@10"]
    piped = json.loads((tmp_path / "p.json").read_text())["metrics"]
    assert round(fused_ndcg, 4) == round(piped["nDCG@10"], 4) == 0.7149
