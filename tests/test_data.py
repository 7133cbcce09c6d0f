import json

import pytest

from cormorant.data import load_dataset
from cormorant.errors import DataError
from cormorant.eval.harness import run_split
from cormorant.pipeline import StaticStage
from cormorant.types import Run
from tests.conftest import QRELS, write_beir


@pytest.mark.parametrize("gz", [False, True])
def test_beir_folder_plain_or_gzipped(tmp_path, gz):
    ds = load_dataset(write_beir(tmp_path / "c", gz=gz))
    assert ds.split_names == ["test"]
    assert len(ds.corpus) == 6
    doc = next(iter(ds.corpus))
    assert (doc.doc_id, doc.title) == ("d1", "Vitamin D")
    split = ds.split("test")
    assert split.qrels == QRELS
    assert split.queries["q2"] == "birds that fish"


def test_missing_split_lists_the_ones_that_exist(beir_dir):
    with pytest.raises(DataError, match=r"no split 'dev' \(it has: test\)"):
        load_dataset(beir_dir).split("dev")


def test_malformed_corpus_line_is_named(beir_dir):
    with open(beir_dir / "corpus.jsonl", "a") as handle:
        handle.write("{not json\n")
    with pytest.raises(DataError, match=r"corpus.jsonl:7: not valid JSON"):
        list(load_dataset(beir_dir).corpus)


def test_unknown_folder_and_missing_path(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="matches no dataset format"):
        load_dataset(tmp_path / "empty")


def test_msmarco_tsv(tmp_path):
    (tmp_path / "collection.tsv").write_text("0\tfirst passage\n1\tsecond passage\n")
    (tmp_path / "queries.dev.tsv").write_text("100\twhich passage\n101\tunjudged\n")
    (tmp_path / "qrels.dev.tsv").write_text("100 0 1 1\n")
    ds = load_dataset(tmp_path)
    assert [d.text for d in ds.corpus] == ["first passage", "second passage"]
    split = ds.split("dev")
    assert split.queries == {"100": "which passage"}
    assert split.qrels == {"100": {"1": 1}}


