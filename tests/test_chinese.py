"""Chinese text: bm25's language=zh analyzers, the T2Ranking loader, and a dense stage whose
model has a Chinese vocabulary, on the 20-passage fixture in T2Ranking's published layout."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from cormorant.data import detect_format, load_dataset
from cormorant.errors import DataError, PipelineError
from cormorant.eval.measures import evaluate
from cormorant.retrieval.analysis import Analyzer, cjk_bigrams
from cormorant.retrieval.assemble import build_pipeline, open_index, save_index
from cormorant.types import Corpus, Document
from tests.cli_support import run_cli
from tests.conftest import assert_same_run

FIXTURE = Path(__file__).parent / "data" / "t2ranking-mini"
NEW = Document("n1", "杜仲茶是用杜仲叶泡水制成的茶饮，功效是降血压。")


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(FIXTURE)


@pytest.fixture(scope="module")
def dev(dataset):
    return dataset.split("dev")


# -- the analyzers ---------------------------------------------------------------------------

def test_bigrams_as_lucene_cjk_analyzer_makes_them():
    analyse = Analyzer("zh", stemmer="english", stopwords="en")
    # Latin words as English (stemmed, stop words gone), full-width letters and digits
    # NFKC-folded, each CJK run (punctuation ends one) as overlapping pairs, a lone character
    # as itself, kana paired like Han.
    assert analyse(["联通5G套餐，Running the ＢＭ２５ 国 かな"]) == [
        ["5g", "run", "bm25", "联通", "套餐", "かな", "国"]]
    assert cjk_bigrams("中华人民 ok 国") == ["中华", "华人", "人民", "国"]
    # English analysis keeps a whole clause of Chinese as one term: nothing can match it.
    assert Analyzer("en", "english", "en")(["杜仲泡水喝的功效"]) == [["杜仲泡水喝的功效"]]


def test_jieba_segments_words():
    pytest.importorskip("rjieba", reason="needs the [zh] extra")
    analyse = Analyzer("zh", stemmer=None, stopwords=None, segmenter="jieba")
    assert analyse(["杜仲泡水喝的功效与作用 ok"]) == [
        ["ok", "杜仲", "泡水", "喝", "的", "功效", "与", "作用"]]


def test_segmenter_without_language_zh_is_refused():
    with pytest.raises(PipelineError, match="segmenter=jieba applies to Chinese text"):
        build_pipeline("bm25(segmenter=jieba)", Corpus.from_documents([NEW]))
    with pytest.raises(PipelineError, match="language must be one of en, zh"):
        build_pipeline("bm25(language=fr)", Corpus.from_documents([NEW]))


# -- retrieval on the fixture ------------------------------------------------------------------

BIGRAM_TOP = {"100": ["0", "2"], "101": ["9"], "102": ["11"], "103": ["13", "14"],
              "104": ["3", "4"]}
JIEBA_TOP = {"100": ["0", "2", "19"], "101": ["9"], "102": ["11", "18", "7"],
             "103": ["13", "14"], "104": ["3", "4"]}


@pytest.mark.parametrize(("pipeline", "top", "ndcg"), [
    ("bm25(language=zh)", BIGRAM_TOP, 0.9305),
    ("bm25(language=zh, segmenter=jieba)", JIEBA_TOP, 0.9464),
])
def test_zh_bm25_finds_the_known_answers(dataset, dev, pipeline, top, ndcg):
    if "jieba" in pipeline:
        pytest.importorskip("rjieba", reason="needs the [zh] extra")
    run = build_pipeline(pipeline, dataset.corpus).search(dev.queries, k=10)
    assert {q: list(docs)[:3] for q, docs in run.items()} == top
    scores = evaluate(run, dev.qrels, ["nDCG@10", "RR@10", "R(rel=2)@10"]).aggregate
    assert scores["RR@10"] == 1.0  # every query's grade-3 passage first
    assert scores["R(rel=2)@10"] == 1.0
    assert scores["nDCG@10"] == pytest.approx(ndcg, abs=1e-4)


def test_english_analysis_finds_nothing_in_chinese(dataset, dev):
    run = build_pipeline("bm25", dataset.corpus).search(dev.queries, k=10)
    assert all(not docs for docs in run.values())
    assert evaluate(run, dev.qrels, ["nDCG@10"]).aggregate["nDCG@10"] == 0.0


def test_zh_index_reopens_and_refuses_another_language(dataset, dev, tmp_path):
    built = build_pipeline("bm25(language=zh)", dataset.corpus).search(dev.queries, k=10)
    out = save_index("bm25(language=zh)", dataset.corpus, tmp_path / "idx")
    reopened = open_index(out)
    assert str(reopened.pipeline) == "bm25(language=zh)"
    assert_same_run(reopened.pipeline.search(dev.queries, k=10), built)
    with pytest.raises(PipelineError, match="built with bm25.language='zh'.*rebuild"):
        open_index(out, pipeline="bm25(language=en)")


def test_zh_writes_score_as_a_fresh_build(dataset, tmp_path):
    out = save_index("bm25(language=zh)", dataset.corpus, tmp_path / "idx")
    probes = {"p": "杜仲茶的功效"}
    with open_index(out, write=True) as handle:
        handle.live.add([NEW])
        written = handle.pipeline.search(probes, k=5)
    fresh = build_pipeline("bm25(language=zh)", Corpus.from_documents(
        [*dataset.corpus, NEW])).search(probes, k=5)
    assert list(written["p"])[:2] == ["n1", "0"]
    assert_same_run(written, fresh)


# -- the T2Ranking loader ----------------------------------------------------------------------

def test_t2ranking_layout_is_detected_and_counted(dataset):
    assert detect_format(FIXTURE) == "t2ranking"  # not msmarco, which also matches
    assert len(list(dataset.corpus)) == 20
    assert dataset.split_names == ["dev", "retrieval.dev", "retrieval.train", "train"]
    dev, retrieval = dataset.split("dev"), dataset.split("retrieval.dev")
    assert (len(dev.queries), sum(map(len, dev.qrels.values()))) == (5, 10)
    assert dev.qrels["100"] == {"0": 3, "2": 1} and dev.qrels["103"]["14"] == 0
    assert dev.queries["103"] == "联通5g套餐99元多少流量"
    assert retrieval.qrels == {"100": {"0": 1}, "101": {"9": 1}, "102": {"11": 1},
                               "103": {"13": 1}, "104": {"3": 1, "4": 1}}
    assert retrieval.queries == dev.queries
    assert (len(dataset.split("train").queries), len(dataset.split("retrieval.train").qrels)) \
        == (2, 2)


def test_grade_thresholds_match_the_retrieval_qrels(dataset, dev):
    """T2Ranking's retrieval qrels are its passages graded 2 or 3: a recall over the graded
    qrels with rel=2 equals plain recall over the retrieval qrels."""
    run = build_pipeline("bm25(language=zh)", dataset.corpus).search(dev.queries, k=10)
    graded = evaluate(run, dev.qrels, ["R(rel=2)@1", "R@1"]).aggregate
    binary = evaluate(run, dataset.split("retrieval.dev").qrels, ["R@1"]).aggregate
    assert graded["R(rel=2)@1"] == binary["R@1"] == pytest.approx(0.9)
    assert graded["R@1"] == pytest.approx(0.6)  # grade-1 passages count by default


def test_files_without_headers_and_gzipped_load_the_same(tmp_path, dataset):
    folder = tmp_path / "t2"
    folder.mkdir()
    for path in FIXTURE.iterdir():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        if path.name.startswith("queries"):
            lines = lines[1:]  # the GitHub repository's sample files have no header
        with gzip.open(folder / f"{path.name}.gz", "wt", encoding="utf-8") as handle:
            handle.writelines(lines)
    again = load_dataset(folder)
    assert detect_format(folder) == "t2ranking"
    assert [d.doc_id for d in again.corpus] == [d.doc_id for d in dataset.corpus]
    assert again.split("dev").queries == dataset.split("dev").queries


def _broken(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "broken"
    shutil.copytree(FIXTURE, folder)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_bad_files_say_which_file_and_line(tmp_path):
    folder = _broken(tmp_path, "collection.tsv", "pid\ttext\n0\t好\n1 no tab here\n")
    with pytest.raises(DataError, match=r"collection.tsv:3: expected 'pid<TAB>text'"):
        list(load_dataset(folder).corpus)
    folder = _broken(tmp_path / "b", "qrels.retrieval.dev.tsv", "qid\tpid\n100\t0\t9\n")
    with pytest.raises(DataError, match=r"qrels.retrieval.dev.tsv:2: expected 'qid<TAB>pid'"):
        load_dataset(folder).split("retrieval.dev")
    folder = _broken(tmp_path / "c", "qrels.dev.tsv", "qid\t-\tpid\trel\n999\t0\t1\t2\n")
    with pytest.raises(DataError, match="judges 1 queries missing from queries.dev.tsv, e.g. '999'"):
        load_dataset(folder).split("dev")
    (folder / "queries.train.tsv").unlink()
    with pytest.raises(DataError, match="qrels for split 'train' but no queries.train.tsv"):
        load_dataset(folder).split("train")


def test_cli_evaluates_the_fixture_and_reports_bad_files(tmp_path):
    result = run_cli("eval", "-d", FIXTURE, "--split", "dev", "-p", "bm25(language=zh)",
                     "-p", "bm25", "-m", "nDCG@10")
    assert result.code == 0, result.err
    rows = {line.split("|")[3].strip(): line.split("|")[4].strip()
            for line in result.out.splitlines() if "`bm25" in line}
    assert rows == {"`bm25(language=zh)`": "0.9305", "`bm25`": "0.0000"}
    folder = _broken(tmp_path, "queries.dev.tsv", "qid\ttext\n100\n")
    bad = run_cli("data", "info", folder)
    assert bad.code != 0 and bad.traceback is None
    assert bad.error_lines() == [f"error: {folder / 'queries.dev.tsv'}:2: expected"
                                 " 'qid<TAB>text' (tab-separated), got '100'"]


# -- a dense stage with a Chinese vocabulary -----------------------------------------------------

def make_chinese_encoder(path: Path, texts: list[str]) -> Path:
    """A random 2-layer BERT whose WordPiece vocabulary holds every character of ``texts``
    (BERT's tokenizer splits CJK text into characters, as bert-base-chinese's does; Latin words
    become single-letter pieces), saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    chars = sorted({c for t in texts for c in t.lower() if not c.isspace()})
    chars += [f"##{c}" for c in chars if c.isascii()]  # pieces of Latin words after the first
    raw = path / "raw"
    raw.mkdir(parents=True)
    (raw / "vocab.txt").write_text("\n".join(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]) + "\n", encoding="utf-8")
    BertTokenizerFast(str(raw / "vocab.txt")).save_pretrained(raw)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(chars) + 5, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(raw)
    model = SentenceTransformer(modules=[models.Transformer(str(raw), max_seq_length=64),
                                         models.Pooling(32, pooling_mode="mean")], device="cpu")
    model.save(str(path / "model"))
    shutil.rmtree(raw)
    return path / "model"


