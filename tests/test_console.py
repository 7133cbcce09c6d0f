"""A quiet, informative command line (issue 28, item 5)."""

import subprocess
import sys

import pytest

from tests.conftest import write_beir


def cormorant(*args, cache=None):
    import os

    env = {**os.environ, "CORMORANT_CACHE": str(cache)} if cache else None
    return subprocess.run([sys.executable, "-m", "cormorant.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600, env=env)


def test_dense_build_is_quiet_and_v_anywhere_shows_labelled_phases(tiny_encoder, tmp_path):
    dataset = write_beir(tmp_path / "tiny")
    pipeline = f"dense(model={tiny_encoder})"
    quiet = cormorant("index", "build", "-d", dataset, "-p", pipeline, "-o", tmp_path / "a",
                      cache=tmp_path / "c1")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""  # no weight-loading bar, no "Batches", no FAISS lookups
    loud = cormorant("index", "build", "-d", dataset, "-p", pipeline, "-o", tmp_path / "b", "-v",
                     cache=tmp_path / "c2")
    assert loud.returncode == 0, loud.stderr
    assert "encoding 6 documents with model" in loud.stderr
    assert "Could not load library with AVX" not in loud.stderr  # expected, reads like an error
    searched = cormorant("search", "-i", tmp_path / "a", "--topics", dataset, "-o",
                         tmp_path / "run.trec", "--verbose")
    assert "searching 3 queries" in searched.stderr


def test_version_and_help():
    from cormorant import __version__

    assert cormorant("--version").stdout.strip() == f"cormorant {__version__}"
    help_text = cormorant("eval", "--help").stdout
    assert "<list[" not in help_text and "<str>" not in help_text
    assert "PATH" in help_text and "INTEGER" in help_text and "[default: 1000]" in help_text
    flat = " ".join(help_text.split())
    for stage in ("chamfer", "muvera", "rerank", "seal", "rrf", "combsum"):
        assert stage in flat
    assert "required" in cormorant("fuse", "--help").stdout


def test_usage_errors_are_the_projects_error_line():
    result = cormorant("eval", "--bogus")
    assert result.returncode == 2
    assert result.stderr.startswith("error: No such option: --bogus") and \
        len(result.stderr.strip().splitlines()) == 1
    assert "did you mean 'bm25'" in cormorant("eval", "-d", ".", "-p", "bm52").stderr
    assert "did you mean 'nDCG@10'" in cormorant("eval", "-d", ".", "-m", "ndcg@10").stderr


@pytest.mark.java
def test_lucene_prints_no_java_info_lines(tmp_path):
    pytest.importorskip("pyserini", reason="needs the [lucene] extra")
    dataset = write_beir(tmp_path / "tiny")
    built = cormorant("index", "build", "-d", dataset, "-p", "bm25.lucene", "-o", tmp_path / "idx")
    assert built.returncode == 0, built.stderr
    assert built.stderr == "" and built.stdout.startswith("indexed 6 documents for bm25.lucene")
