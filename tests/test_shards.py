"""Sharded indexes give the single index's answer: exact stages the same ids and scores, fusion
and re-ranking run once on merged lists, writes routed to the shard that owns each id."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cormorant.errors import CormorantError, IndexFormatError, PipelineError
from cormorant.index.inverted import CollectionStats
from cormorant.index.sharding import shard_dir, shard_of
from cormorant.retrieval.assemble import open_index, save_index
from cormorant.retrieval.shard_index import save_sharded_index
from cormorant.types import Corpus, Document

from .cli_support import run_cli
from .conftest import assert_same_run

WORDS = ("heron pelican cormorant fish river statin vitamin sleep depression heart storm"
         " salmon coral reef lake winter summer gene protein cell virus").split()
QUERIES = {"a": "heron fish river", "b": "vitamin depression sleep", "c": "coral reef salmon",
           "d": "gene protein virus cell", "e": "winter storm lake heron"}


def corpus_of(count: int, seed: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    docs = [Document(f"d{i}", " ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))))
            for i in range(count)]
    return Corpus.from_documents(docs, name="shards")


@pytest.fixture(scope="module")
def leaves(tiny_encoder) -> list[str]:
    model = f"model={tiny_encoder}"
    return ["bm25", "bm25(method=bm25+)", f"dense({model})", f"chamfer({model})",
            f"dense({model}, passages=8/4)"]  # windows: all of a document's in its shard


@pytest.fixture(scope="module")
def indexes(tmp_path_factory, leaves) -> dict[int, Path]:
    """One single index (key 0) and sharded ones of 1, 2, 3 shards over 60 documents."""
    text = f"rrf({', '.join(leaves)})"
    corpus = corpus_of(60)
    root = tmp_path_factory.mktemp("shards")
    built = {0: save_index(text, corpus, root / "single")}
    for shards in (1, 2, 3):
        built[shards] = save_sharded_index(text, corpus, root / f"s{shards}", shards)
    return built


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_exact_stages_and_fusion_equal_the_single_index(indexes, leaves, tiny_encoder, shards):
    single, sharded = open_index(indexes[0]), open_index(indexes[shards])
    model = f"model={tiny_encoder}"
    pipelines = [*leaves, f"rrf({', '.join(leaves)})", f"bm25 % 10 >> dense({model})",
                 f"dense({model}) % 10 >> bm25", f"rocchio(dense({model}))",
                 f"bm25 + dense({model})"]
    for text in pipelines:
        expected = single.open_pipeline(text).search(QUERIES, k=10)
        got = sharded.open_pipeline(text).search(QUERIES, k=10)
        assert any(expected.values()), text
        assert_same_run(got, expected, tol=1e-5)
    # Each shard holds the documents its id hashes to, and only those.
    for number, shard in enumerate(sharded.shards):
        ids = list(shard.live.documents())
        assert ids and all(shard_of(d.doc_id, shards) == number for d in ids)
    assert sharded.live.count == single.live.count == 60


def test_bm25_shards_score_with_the_collection_statistics(indexes):
    sharded = open_index(indexes[3])
    bm25 = sharded.open_pipeline("bm25")
    parts = bm25.stage.parts  # the router's parts, one per shard
    own = [p.statistics({"q": "heron"}) for p in parts]
    total = own[0] + own[1] + own[2]
    assert total == open_index(indexes[0]).open_pipeline("bm25").stage.statistics({"q": "heron"})
    assert total.documents == 60 and len({s.documents for s in own}) > 1
    # A shard alone scores with its own statistics, which differ from the collection's.
    alone = parts[0].search("heron", k=3)
    shared = parts[0].with_statistics(total).search("heron", k=3)
    assert list(alone["0"]) == list(shared["0"])
    assert alone["0"] != shared["0"]
    assert CollectionStats(1, 2, {"x": 1}) + CollectionStats(0, 0, {}) == \
        CollectionStats(1, 2, {"x": 1})


def test_manifest_records_what_the_shards_share(indexes, tiny_encoder):
    meta = json.loads((indexes[2] / "meta.json").read_text())
    assert meta["kind"] == "sharded" and meta["shards"] == 2 and meta["count"] == 60
    assert [p["dir"] for p in meta["parts"]] == [shard_dir(0), shard_dir(1)]
    assert sum(p["count"] for p in meta["parts"]) == 60
    dense = next(r for r in meta["shared"] if r["name"] == "dense")
    assert dense["fingerprint"] and dense["params"]["model"] == str(tiny_encoder)
    # Each shard is an ordinary index, openable on its own.
    alone = open_index(indexes[2] / shard_dir(1))
    assert alone.live.count == meta["parts"][1]["count"]


def test_writes_go_to_the_owning_shard_and_match_the_single_index(tmp_path, leaves):
    text = f"rrf({', '.join(leaves)})"
    corpus = corpus_of(30, seed=1)
    single = save_index(text, corpus, tmp_path / "single")
    sharded = save_sharded_index(text, corpus, tmp_path / "sharded", 3)
    added = [Document(f"new{i}", f"heron river winter {WORDS[i]}") for i in range(6)]
    added.append(Document("d3", "coral reef salmon salmon"))  # replaces a built document
    for path in (single, sharded):
        with open_index(path, write=True) as handle:
            handle.live.add(added)
            result = handle.live.delete(["d5", "d7", "missing"])
            assert result.changed == ["d5", "d7"] or sorted(result.changed) == ["d5", "d7"]
            assert result.not_found == ["missing"]
    with open_index(sharded) as handle:
        for doc in added:
            owner = shard_of(doc.doc_id, 3)
            assert handle.shards[owner].live.get(doc.doc_id).text == doc.text
            assert all(handle.shards[n].live.get(doc.doc_id) is None
                       for n in range(3) if n != owner)
        expected = open_index(single).pipeline.search(QUERIES, k=10)
        assert_same_run(handle.pipeline.search(QUERIES, k=10), expected, tol=1e-5)
        assert handle.live.count == 30 + 6 - 2
    with open_index(sharded, write=True) as handle:
        handle.live.merge()
        with pytest.raises(IndexFormatError, match="share"):
            handle.live.merge(retrain=True)
    assert_same_run(open_index(sharded).pipeline.search(QUERIES, k=10), expected, tol=1e-5)


def test_ivf_codebooks_are_trained_once_and_shared(tmp_path, tiny_encoder):
    corpus = corpus_of(80, seed=2)
    path = save_sharded_index(f"dense(model={tiny_encoder}, index=ivf)", corpus,
                              tmp_path / "ivf", 2)
    handle = open_index(path)
    centroids = []
    for part in handle.pipeline.stage.parts:
        index = part.segments.items[0].data.index
        import faiss

        quantizer = faiss.extract_index_ivf(index._index).quantizer  # noqa: SLF001
        centroids.append(quantizer.reconstruct_n(0, quantizer.ntotal))
    assert centroids[0].shape == centroids[1].shape
    np.testing.assert_array_equal(centroids[0], centroids[1])


def test_damaged_or_mismatched_shards_are_refused(indexes, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(indexes[2], copy)
    (copy / shard_dir(1) / "docs.sqlite").write_bytes(b"not a database")
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        open_index(copy)
    shutil.rmtree(copy / shard_dir(1))
    shutil.copytree(indexes[3] / shard_dir(1), copy / shard_dir(1))
    with pytest.raises(IndexFormatError, match="not shard 1 of this sharded index"):
        open_index(copy)
    manifest = json.loads((copy / "meta.json").read_text())
    manifest["shards"] = 5
    (copy / "meta.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="parts"):
        open_index(copy, verify=False)


def test_bad_shard_requests_are_clear_errors(tmp_path, beir_dir):
    with pytest.raises(IndexFormatError, match="would hold no document"):
        save_sharded_index("bm25", corpus_of(2), tmp_path / "x", 8)
    with pytest.raises(IndexFormatError, match="from 1 to"):
        save_sharded_index("bm25", corpus_of(2), tmp_path / "y", 0)
    result = run_cli("index", "build", "-d", beir_dir, "-o", tmp_path / "z", "--shards", "0")
    assert result.code != 0 and result.traceback is None and result.error_lines()
    assert not (tmp_path / "z").exists()


def test_sharding_a_stage_without_segments_is_refused(tmp_path, monkeypatch):
    from cormorant.retrieval import shard_index

    monkeypatch.setattr(shard_index, "SegmentedRetriever", type("Nothing", (), {}))
    with pytest.raises(PipelineError, match="cannot be sharded"):
        save_sharded_index("bm25", corpus_of(5), tmp_path / "x", 2)


def test_cli_builds_searches_and_evaluates_a_sharded_index(tmp_path, beir_dir):
    out = tmp_path / "idx"
    built = run_cli("index", "build", "-d", beir_dir, "-o", out, "--shards", "2")
    assert built.code == 0, built.err
    single = tmp_path / "single"
    assert run_cli("index", "build", "-d", beir_dir, "-o", single).code == 0
    got = run_cli("search", "-i", out, "--json", "cormorants fishing")
    want = run_cli("search", "-i", single, "--json", "cormorants fishing")
    assert got.code == 0 and json.loads(got.out) == json.loads(want.out)
    assert json.loads(got.out)[0]["hits"][0]["doc_id"] in {"d2", "d5"}
    evaluated = run_cli("eval", "-d", beir_dir, "--index", out, "-m", "nDCG@10")
    reference = run_cli("eval", "-d", beir_dir, "--index", single, "-m", "nDCG@10")
    assert evaluated.code == 0, evaluated.err
    assert _ndcg(evaluated.out) == _ndcg(reference.out) > 0


def _ndcg(table: str) -> float:
    """The nDCG@10 cell of eval's one-row markdown table."""
    return float(table.strip().splitlines()[-1].split("|")[4])


