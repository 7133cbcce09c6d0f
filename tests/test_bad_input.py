"""Every broken dataset, index directory, config and output path that an outside test found
(issue 31) ends in one ``error:`` line and a non-zero exit: never a traceback, never a
half-written output. Each case is the input that was observed."""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli_support import assert_one_error_line, run_cli
from tests.conftest import write_beir


def _corpus_bytes(folder: Path) -> bytes:
    return (folder / "corpus.jsonl").read_bytes()


def _replace_corpus(folder: Path, data: bytes, name: str = "corpus.jsonl") -> None:
    (folder / "corpus.jsonl").unlink()
    (folder / name).write_bytes(data)


# name -> (how to break a fresh tiny BEIR folder, what the error line says)
BROKEN_DATASETS: dict[str, tuple[Callable[[Path], None], str]] = {
    "binary corpus": (lambda d: _replace_corpus(d, bytes(range(256)) * 4), "not UTF-8 text"),
    "utf-16 corpus": (lambda d: _replace_corpus(d, _corpus_bytes(d).decode().encode("utf-16")),
                      "it looks like UTF-16"),
    "latin-1 corpus": (lambda d: _replace_corpus(d, '{"_id": "d1", "text": "caf\xe9"}\n'
                                                 .encode("latin-1")), "not UTF-8 text"),
    "utf-16 queries": (lambda d: (d / "queries.jsonl").write_bytes(
        (d / "queries.jsonl").read_text().encode("utf-16")), "queries.jsonl: not UTF-8"),
    "binary qrels": (lambda d: (d / "qrels" / "test.tsv").write_bytes(b"\xff\xfe\x00abc\n"),
                     "test.tsv: not UTF-8"),
    "corpus.jsonl.gz not gzip": (lambda d: _replace_corpus(d, b"not gzip", "corpus.jsonl.gz"),
                                 "not a readable gzip file"),
    "truncated corpus.jsonl.gz": (lambda d: _replace_corpus(
        d, gzip.compress(_corpus_bytes(d))[:-30], "corpus.jsonl.gz"), "not a readable gzip"),
    "qrels relevance inf": (lambda d: (d / "qrels" / "test.tsv").write_text("q1\td1\tinf\n"),
                            "relevance 'inf' is not a finite number"),
    "empty corpus": (lambda d: (d / "corpus.jsonl").write_text(""), "holds no documents"),
}