def bright_fixture(folder):
    folder.mkdir()
    examples = [
        {"id": "0", "query": "why do insects fly to light", "reasoning": "GOLD NOTES",
         "gold_ids": ["a_0", "a_1"], "gold_ids_long": ["a"], "excluded_ids": ["x_0"],
         "gold_answer": "..."},
        {"id": "1", "query": "smell primaries", "reasoning": "", "gold_ids": ["b_0"],
         "gold_ids_long": ["b"], "excluded_ids": ["N/A"], "gold_answer": "..."},
    ]
    (folder / "examples.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    docs = [{"id": i, "content": f"insects fly to light {i}"} for i in ("a_0", "a_1", "b_0", "x_0")]
    (folder / "documents.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    long_docs = [{"id": i, "content": f"long text of {i}"} for i in ("a", "b", "x")]
    (folder / "long_documents.jsonl").write_text("".join(json.dumps(d) + "\n" for d in long_docs))
    return folder


def test_bright_queries_qrels_and_exclusions(tmp_path):
    ds = load_dataset(bright_fixture(tmp_path / "biology"))
    split = ds.split("test")
    assert split.queries["0"] == "why do insects fly to light"  # never the reasoning field
    assert split.qrels == {"0": {"a_0": 1, "a_1": 1}, "1": {"b_0": 1}}
    assert split.excluded == {"0": {"x_0"}}  # "N/A" means none
    assert len(ds.corpus) == 4


def test_bright_long_documents_use_gold_ids_long(tmp_path):
    ds = load_dataset(bright_fixture(tmp_path / "biology"), long_documents=True)
    assert ds.split("test").qrels == {"0": {"a": 1}, "1": {"b": 1}}
    assert {d.doc_id for d in ds.corpus} == {"a", "b", "x"}


def test_bright_excluded_documents_are_dropped_before_cutting(tmp_path):
    ds = load_dataset(bright_fixture(tmp_path / "biology"))
    # The excluded doc ranks first; with depth 2 it would push a_1 out if it were cut first.
    run = Run({"0": {"x_0": 9.0, "a_0": 5.0, "a_1": 4.0}, "1": {"b_0": 1.0}})
    result = run_split(StaticStage(run), ds, "test", depth=2, measures=["R@2"])
    assert "x_0" not in result.run["0"]
    assert result.metrics["R@2"] == 1.0


def test_bright_rejects_excluded_gold(tmp_path):
    folder = bright_fixture(tmp_path / "bad")
    record = {"id": "9", "query": "q", "gold_ids": ["a_0"], "gold_ids_long": [],
              "excluded_ids": ["a_0"]}
    with open(folder / "examples.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    with pytest.raises(DataError, match="excludes its own gold"):
        load_dataset(folder).split("test")


def test_options_for_another_format_are_refused(beir_dir, tmp_path):
    with pytest.raises(DataError, match="BEIR datasets take no documents option"):
        load_dataset(beir_dir, documents=tmp_path / "docs.jsonl")


def test_graded_trec_qrels_drive_ndcg(tmp_path):
    """TREC DL-style graded judgments (0-3) in an MS MARCO folder: nDCG uses the grades."""
    import math

    from cormorant.eval.measures import evaluate

    (tmp_path / "collection.tsv").write_text("a\tx\nb\ty\nc\tz\n")
    (tmp_path / "queries.dl.tsv").write_text("1\tquery\n")
    (tmp_path / "qrels.dl.tsv").write_text("1 0 a 3\n1 0 b 1\n1 0 c 0\n")
    split = load_dataset(tmp_path).split("dl")
    run = Run({"1": {"b": 3.0, "a": 2.0, "c": 1.0}})
    gain = lambda rel, rank: (2 ** rel - 1) / math.log2(rank + 1)  # noqa: E731
    # ir-measures' nDCG uses linear gains (trec_eval's): rel / log2(rank + 1).
    linear = (1 / 1 + 3 / math.log2(3)) / (3 / 1 + 1 / math.log2(3))
    got = evaluate(run, split.qrels, ["nDCG@10"]).aggregate["nDCG@10"]
    assert got == pytest.approx(linear, abs=1e-6)
    assert got != pytest.approx((gain(1, 1) + gain(3, 2)) / (gain(3, 1) + gain(1, 2)), abs=1e-3)


def test_ir_datasets_with_local_files(tmp_path):
    ir_datasets = pytest.importorskip("ir_datasets")
    from ir_datasets.datasets.base import Dataset as IrdsDataset
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import LocalDownload

    (tmp_path / "docs.tsv").write_text("d1\tcormorants dive for fish\nd2\tstatins and cholesterol\n")
    (tmp_path / "queries.tsv").write_text("q1\tdiving birds\n")
    (tmp_path / "qrels").write_text("q1 0 d1 1\n")
    name = f"cormorant-test/{tmp_path.name}/test"
    ir_datasets.registry.register(name, IrdsDataset(
        TsvDocs(LocalDownload(tmp_path / "docs.tsv")),
        TsvQueries(LocalDownload(tmp_path / "queries.tsv")),
        TrecQrels(LocalDownload(tmp_path / "qrels"), {0: "no", 1: "yes"})))
    ds = load_dataset(f"irds:{name}")
    assert ds.split_names == ["test"]
    assert [d.doc_id for d in ds.corpus] == ["d1", "d2"]
    assert ds.split("test").qrels == {"q1": {"d1": 1}}
    assert ds.split("test").queries == {"q1": "diving birds"}
    with pytest.raises(DataError, match="knows no dataset"):
        load_dataset("irds:no/such/dataset")


def test_validation_finds_ids_that_do_not_line_up(beir_dir):
    from cormorant.data.validate import validate_dataset

    assert validate_dataset(load_dataset(beir_dir)).problems == []
    with open(beir_dir / "qrels" / "test.tsv", "a") as handle:
        handle.write("q1\tghost\t1\n")
    report = validate_dataset(load_dataset(beir_dir))
    assert report.problems == ["test: 1 judged documents are not in the corpus, e.g. 'ghost'"]
    assert report.splits["test"]["judgments"] == 6