@contextlib.contextmanager
def counting_query_encodings() -> Iterator[list[list[str]]]:
    """Every batch the token encoders are asked to encode as queries, while in the block."""
    from cormorant.retrieval.multivector import TokenEncoder

    calls: list[list[str]] = []
    original = TokenEncoder.encode_queries

    def counted(self, texts):  # noqa: ANN001, ANN202
        calls.append(list(texts))
        return original(self, texts)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TokenEncoder, "encode_queries", counted)
        yield calls


@pytest.mark.parametrize("shape", ["{c}", "bm25 % 10 >> {c}"])
def test_chamfer_shards_encode_a_search_s_queries_once(indexes, tiny_encoder, shape):
    text = shape.format(c=f"chamfer(model={tiny_encoder})")
    pipe = open_index(indexes[3]).open_pipeline(text)
    for _ in range(2):  # the next search of the same queries encodes them anew: not kept
        with counting_query_encodings() as calls:
            got = pipe.search(QUERIES, k=10)
        assert calls == [list(QUERIES.values())]
    with counting_query_encodings() as calls:
        want = open_index(indexes[0]).open_pipeline(text).search(QUERIES, k=10)
    assert len(calls) == 1
    assert_same_run(got, want, tol=0.0)  # the shared matrices are the ones encoding gives


