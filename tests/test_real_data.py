"""Published numbers reproduced on the shared SciFact and NFCorpus test splits (slow).

Each corpus is encoded once; the embedding cache makes every later use (and a re-run of the
suite) cost seconds.
"""

import json
import subprocess
import sys

import pytest

from cormorant.data import load_dataset
from cormorant.eval.harness import run_split
from cormorant.pipeline import RRF
from cormorant.retrieval.bm25 import BM25Retriever
from cormorant.retrieval.dense import DenseRetriever
from tests.conftest import shared_dataset

pytestmark = pytest.mark.slow

# nDCG@10, test split: Pyserini BEIR regressions (BM25 flat) and MTEB (all-MiniLM-L6-v2).
PUBLISHED = {"scifact": {"bm25": 0.679, "dense": 0.645},
             "nfcorpus": {"bm25": 0.322, "dense": 0.316}}
NAMES = ["scifact", "nfcorpus"]


@pytest.fixture(scope="module", params=NAMES)
def dataset(request):
    return load_dataset(shared_dataset(request.param))


_built: dict = {}


def retriever(kind, ds):
    key = (kind, ds.name)
    if key not in _built:
        if kind == "bm25":
            _built[key] = BM25Retriever.build(ds.corpus)
        elif kind == "dense":
            _built[key] = DenseRetriever.build(ds.corpus)
        else:
            from cormorant.retrieval.lucene import LuceneBM25Retriever

            _built[key] = LuceneBM25Retriever.build(ds.corpus)
    return _built[key]


def ndcg10(stage, ds):
    return run_split(stage, ds, "test").metrics["nDCG@10"]


def test_bm25s_within_002_of_pyserini(dataset):
    got = ndcg10(retriever("bm25", dataset), dataset)
    assert got == pytest.approx(PUBLISHED[dataset.name]["bm25"], abs=0.02)


@pytest.mark.java
def test_lucene_within_001_of_pyserini(dataset):
    pytest.importorskip("pyserini")
    got = ndcg10(retriever("bm25.lucene", dataset), dataset)
    assert got == pytest.approx(PUBLISHED[dataset.name]["bm25"], abs=0.01)


def test_dense_minilm_within_001_of_mteb(dataset):
    got = ndcg10(retriever("dense", dataset), dataset)
    assert got == pytest.approx(PUBLISHED[dataset.name]["dense"], abs=0.01)


def test_rrf_beats_both_on_scifact():
    ds = load_dataset(shared_dataset("scifact"))
    bm25, dense = retriever("bm25", ds), retriever("dense", ds)
    fused = ndcg10(RRF([bm25, dense]), ds)
    assert fused > ndcg10(bm25, ds) + 0.01
    assert fused > ndcg10(dense, ds) + 0.01


def test_cli_dense_index_on_nfcorpus(tmp_path):
    path = shared_dataset("nfcorpus")
    retriever("dense", load_dataset(path))  # warms the shared embedding cache
    cli = [sys.executable, "-m", "cormorant.cli"]
    build = subprocess.run([*cli, "index", "build", "--dataset", path, "--pipeline", "dense",
                            "--out", tmp_path / "nfc-dense"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    found = subprocess.run([*cli, "search", "--index", tmp_path / "nfc-dense", "--json",
                            "does vitamin d help with depression", "-k", "10"],
                           capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)[0]["hits"]
    assert len(hits) == 10
    text = " ".join(h["title"] + " " + h["text"] for h in hits[:3]).lower()
    assert "vitamin d" in text and "depress" in text


def test_demo_on_the_bundled_collection(tmp_path):
    from cormorant.demo import bundled_scifact, run_demo

    results = run_demo(bundled_scifact(), tmp_path)
    by_name = {r.pipeline: r.metrics["nDCG@10"] for r in results}
    assert by_name["bm25"] == pytest.approx(0.679, abs=0.02)
    assert by_name["dense"] == pytest.approx(0.645, abs=0.01)
    assert by_name["rrf(bm25, dense)"] > max(by_name["bm25"], by_name["dense"])
    report = (tmp_path / "demo.md").read_text()
    assert "| scifact | test | `rrf(bm25, dense)` |" in report
    assert len(json.loads((tmp_path / "demo.json").read_text())) == 3


@pytest.mark.parametrize("name", NAMES)
def test_interpolation_extrapolation_split_on_real_queries(name, tmp_path):
    from cormorant.eval.splits import make_split, write_split
    from cormorant.retrieval.encoders import SentenceTransformerEncoder

    ds = load_dataset(shared_dataset(name))
    split = make_split(ds, SentenceTransformerEncoder(show_progress=False), buckets=5, seed=0)
    test_ids = set(ds.split("test").queries)
    # Every test query extrapolates in exactly one fold (as in the released ReSTTest splits).
    extrap = [q for fold in split.folds for q in fold.extrapolation]
    assert len(split.folds) == 5 and sorted(extrap) == sorted(test_ids)
    for fold in split.folds:
        assert all(split.bucket_of[q] != fold.bucket for q in fold.train)
        sims = fold.nearest_train_similarity
        assert sims["extrapolation"] < sims["interpolation"]
    out = write_split(split, ds, ds.split("train").qrels, ds.split("test").qrels, tmp_path / name)
    again = load_dataset(out)
    assert set(again.split("extrap-fold0").queries) == set(split.folds[0].extrapolation)
