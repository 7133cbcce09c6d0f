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


def test_bm25_does_not_start_jax(beir_dir, tmp_path):
    """bm25s runs a JAX top-k at import when JAX is installed; on a GPU machine that takes 75%
    of the GPU's memory and torch in the same process runs out (seen on an H200). A stand-in
    ``jax`` that fails loudly on import shows that building and searching never imports it."""
    import json
    import os
    import subprocess
    import sys

    fake = tmp_path / "site" / "jax"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise SystemExit('jax was imported')\n")
    script = (
        "import json, sys\n"
        "from cormorant.data import load_dataset\n"
        "from cormorant.retrieval.bm25 import BM25Retriever\n"
        f"corpus = load_dataset({str(beir_dir)!r}).corpus\n"
        "run = BM25Retriever.build(corpus).search({'q': 'vitamin d depression'}, k=2)\n"
        "import bm25s.selection\n"
        "print(json.dumps([list(run['q']), 'jax' in sys.modules, bm25s.selection.JAX_IS_AVAILABLE]))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *sys.path])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found, jax_loaded, jax_used = json.loads(done.stdout.strip().splitlines()[-1])
    assert found[0] == "d1" and not jax_loaded and not jax_used


def test_threads_searching_first_all_get_bm25s_whole():
    """Old: the first searches of a sharded bm25 index in the service, from 8 threads, failed
    with "partially initialized module 'bm25s' has no attribute 'tokenize'": a thread took
    bm25s from sys.modules while another was still importing it. In a fresh process."""
    import subprocess
    import sys

    code = """
import threading, time
from cormorant.retrieval.analysis import import_bm25s
errors, threads = [], []
def first_search(delay):
    time.sleep(delay)  # arriving while another thread is importing
    try:
        import_bm25s().tokenize
    except AttributeError as exc:
        errors.append(exc)
threads = [threading.Thread(target=first_search, args=(0.01 * i,)) for i in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
assert not errors, errors[0]
"""
    subprocess.run([sys.executable, "-c", code], check=True)
