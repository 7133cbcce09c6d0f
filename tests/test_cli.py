"""The command line as a user meets it: real processes, exit codes and messages."""

import json
import subprocess
import sys

import pytest

from cormorant.data.trec import read_trec_run


def cormorant(*args, cache=None):
    env = None
    if cache is not None:
        import os

        env = {**os.environ, "CORMORANT_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "cormorant.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def assert_clean_error(result, message):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines and message in lines[0], result.stderr


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory):
    from tests.conftest import write_beir

    root = tmp_path_factory.mktemp("cli")
    dataset = write_beir(root / "tiny")
    result = cormorant("index", "build", "--dataset", dataset, "--pipeline", "bm25",
                       "--out", root / "idx")
    assert result.returncode == 0, result.stderr
    return dataset, root / "idx"


def test_build_search_and_eval(bm25_index, tmp_path):
    dataset, index = bm25_index
    found = cormorant("search", "--index", index, "-k", "2", "--json", "cholesterol drugs")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)[0]["hits"]
    assert hits[0]["doc_id"] == "d3" and hits[0]["title"] == "Statins"

    out = tmp_path / "out.json"
    result = cormorant("eval", "--dataset", dataset, "--pipeline", "bm25", "--json", out,
                       "--save-run", tmp_path / "run.trec", "--markdown", tmp_path / "t.md")
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert set(report) == {"dataset", "split", "pipeline", "metrics", "per_query", "timing"}
    assert list(report["metrics"]) == ["nDCG@10", "RR@10", "R@100"]
    assert report["metrics"]["RR@10"] == 1.0  # every tiny query finds a relevant doc first
    assert set(report["per_query"]) == {"q1", "q2", "q3"}
    assert "| tiny | test | `bm25` |" in (tmp_path / "t.md").read_text()
    assert set(read_trec_run(tmp_path / "run.trec")) == {"q1", "q2", "q3"}


def test_eval_with_an_index_gives_the_same_numbers(bm25_index, tmp_path):
    dataset, index = bm25_index
    a = cormorant("eval", "-d", dataset, "--index", index, "--json", tmp_path / "a.json")
    b = cormorant("eval", "-d", dataset, "-p", "bm25", "--json", tmp_path / "b.json")
    assert a.returncode == b.returncode == 0
    assert (json.loads((tmp_path / "a.json").read_text())["metrics"]
            == json.loads((tmp_path / "b.json").read_text())["metrics"])


def test_user_errors_are_one_line(bm25_index, tmp_path):
    dataset, index = bm25_index
    assert_clean_error(cormorant("eval", "-d", tmp_path / "nope"), "dataset not found")
    assert_clean_error(cormorant("eval", "-d", dataset, "-p", "bm26"), "unknown stage 'bm26'")
    assert_clean_error(cormorant("eval", "-d", dataset, "-p", "rrf(bm25"), "cannot parse")
    assert_clean_error(cormorant("eval", "-d", dataset, "--split", "dev"), "no split 'dev'")
    assert_clean_error(cormorant("eval", "-d", dataset, "-m", "nDCG@@"), "unknown measure")
    assert_clean_error(cormorant("search", "--index", index, "-k", "0", "x"), "at least 1")
    assert_clean_error(cormorant("search", "--index", index, "  "), "is empty")
    assert_clean_error(cormorant("search", "--index", tmp_path, "x"), "not a cormorant index")


def test_malformed_dataset_file(tmp_path):
    from tests.conftest import write_beir

    dataset = write_beir(tmp_path / "bad")
    with open(dataset / "corpus.jsonl", "a") as handle:
        handle.write('{"_id": "d9", "text": "unterminated\n')
    result = cormorant("index", "build", "-d", dataset, "-o", tmp_path / "idx")
    assert_clean_error(result, "corpus.jsonl:7: not valid JSON")
    assert not (tmp_path / "idx").exists()  # nothing half-written
    assert [p.name for p in tmp_path.iterdir()] == ["bad"]


def test_corrupt_index(bm25_index, tmp_path):
    import shutil

    _, index = bm25_index
    copy = tmp_path / "copy"
    shutil.copytree(index, copy)
    target = copy / "0-bm25" / "postings.npz"
    target.write_bytes(target.read_bytes()[:10])
    assert_clean_error(cormorant("search", "--index", copy, "x"), "corrupt or truncated")


def test_index_built_with_another_encoder(tiny_encoder, other_tiny_encoder, tmp_path):
    from tests.conftest import write_beir

    dataset = write_beir(tmp_path / "tiny")
    built = cormorant("index", "build", "-d", dataset, "-p", f"dense(model={tiny_encoder})",
                      "-o", tmp_path / "idx", cache=tmp_path / "cache")
    assert built.returncode == 0, built.stderr
    result = cormorant("search", "--index", tmp_path / "idx", "-p",
                       f"dense(model={other_tiny_encoder})", "birds", cache=tmp_path / "cache")
    assert_clean_error(result, "was built with dense(model=")


def test_help_explains_commands():
    result = cormorant("--help")
    assert result.returncode == 0
    for command in ("data", "index", "search", "eval"):
        assert command in result.stdout
    assert "rrf(bm25, dense)" in cormorant("eval", "--help").stdout


def test_bright_domain_with_documents_file(tmp_path):
    from tests.test_data import bright_fixture

    domain = bright_fixture(tmp_path / "biology")
    docs = domain / "documents.jsonl"
    result = cormorant("eval", "-d", domain, "--documents", docs, "-p", "bm25",
                       "--json", tmp_path / "out.json", "--save-run", tmp_path / "run.trec")
    assert result.returncode == 0, result.stderr
    run = read_trec_run(tmp_path / "run.trec")
    assert set(run["0"]) == {"a_0", "a_1", "b_0"}  # x_0 matches but is excluded
    long = cormorant("data", "info", domain, "--long-documents")
    assert long.returncode == 0 and "3 documents" in long.stdout


def test_killed_build_leaves_no_index_and_a_rebuild_works(tmp_path):
    """SIGKILL in the middle of `index build`: the index path never holds a partial index."""
    import signal
    import time

    from tests.conftest import REPO

    out = tmp_path / "idx"
    args = [sys.executable, "-m", "cormorant.cli", "index", "build", "-d",
            REPO / "data" / "scifact", "-p", "bm25", "-o", out]
    proc = subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".idx.*.tmp")) and time.time() < deadline:
        time.sleep(0.02)  # wait until the build has started writing
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    rebuilt = cormorant(*args[3:])
    assert rebuilt.returncode == 0, rebuilt.stderr
    found = cormorant("search", "--index", out, "--json", "vitamin d and depression", "-k", "3")
    assert len(json.loads(found.stdout)[0]["hits"]) == 3


@pytest.mark.parametrize("args, message", [
    (["nosuch"], "No such command 'nosuch'"),
    (["train", "--epochs", "abc"], "Invalid value for '--epochs'"),
    (["index", "build", "--bogus"], "No such option"),
])
def test_usage_errors_are_one_message_and_exit_2(args, message):
    result = cormorant(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr
