"""Distributed encoding for builds: Ray Data over an actor pool gives the vectors in-process
encoding gives, through the embedding cache, and a sharded build on Ray equals one without."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from cormorant import cache
from cormorant.data import load_dataset
from cormorant.errors import IndexFormatError
from cormorant.index.embeddings import KIND, corpus_embeddings, embeddings_name
from cormorant.retrieval.assemble import open_index
from cormorant.retrieval.dense import DenseRetriever, corpus_encoder
from cormorant.retrieval.distributed import (
    InProcess,
    RayCluster,
    prefill_embeddings,
    runner_for,
)
from cormorant.retrieval.shard_index import save_sharded_index
from cormorant.types import Corpus, Document

from .cli_support import run_cli
from .conftest import assert_same_run

WORDS = "heron pelican fish river statin vitamin sleep depression coral reef gene cell".split()


def corpus_of(count: int) -> Corpus:
    rng = np.random.default_rng(3)
    return Corpus.from_documents(
        [Document(f"d{i}", " ".join(rng.choice(WORDS, size=int(rng.integers(2, 30)))))
         for i in range(count)], name="ray")


def test_importing_cormorant_and_its_build_code_loads_no_ray():
    code = ("import sys, cormorant, cormorant.cli, cormorant.retrieval.distributed,"
            " cormorant.retrieval.shard_index; assert 'ray' not in sys.modules, 'ray'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_threads_encode_as_this_process_does(tiny_encoder, isolated_cache):
    corpus = corpus_of(120)
    settings = DenseRetriever.declared({"model": str(tiny_encoder)})
    reference = np.array(corpus_embeddings(corpus_encoder(settings), corpus, use_cache=False))
    [entry] = prefill_embeddings(f"dense(model={tiny_encoder})", corpus, InProcess(2),
                                 batch_size=16)
    assert entry == cache.entry(KIND, embeddings_name(corpus_encoder(settings).settings, corpus))
    np.testing.assert_allclose(np.load(entry), reference, atol=1e-5)


def test_a_windowed_stage_is_prefilled_with_its_windows(tiny_encoder, isolated_cache):
    """passages=: the distributed encoding fills the entry the windowed build reads, so the
    build encodes nothing again."""
    corpus = corpus_of(40)
    text = f"dense(model={tiny_encoder}, passages=8/4)"
    [entry] = prefill_embeddings(text, corpus, InProcess(2), batch_size=16)
    assert prefill_embeddings(text, corpus, InProcess(2)) == []  # the build's entry is full
    before = sorted(e.path for e in cache.entries())
    stage = DenseRetriever.create(corpus, DenseRetriever.declared(
        {"model": str(tiny_encoder), "passages": "8/4"}))
    assert sorted(e.path for e in cache.entries()) == before  # read the windows, wrote nothing
    assert np.load(entry).shape[0] == len(stage.segments.items[0].doc_ids) > len(corpus)


def test_cli_builds_on_a_ray_actor_pool_as_in_process(ray_local, tiny_encoder, tmp_path,
                                                      beir_dir, isolated_cache):
    text = f"rrf(bm25, dense(model={tiny_encoder}))"
    corpus = load_dataset(beir_dir).corpus
    settings = DenseRetriever.declared({"model": str(tiny_encoder)})
    reference = np.array(corpus_embeddings(corpus_encoder(settings), corpus, use_cache=False))
    out = tmp_path / "idx"
    built = run_cli("index", "build", "-d", beir_dir, "-o", out, "-p", text, "--shards", "2",
                    "--ray", "auto", "--actors", "2")
    assert built.code == 0, built.err
    # The actors' vectors are the cache entry the build read: in-process encoding's, within
    # float noise (batches differ), and a second build encodes nothing.
    [entry] = [e.path for e in cache.entries(KIND)]
    np.testing.assert_allclose(np.load(entry), reference, atol=1e-5)
    assert prefill_embeddings(text, corpus, RayCluster("auto", actors=2)) == []
    local = save_sharded_index(text, corpus, tmp_path / "local", 2)
    queries = {"a": "cormorants fishing", "b": "vitamin d depression", "c": "heart disease"}
    assert_same_run(open_index(out).pipeline.search(queries, k=6),
                    open_index(local).pipeline.search(queries, k=6), tol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--gpus-per-actor", "1"], "--gpus-per-actor needs --ray"),
    (["--actors", "0"], "at least 1"),
])
def test_bad_distribution_options_are_clear_errors(tmp_path, beir_dir, args, message):
    result = run_cli("index", "build", "-d", beir_dir, "-o", tmp_path / "x", *args)
    assert result.code != 0 and result.traceback is None
    assert any(message in line for line in result.error_lines()), result.err


def test_runner_for_picks_threads_without_ray():
    assert isinstance(runner_for(None, 2), InProcess)
    assert InProcess(3).map(lambda x: x * 2, [1, 2, 3]) == [2, 4, 6]


def shard_checksums(path) -> list[dict[str, str]]:  # noqa: ANN001
    """Every file's SHA-256 in each shard, its stages' folders included (the shard's own
    meta.json names the random uid, so it is left out)."""
    from cormorant.index.format import read_meta

    found = []
    for part in read_meta(path)["parts"]:
        folder = path / part["dir"]
        meta = read_meta(folder)
        sums = {name: value for name, value in meta["checksums"].items()}
        for record in meta["leaves"]:
            sums.update({f"{record['dir']}/{k}": v
                         for k, v in read_meta(folder / record["dir"])["checksums"].items()})
        found.append(sums)
    return found


class PickledInProcess(InProcess):
    """A remote runner's shard tasks, run here: each item goes through cloudpickle as Ray
    ships it (the corpus with its source, a shared trained FAISS template as its bytes)."""

    remote = True

    def tasks(self, fn, items):  # noqa: ANN001, ANN201
        cloudpickle = pytest.importorskip("ray.cloudpickle")
        return super().tasks(fn, [cloudpickle.loads(cloudpickle.dumps(i)) for i in items])


def test_shard_tasks_write_the_in_process_shards_byte_for_byte(tiny_encoder, tmp_path,
                                                              isolated_cache):
    model = f"model={tiny_encoder}"
    text = f"rrf(bm25, dense({model}), dense({model}, index=ivf), chamfer({model}))"
    corpus = corpus_of(50)
    local = save_sharded_index(text, corpus, tmp_path / "local", 3)
    shipped = save_sharded_index(text, corpus, tmp_path / "shipped", 3,
                                 runner=PickledInProcess(2))
    assert shard_checksums(shipped) == shard_checksums(local)
    assert len(shard_checksums(local)[0]) > 8  # docs, meta and every stage's files compared
    assert sorted(p.name for p in shipped.iterdir()) == ["meta.json", "shard-000", "shard-001",
                                                           "shard-002"]  # nothing staged left


def test_shards_are_built_as_ray_tasks(ray_local, tiny_encoder, tmp_path, isolated_cache):
    text = f"rrf(bm25, dense(model={tiny_encoder}))"
    corpus = corpus_of(50)
    local = save_sharded_index(text, corpus, tmp_path / "local", 2)
    cluster = RayCluster("auto")
    on_ray = save_sharded_index(text, corpus, tmp_path / "ray", 2, runner=cluster)
    assert shard_checksums(on_ray) == shard_checksums(local)
    # Tasks run in Ray's worker processes, not in this one; a task's error is a clear one.
    assert os.getpid() not in cluster.tasks(lambda _: os.getpid(), [0, 1])
    with pytest.raises(IndexFormatError, match="would hold no document"):
        save_sharded_index(text, corpus_of(2), tmp_path / "too-many", 8, runner=cluster)


@pytest.mark.parametrize("stage", ["chamfer", "muvera", "chamfer(passages=8/4)"])
def test_token_stores_are_encoded_by_the_runner_as_in_process(tiny_encoder, tmp_path,
                                                              isolated_cache, stage):
    """chamfer/muvera token vectors through the runner's encoding path (threads here, the
    actor pool on Ray: the same EncodeTokens) fill the cache entry the build reads."""
    from cormorant.index.token_store import TokenStore
    from cormorant.retrieval.chamfer import ChamferRetriever, cached_token_store, token_encoder

    name, _, extra = stage.partition("(")
    text = f"{name}(model={tiny_encoder}{', ' + extra[:-1] if extra else ''})"
    corpus = corpus_of(40)
    [entry] = prefill_embeddings(text, corpus, InProcess(2), batch_size=16)
    assert prefill_embeddings(text, corpus, InProcess(2)) == []  # cached now
    if not extra:  # the store equals one encoded here, document by document
        encoder = token_encoder(ChamferRetriever.declared({"model": str(tiny_encoder)}))
        with pytest.MonkeyPatch.context() as env:
            env.setenv("CORMORANT_CACHE", str(tmp_path / "elsewhere"))
            here = TokenStore(cached_token_store(encoder, corpus))
        got = TokenStore(entry)
        assert len(got) == len(here) == 40
        np.testing.assert_array_equal(got.offsets, here.offsets)
        np.testing.assert_allclose(np.asarray(got.tokens, np.float32),
                                   np.asarray(here.tokens, np.float32), atol=2e-3)
    before = sorted(e.path for e in cache.entries())
    built = save_sharded_index(text, corpus, tmp_path / "idx", 2)
    assert sorted(e.path for e in cache.entries()) == before  # the build encoded nothing
    assert open_index(built).pipeline.search({"a": "heron fish"}, k=3)["a"]


def test_ray_actors_encode_token_vectors(ray_local, tiny_encoder, tmp_path, isolated_cache):
    from cormorant.index.token_store import TokenStore

    text = f"rrf(bm25, chamfer(model={tiny_encoder}))"
    corpus = corpus_of(50)
    [entry] = prefill_embeddings(text, corpus, RayCluster("auto", actors=2), batch_size=16)
    with pytest.MonkeyPatch.context() as env:  # an ordinary build, encoding here
        env.setenv("CORMORANT_CACHE", str(tmp_path / "elsewhere"))
        local = save_sharded_index(text, corpus, tmp_path / "local", 2)
        [here] = [e.path for e in cache.entries("tokens")]
    got, want = TokenStore(entry), TokenStore(here)
    np.testing.assert_array_equal(got.offsets, want.offsets)
    np.testing.assert_allclose(np.asarray(got.tokens, np.float32),
                               np.asarray(want.tokens, np.float32), atol=2e-3)
    on_ray = save_sharded_index(text, corpus, tmp_path / "ray", 2)  # reads the actors' store
    queries = {"a": "heron fish river", "b": "vitamin sleep", "c": "coral reef gene"}
    assert_same_run(open_index(on_ray).pipeline.search(queries, k=6),
                    open_index(local).pipeline.search(queries, k=6), tol=1e-2)