def test_dense_takes_a_chinese_model_by_path(dataset, dev, tmp_path):
    docs = list(dataset.corpus)
    model = make_chinese_encoder(tmp_path, [d.text for d in docs] + list(dev.queries.values()))
    from transformers import AutoTokenizer

    dense = build_pipeline(f"dense(model={model})", dataset.corpus)
    tokenizer = AutoTokenizer.from_pretrained(model)  # what the encoder loaded
    ids = tokenizer([d.text for d in docs])["input_ids"]
    assert tokenizer.unk_token_id not in {i for row in ids for i in row}
    # A random model still tells every passage apart: each passage's own text finds it first.
    run = dense.search({d.doc_id: d.text for d in docs}, k=1)
    assert {q: list(hits) for q, hits in run.items()} == {d.doc_id: [d.doc_id] for d in docs}


def test_an_index_from_before_language_reopens_as_english(tmp_path):
    from tests.conftest import QUERIES, write_beir

    corpus = load_dataset(write_beir(tmp_path / "tiny")).corpus
    out = save_index("bm25", corpus, tmp_path / "idx")
    meta_file = out / "0-bm25" / "meta.json"
    meta = json.loads(meta_file.read_text())
    for key in ("params", "settings"):  # as Cormorant wrote them before the parameter
        meta[key] = {k: v for k, v in meta[key].items() if k not in ("language", "segmenter")}
    meta_file.write_text(json.dumps(meta))
    reopened = open_index(out)
    assert str(reopened.pipeline) == "bm25"
    assert_same_run(reopened.pipeline.search(QUERIES, k=3),
                    build_pipeline("bm25", corpus).search(QUERIES, k=3))