@pytest.fixture(params=sorted(BROKEN_DATASETS))
def broken_dataset(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    folder = write_beir(tmp_path / "broken")
    breaker, message = BROKEN_DATASETS[request.param]
    breaker(folder)
    return folder, message


def test_a_broken_dataset_is_one_error_line_for_every_command(broken_dataset, tmp_path,
                                                              isolated_cache) -> None:
    folder, message = broken_dataset
    commands = [["eval", "-d", folder, "--json", tmp_path / "eval.json"]]
    if not any(part in message for part in ("queries", "test.tsv", "relevance")):
        commands.append(["index", "build", "-d", folder, "-o", tmp_path / "idx"])  # corpus only
    if message != "holds no documents":  # an empty corpus is a finding of `data info`
        commands.append(["data", "info", folder])
    for args in commands:
        result = run_cli(*args)
        assert_one_error_line(result, message)
    assert not (tmp_path / "idx").exists() and not (tmp_path / "eval.json").exists()


def test_empty_corpus_is_a_finding_of_data_info(tmp_path) -> None:
    folder = write_beir(tmp_path / "empty")
    (folder / "corpus.jsonl").write_text("")
    result = run_cli("data", "info", folder)
    assert result.traceback is None and result.code == 1
    assert "0 documents" in result.out


@pytest.mark.parametrize("content, message", [
    (b"\x00\xff\xfe binary", "is not UTF-8 text"),
    (b"a: [1\n", "not valid YAML/JSON: line 2"),
])
def test_a_broken_config_or_experiment_file_is_one_line(tmp_path, content, message) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    assert_one_error_line(run_cli("eval", "--experiment", bad), message.split(":")[0])
    result = run_cli("train", "--config", bad, "-d", tmp_path, "--out", tmp_path / "m")
    assert_one_error_line(result, "config")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bad-input")
    dataset = write_beir(root / "tiny")
    assert run_cli("index", "build", "-d", dataset, "-o", root / "idx").code == 0
    return dataset, root / "idx"


def _edit_meta(index: Path, edit: Callable[[dict], None]) -> None:
    meta = json.loads((index / "meta.json").read_text())
    edit(meta)
    (index / "meta.json").write_text(json.dumps(meta))


def _recompute_checksums(index: Path) -> None:
    from cormorant.index.format import sha256_file

    _edit_meta(index, lambda m: m["checksums"].update(
        {name: sha256_file(index / name) for name in m["checksums"]}))


def _damage_docs(index: Path) -> None:
    data = bytearray((index / "docs.sqlite").read_bytes())
    data[100:4096] = b"\xaa" * (4096 - 100)  # the header's tail and the schema page
    (index / "docs.sqlite").write_bytes(bytes(data))
    _recompute_checksums(index)


def _bad_fields(index: Path) -> None:
    with sqlite3.connect(index / "docs.sqlite") as db:
        db.execute("UPDATE docs SET fields = 'not json', title = NULL")
    _recompute_checksums(index)


INDEX_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "leaves missing": (lambda i: _edit_meta(i, lambda m: m.pop("leaves")), "'leaves' must be"),
    "leaves a string": (lambda i: _edit_meta(i, lambda m: m.update(leaves="bm25")), "'leaves'"),
    "leaf dir missing": (lambda i: _edit_meta(i, lambda m: m["leaves"][0].pop("dir")),
                         "leaves[0].dir must be a str"),
    "leaf dir escapes": (lambda i: _edit_meta(i, lambda m: m["leaves"][0].update(dir="..")),
                         "is not a folder of this index"),
    "leaf kind a number": (lambda i: _edit_meta(i, lambda m: m["leaves"][0].update(kind=3)),
                           "leaves[0].kind must be a str"),
    "pipeline a list": (lambda i: _edit_meta(i, lambda m: m.update(pipeline=["bm25"])),
                        "'pipeline' must be"),
    "count a string": (lambda i: _edit_meta(i, lambda m: m.update(count="6")), "'count'"),
    "leaf params a string": (lambda i: _edit_meta(i / "0-bm25", lambda m: m.update(params="x")),
                             "does not hold what a bm25 stage stores"),
    "docs.sqlite damaged, checksums recomputed": (_damage_docs, "docs.sqlite is damaged"),
    "docs.sqlite rows malformed": (_bad_fields, "is malformed"),
}


@pytest.mark.parametrize("damage", sorted(INDEX_DAMAGE))
def test_a_hand_edited_or_damaged_index_is_one_error_line(built, tmp_path, damage) -> None:
    import shutil

    dataset, source = built
    index = tmp_path / "idx"
    shutil.copytree(source, index)
    breaker, message = INDEX_DAMAGE[damage]
    breaker(index)
    assert_one_error_line(run_cli("search", "--index", index, "vitamin"), message)
    if "rows" not in damage:  # eval reads no document text
        assert_one_error_line(run_cli("eval", "-d", dataset, "--index", index), message)


@pytest.mark.parametrize("pipeline, message", [
    ("(" * 10_000 + "bm25" + ")" * 10_000, "nested deeper than 64 levels"),
    ("rrf(" * 3000, "nested deeper than 64 levels"),
    ("bm25(k1=" + "9" * 120_000 + ")", "bm25: k1 must be a number"),
    ("dense(max_length=-1)", "max_length must be at least 1"),
    ("dense(batch_size=-3)", "batch_size must be at least 1"),
    ("bm25(k1=abc)", "k1 must be a number"),
    ("1e999 * bm25", "the weight 1e999 is not a finite number"),
    ("inf * bm25", "cannot parse pipeline"),
])
def test_bad_pipelines_at_build_time_are_one_line_with_a_short_caret(built, tmp_path, pipeline,
                                                                     message) -> None:
    dataset, _ = built
    result = run_cli("index", "build", "-d", dataset, "-p", pipeline, "-o", tmp_path / "idx")
    assert_one_error_line(result, message)
    assert all(len(line) < 300 for line in result.err.splitlines())
    if "^" in result.err:  # the caret points at the column where parsing stopped
        line, caret = result.err.splitlines()
        assert caret.index("^") <= len(line)
    assert not (tmp_path / "idx").exists()


def test_the_caret_points_at_the_fault(built, tmp_path) -> None:
    dataset, _ = built
    result = run_cli("index", "build", "-d", dataset, "-p", "bm25 >> ) dense", "-o", tmp_path / "i")
    line, caret = result.err.splitlines()
    assert line[caret.index("^")] == ")"