def test_locked_chamfer_shards_share_their_query_encoding(indexes, tiny_encoder):
    """Served in process, each shard's stage sits behind its own lock (LockedStage): the
    shards still encode a search's queries once between them."""
    from cormorant.service.served import LockedStage

    handle = open_index(indexes[3], wrap=lambda position, leaf: LockedStage(leaf))
    pipe = handle.open_pipeline(f"chamfer(model={tiny_encoder})")
    assert all(isinstance(p, LockedStage) for p in pipe.stage.parts)
    with counting_query_encodings() as calls:
        pipe.search(QUERIES, k=10)
    assert len(calls) == 1


def test_a_write_on_a_read_only_sharded_index_says_why(indexes):
    handle = open_index(indexes[2])
    with pytest.raises(CormorantError, match="opened for reading"):
        handle.live.add([Document("x", "heron")])


def test_muvera_shards_rerank_a_superset_of_the_single_index_candidates(tmp_path,
                                                                         tiny_encoder):
    text = f"muvera(model={tiny_encoder})"
    corpus = corpus_of(60, seed=4)
    single = open_index(save_index(text, corpus, tmp_path / "single"))
    sharded = open_index(save_sharded_index(text, corpus, tmp_path / "sharded", 3))
    # Candidates cover the collection: the exact Chamfer ranking either way.
    assert_same_run(sharded.pipeline.search(QUERIES, k=10),
                    single.pipeline.search(QUERIES, k=10), tol=1e-5)
    # Few candidates: each shard takes its own FDE top 4, a superset of the single index's
    # top 4, so the re-ranked top 4 scores at least as high, rank by rank.
    few = f"muvera(model={tiny_encoder}, candidates=4)"
    with counting_query_encodings() as calls:
        got = sharded.open_pipeline(few).search(QUERIES, k=4)
    assert calls == [list(QUERIES.values())]  # once, not once per shard
    want = single.open_pipeline(few).search(QUERIES, k=4)
    for qid in QUERIES:
        assert len(got[qid]) == len(want[qid]) == 4
        for mine, theirs in zip(got[qid].values(), want[qid].values(), strict=True):
            assert mine >= theirs - 1e-5
