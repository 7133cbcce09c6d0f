"""SEAL: the suffix array against brute force, constrained decoding only writes corpus n-grams,
the paper's weights and intersective scoring, the stage in pipelines and on disk, training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cormorant.retrieval.seal.scoring import (
    ScoringSettings,
    corpus_log_prob,
    ngram_weight,
    score_documents,
)
from cormorant.retrieval.seal.substring import SubstringIndex
from tests.conftest import DOCS, QUERIES, write_beir

corpora = st.lists(st.lists(st.integers(0, 5), max_size=12), min_size=1, max_size=6)


def brute_positions(docs: list[list[int]], ngram: tuple[int, ...]) -> list[tuple[int, int]]:
    n = len(ngram)
    return [(d, i) for d, doc in enumerate(docs) for i in range(len(doc) - n + 1)
            if tuple(doc[i:i + n]) == ngram]


# ------------------------------------------------------------------------- suffix array
@settings(max_examples=60, deadline=None)
@given(docs=corpora, probe=st.lists(st.integers(0, 5), min_size=1, max_size=4))
def test_suffix_array_matches_brute_force(docs, probe):
    index = SubstringIndex.build(docs, vocab_size=6)
    grams = {tuple(doc[i:i + n]) for doc in docs for n in (1, 2, 3)
             for i in range(len(doc) - n + 1)} | {tuple(probe)}
    for gram in grams:
        found = brute_positions(docs, gram)
        assert index.count(gram) == len(found)
        assert index.docs(gram) == sorted({d for d, _ in found})
        follow = sorted({docs[d][i + len(gram)] for d, i in found if i + len(gram) < len(docs[d])})
        assert index.next_tokens(gram) == follow
        opening = sorted({doc[len(gram)] for doc in docs
                          if tuple(doc[:len(gram)]) == gram and len(doc) > len(gram)})
        assert index.next_tokens_at_start(gram).tolist() == opening
    assert index.next_tokens(()) == sorted({t for doc in docs for t in doc})
    assert index.next_tokens_at_start(()).tolist() == sorted({doc[0] for doc in docs if doc})
    assert index.total_tokens == sum(map(len, docs))


def test_ngrams_do_not_cross_documents():
    index = SubstringIndex.build([[1, 2], [3, 4]], vocab_size=5)
    assert index.count((2, 3)) == 0 and index.next_tokens((2,)) == []


def test_suffix_array_save_load_memory_mapped(tmp_path):
    index = SubstringIndex.build([[1, 2, 3], [2, 3, 1]], vocab_size=4)
    meta = index.save(tmp_path)
    loaded = SubstringIndex.load(tmp_path, meta)
    assert isinstance(loaded.suffix_array, np.memmap)
    assert loaded.count((2, 3)) == 2 and loaded.docs((3, 1)) == [1]


# ---------------------------------------------------------------------- sharded build
@settings(max_examples=60, deadline=None)
@given(docs=corpora, shard_tokens=st.integers(1, 20),
       probe=st.lists(st.integers(0, 5), min_size=1, max_size=4))
def test_sharded_index_answers_what_one_index_answers(docs, shard_tokens, probe):
    from cormorant.retrieval.seal.sharded import ShardedIndex

    one = SubstringIndex.build(docs, vocab_size=6)
    sharded = ShardedIndex.build(docs, vocab_size=6, shard_tokens=shard_tokens)
    assert sum(s.num_documents for s in sharded.shards) == len(docs) == sharded.num_documents
    assert all(s.total_tokens <= shard_tokens or s.num_documents == 1 for s in sharded.shards)
    grams = {tuple(doc[i:i + n]) for doc in docs for n in (1, 2, 3)
             for i in range(len(doc) - n + 1)} | {tuple(probe)}
    for gram in grams:
        found = brute_positions(docs, gram)
        assert sharded.count(gram) == len(found) == one.count(gram)
        assert sharded.docs(gram) == sorted({d for d, _ in found})
        assert sorted(sharded.positions(gram).tolist()) == sorted(one.positions(gram).tolist())
        assert sharded.next_tokens(gram) == one.next_tokens(gram)
        assert sharded.next_tokens_at_start(gram).tolist() == \
            one.next_tokens_at_start(gram).tolist()
    assert sharded.next_tokens(()) == one.next_tokens(())
    assert sharded.next_tokens_at_start(()).tolist() == one.next_tokens_at_start(()).tolist()
    assert sharded.total_tokens == one.total_tokens
    assert sharded.token_counts().tolist() == one.token_counts().tolist()
    assert sharded.doc_starts.tolist() == one.doc_starts.tolist()
    assert [sharded.document(r).tolist() for r in range(len(docs))] == docs


def test_sharded_scores_equal_one_index_scores():
    from cormorant.retrieval.seal.sharded import ShardedIndex

    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 12, size=rng.integers(3, 15)).tolist() for _ in range(30)]
    ngrams = sorted({tuple(d[i:i + 2]) for d in docs[:10] for i in range(len(d) - 1)})[:25]
    weights = rng.uniform(0.1, 3.0, size=len(ngrams)).tolist()
    unigrams = {t: 0.3 for t in range(0, 12, 3)}
    one = SubstringIndex.build(docs, vocab_size=12)
    sharded = ShardedIndex.build(docs, vocab_size=12, shard_tokens=25)
    assert len(sharded.shards) > 5
    expected = score_documents(one, ngrams, weights, unigrams)
    got = score_documents(sharded, ngrams, weights, unigrams)
    assert got.keys() == expected.keys() and expected
    assert all(got[d] == pytest.approx(expected[d]) for d in expected)


def test_sharded_build_spills_shards_and_save_moves_them(tmp_path):
    from cormorant.retrieval.seal.sharded import ShardedIndex

    docs = [[1, 2, 3], [2, 3, 1], [3, 3], [1]]
    index = ShardedIndex.build(docs, vocab_size=4, shard_tokens=4)
    assert len(index.shards) == 3
    # Every shard was sorted, written and reopened memory-mapped: none stays in RAM.
    assert all(isinstance(s.suffix_array, np.memmap) for s in index.shards)
    spill = index._spill
    meta = index.save(tmp_path)
    assert [s["documents"] for s in meta["shards"]] == [1, 1, 2]
    assert not any(spill.iterdir())  # moved, not copied
    loaded = ShardedIndex.load(tmp_path, meta)
    assert loaded.count((2, 3)) == 2 and loaded.docs((3, 1)) == [1]
    assert loaded.document(2).tolist() == [3, 3]
    del index
    import gc

    gc.collect()
    assert not spill.exists()


def test_one_shard_stays_in_memory_and_keeps_the_old_file_names(tmp_path):
    from cormorant.retrieval.seal.sharded import ShardedIndex

    index = ShardedIndex.build([[1, 2, 3], [2, 3, 1]], vocab_size=4)
    assert len(index.shards) == 1 and not isinstance(index.shards[0].suffix_array, np.memmap)
    meta = index.save(tmp_path)
    assert "shards" not in meta and (tmp_path / "suffix_array.npy").is_file()
    assert ShardedIndex.load(tmp_path, meta).count((2, 3)) == 2


# ------------------------------------------------------------------------------ scoring
def test_weight_is_zero_unless_the_query_makes_the_ngram_likelier():
    assert ngram_weight(math.log(0.01), math.log(0.01)) == 0.0
    assert ngram_weight(math.log(0.001), math.log(0.01)) == 0.0
    expected = math.log(0.5 * 0.99 / (0.01 * 0.5))
    assert ngram_weight(math.log(0.5), math.log(0.01)) == pytest.approx(expected)
    # P(n) uses (F + λ) / (N + λ): an unseen n-gram is not infinitely rare.
    assert corpus_log_prob(0, 95) == pytest.approx(math.log(5 / 100))


def test_rare_query_likely_ngram_outranks_frequent_ones():
    rare, common = (7, 8), (1, 2)
    docs = [[1, 2, 3, 1, 2, 4], [7, 8, 9], [1, 2, 5], [1, 2, 6], [3, 1, 2]]
    index = SubstringIndex.build(docs, vocab_size=10)
    s = math.log(0.6)  # the generator finds both n-grams equally likely given the query
    weights = [ngram_weight(s, corpus_log_prob(index.count(n), index.total_tokens))
               for n in (rare, common)]
    assert weights[0] > weights[1] > 0
    scores = score_documents(index, [rare, common], [float(w) for w in weights])
    assert max(scores, key=scores.get) == 1
    assert scores[1] > scores[0]


def test_overlapping_lower_weight_occurrence_is_ignored():
    index = SubstringIndex.build([[1, 2, 3]], vocab_size=4)
    scores = score_documents(index, [(1, 2), (2, 3)], [3.0, 1.0], settings=ScoringSettings())
    assert scores[0] == pytest.approx(9.0)  # (2, 3) shares position 1 with (1, 2)


def test_repeats_count_once_and_covered_ngrams_are_discounted():
    index = SubstringIndex.build([[1, 2, 9, 1, 2]], vocab_size=10)
    assert score_documents(index, [(1, 2)], [2.0])[0] == pytest.approx(4.0)
    # (2, 1) is fully covered by the types of (1, 2): it adds (1 - β) w^α = 0.2 w^α.
    index = SubstringIndex.build([[1, 2, 9, 2, 1]], vocab_size=10)
    got = score_documents(index, [(1, 2), (2, 1)], [2.0, 1.0])[0]
    assert got == pytest.approx(4.0 + 0.2 * 1.0)


def test_unigrams_score_free_positions_without_alpha():
    index = SubstringIndex.build([[1, 2, 3]], vocab_size=4)
    got = score_documents(index, [(1, 2)], [2.0], unigrams={3: 0.5, 1: 7.0})[0]
    # token 1 sits on a claimed position; token 3 is free and adds u = 0.5 (not 0.25).
    assert got == pytest.approx(4.0 + 0.5)


# ------------------------------------------------------------------ decoding and stage
@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory) -> Path:
    from tests.seal_helpers import make_tiny_generator

    return make_tiny_generator(tmp_path_factory.mktemp("tiny-generator"))


@pytest.fixture(scope="module")
def generator(tiny_generator):
    from cormorant.retrieval.seal.generator import Generator

    return Generator.load(str(tiny_generator))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(st.lists(st.integers(2, 299), min_size=1, max_size=20), min_size=1,
                     max_size=5),
       query=st.sampled_from(list(QUERIES.values())), beams=st.integers(1, 4),
       length=st.integers(1, 5))
def test_every_generated_ngram_occurs_in_the_corpus(generator, docs, query, beams, length):
    from cormorant.retrieval.seal.constrained import DecodeSettings, generate_ngrams

    index = SubstringIndex.build(docs, vocab_size=generator.vocab_size)
    seen = []
    original = index.count
    index.count = lambda n: seen.append(n) or original(n)  # the filter must not be what saves us
    found = generate_ngrams(generator, index, [query], DecodeSettings(beams, length, beams))[0]
    assert found and all(1 <= len(n) <= length for n in found)
    for ngram in found:
        assert brute_positions(docs, ngram), ngram
    assert all(original(n) > 0 for n in seen)


def test_stage_in_pipeline_and_save_load_round_trip(tmp_path, tiny_generator):
    from cormorant.retrieval.assemble import build_pipeline, open_index, save_index
    from cormorant.types import Corpus, Document

    corpus = Corpus.from_documents([Document(i, x, t) for i, t, x in DOCS], name="tiny")
    spec = f"seal(model={tiny_generator}, beams=3, max_length=4)"
    built = build_pipeline(spec, corpus)
    run = built.search(QUERIES, k=3)
    # A random model finds few n-grams likelier than the corpus does; some query still matches.
    assert set(run) == set(QUERIES) and any(run.values())
    save_index(f"rrf(bm25, {spec})", corpus, tmp_path / "idx")
    handle = open_index(tmp_path / "idx", pipeline=spec)
    assert handle.pipeline.search(QUERIES, k=3) == run
    fused = open_index(tmp_path / "idx").pipeline.search(QUERIES, k=3)
    assert all(fused[q] for q in QUERIES)  # bm25 fills in where seal has nothing
    reranked = open_index(tmp_path / "idx", pipeline=f"bm25 >> {spec}").pipeline.search(QUERIES, k=3)
    assert set(reranked) == set(QUERIES)


def test_stage_built_in_shards_searches_like_one_index(tmp_path, tiny_generator):
    from cormorant.errors import IndexFormatError
    from cormorant.retrieval.assemble import build_pipeline, open_index, save_index
    from cormorant.types import Corpus, Document

    corpus = Corpus.from_documents([Document(i, x, t) for i, t, x in DOCS], name="tiny")
    spec = f"seal(model={tiny_generator}, beams=3, max_length=4)"
    expected = build_pipeline(spec, corpus).search(QUERIES, k=3)
    save_index(f"seal(model={tiny_generator}, shard_tokens=40)", corpus, tmp_path / "idx")
    files = {p.name for p in tmp_path.glob("idx/*/*")}
    assert "shard-0001.suffix_array.npy" in files
    # The index's checksums cover every shard file: a damaged shard is caught on open.
    handle = open_index(tmp_path / "idx", pipeline=spec)
    assert handle.pipeline.search(QUERIES, k=3) == expected
    damaged = next(tmp_path.glob("idx/*/shard-0001.tokens.npy"))
    damaged.write_bytes(damaged.read_bytes()[:-4])
    with pytest.raises(IndexFormatError, match="checksum"):
        open_index(tmp_path / "idx", pipeline=spec)


def test_other_tokenizer_is_refused(tmp_path, tiny_generator):
    from cormorant.errors import PipelineError
    from cormorant.retrieval.assemble import open_index, save_index
    from cormorant.types import Corpus, Document
    from tests.seal_helpers import make_tiny_generator

    corpus = Corpus.from_documents([Document(i, x, t) for i, t, x in DOCS], name="tiny")
    save_index(f"seal(model={tiny_generator})", corpus, tmp_path / "idx")
    other = make_tiny_generator(tmp_path / "other", vocab=280)
    with pytest.raises(PipelineError, match="tokenizes differently"):
        open_index(tmp_path / "idx", pipeline=f"seal(model={other})")


def test_bad_options_are_clear(tiny_generator):
    from cormorant.errors import CormorantError
    from cormorant.retrieval.assemble import build_pipeline
    from cormorant.types import Corpus, Document

    corpus = Corpus.from_documents([Document("a", "x")])
    with pytest.raises(CormorantError, match="beams must be at least 1"):
        build_pipeline(f"seal(model={tiny_generator}, beams=0)", corpus)
    with pytest.raises(CormorantError, match="not found"):
        build_pipeline("seal(model=/nonexistent/model)", corpus)


# ------------------------------------------------------------------------------ training
def test_train_seal_writes_a_model_the_stage_loads(tmp_path, tiny_generator):
    from tests.test_cli import assert_clean_error, cormorant

    data = write_beir(tmp_path / "tiny")
    out = tmp_path / "seal-model"
    result = cormorant("train", "--kind", "seal", "--base-model", tiny_generator, "--dataset",
                       data, "--split", "test", "--out", out, "--max-steps", "3",
                       "--batch-size", "4", cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert (out / "config.json").is_file() and (out / "training" / "summary.json").is_file()
    assert not (tmp_path / "seal-model.work").exists()
    # One of the three queries was held out: its pairs' loss was measured during training.
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["dev_loss"] and "best dev loss" in result.stdout

    from cormorant.retrieval.assemble import build_pipeline
    from cormorant.types import Corpus, Document

    corpus = Corpus.from_documents([Document(i, x, t) for i, t, x in DOCS], name="tiny")
    run = build_pipeline(f"seal(model={out}, beams=2, max_length=3)", corpus).search(QUERIES, k=2)
    assert set(run) == set(QUERIES)

    bad = cormorant("train", "--kind", "seal", "--base-model", tmp_path / "missing",
                    "--dataset", data, "--split", "test", "--out", tmp_path / "bad")
    assert_clean_error(bad, "not found")
    assert not (tmp_path / "bad").exists()


def test_seal_dev_set_without_pairs_trains_without_dev(tmp_path, tiny_generator, monkeypatch):
    """Dev queries that yield no pairs must not leave best-checkpoint selection without a
    metric: the run trains as one without a dev set and keeps its last step."""
    from cormorant.training import seal as seal_training
    from cormorant.training.config import TrainConfig
    from cormorant.training.trainer import train

    monkeypatch.setattr(seal_training, "_dev_rows", lambda *a: seal_training._Rows([]))
    out = tmp_path / "seal-model"
    result = train(TrainConfig(dataset=write_beir(tmp_path / "tiny"), split="test", out=out,
                               kind="seal", base_model=str(tiny_generator), max_steps=2,
                               batch_size=4))
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert result.steps == 2 and result.best_dev_loss is None
    assert summary["dev_loss"] == [] and summary["kept_checkpoint"] == "last step"
    assert (out / "config.json").is_file()


def write_synthetic(folder: Path, queries: dict[str, tuple[str, str]]) -> Path:
    """A ``cormorant data synth-queries``-style folder: query id -> (text, document id)."""
    write_beir(folder)
    (folder / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in queries.items()))
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, (_, d) in queries.items()))
    return folder


def test_seal_dev_selection_keeps_the_lowest_dev_loss(tmp_path, tiny_generator):
    from tests.test_cli import cormorant

    data = write_beir(tmp_path / "tiny")
    out = tmp_path / "seal-model"
    # A rate this high makes the dev loss jump about: the kept checkpoint must be its minimum.
    result = cormorant("train", "--kind", "seal", "--base-model", tiny_generator, "--dataset",
                       data, "--split", "test", "--out", out, "--max-steps", "6",
                       "--batch-size", "4", "--learning-rate", "0.05", "--config",
                       _eval_every_step(tmp_path), cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "training" / "summary.json").read_text())
    history = summary["dev_loss"]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]
    best = min(history, key=lambda h: h["loss"])
    assert summary["kept_checkpoint"].endswith(f"checkpoint-{best['step']}")


def _eval_every_step(tmp_path: Path) -> Path:
    config = tmp_path / "every-step.yaml"
    config.write_text("eval_steps: 1\n")
    return config


def test_seal_trains_on_synthetic_queries_too(tmp_path, tiny_generator):
    from tests.test_cli import assert_clean_error, cormorant

    data = write_beir(tmp_path / "tiny")
    synthetic = write_synthetic(tmp_path / "synth", {
        "s1": ("which birds dive for fish", "d2"), "s2": ("what lowers cholesterol", "d3"),
        "s3": ("vitamin d and mood", "d1")})
    out = tmp_path / "seal-synth"
    args = ("train", "--kind", "seal", "--base-model", tiny_generator, "--dataset", data,
            "--split", "test", "--max-steps", "2", "--batch-size", "4")
    result = cormorant(*args, "--out", out, "--synthetic-queries", synthetic,
                       cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["synthetic_queries"] == 3
    plain = cormorant(*args, "--out", tmp_path / "seal-plain", cache=tmp_path / "cache")
    assert plain.returncode == 0, plain.stderr
    plain_pairs = json.loads((tmp_path / "seal-plain" / "training" / "summary.json")
                             .read_text())["pairs"]
    assert summary["pairs"] > plain_pairs  # each synthetic query added title and span pairs

    foreign = write_synthetic(tmp_path / "foreign", {"s1": ("anything", "d1")})
    (foreign / "corpus.jsonl").write_text(json.dumps({"_id": "zz", "text": "x"}) + "\n")
    (foreign / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\ns1\tzz\t1\n")
    bad = cormorant(*args, "--out", tmp_path / "bad", "--synthetic-queries", foreign)
    assert_clean_error(bad, "not in the training corpus")
    assert not (tmp_path / "bad").exists()
    wrong_kind = cormorant("train", "--dataset", data, "--out", tmp_path / "bad2",
                           "--synthetic-queries", synthetic)
    assert_clean_error(wrong_kind, "--synthetic-queries is for --kind seal")


def test_training_pairs_follow_the_query():
    import random

    from cormorant.training.seal import query_spans

    text = " ".join(["filler"] * 40 + ["vitamin", "d", "deficiency", "causes", "depression"]
                    + ["filler"] * 40)
    spans = query_spans("vitamin d deficiency and depression", text, random.Random(0), 10)
    assert any("vitamin d deficiency" in s for s in spans)


def test_training_pairs_hold_title_keys_under_the_title_prompt():
    import random

    from cormorant.training.seal import TITLE_COPIES, supervised_pairs
    from cormorant.types import Document

    docs = {"d1": Document("d1", "Vitamin D deficiency is common. " * 5, "Vitamin D")}
    pairs = supervised_pairs({"q": "vitamin d"}, {"q": ["d1"]}, docs, random.Random(0))
    titled = [p for p in pairs if p.titles]
    assert len(titled) == TITLE_COPIES and {p.target for p in titled} == {" Vitamin D @@"}
    assert any(p.target == " Vitamin D" and not p.titles for p in pairs)  # also a body n-gram


def test_seq2seq_generator_decodes_corpus_ngrams(tmp_path):
    from cormorant.retrieval.seal.constrained import decode
    from cormorant.retrieval.seal.retriever import SealRetriever
    from cormorant.types import Corpus, Document
    from tests.seal_helpers import make_tiny_seq2seq

    model = make_tiny_seq2seq(tmp_path)
    corpus = Corpus.from_documents([Document(i, x, t) for i, t, x in DOCS], name="tiny")
    seal = SealRetriever.build(corpus, model=str(model), beams=3, max_length=4)
    assert seal.generator.seq2seq
    streams = [seal.index.document(r).tolist() for r in range(len(DOCS))]
    decoded = decode(seal.generator, seal.index, QUERIES["q1"], seal.decode)
    assert decoded.log_probs and decoded.first is not None
    for ngram in decoded.log_probs:
        assert any(tuple(s[i:i + len(ngram)]) == ngram for s in streams
                   for i in range(len(s) - len(ngram) + 1))
    # The beam search's recorded log-probabilities are what teacher forcing gives.
    some = sorted(decoded.log_probs)[:5]
    forced = seal.generator.prefix_log_probs(QUERIES["q1"], some)
    for ngram in some:
        assert forced[ngram] == pytest.approx(decoded.log_probs[ngram], abs=1e-3)
    assert set(seal.search(QUERIES, k=2)) == set(QUERIES)


def test_title_keys_are_whole_titles_of_corpus_documents(generator):
    from cormorant.retrieval.seal.constrained import DecodeSettings, decode_titles

    docs = [generator.tokenize(generator.document_text(t, x)) for _, t, x in DOCS]
    titles = {tuple(generator.tokenize(f" {t} @@")) for _, t, _ in DOCS}
    index = SubstringIndex.build(docs, vocab_size=generator.vocab_size)
    for query in QUERIES.values():
        keys = decode_titles(generator, index, query, DecodeSettings(4, 15, 4))
        assert keys, query  # four beams over six titles always close some
        assert set(keys) <= titles  # a whole title, from a document's start, up to its @@
        assert all(v < 0 for v in keys.values())


def test_stage_with_title_keys(tmp_path, tiny_generator):
    from cormorant.retrieval.seal.retriever import SealRetriever
    from cormorant.types import Corpus, Document

    corpus = Corpus.from_documents([Document(i, x, t) for i, t, x in DOCS], name="tiny")
    plain = SealRetriever.build(corpus, model=str(tiny_generator), beams=3, max_length=4)
    titled = SealRetriever.build(corpus, model=str(tiny_generator), beams=3, max_length=4,
                                 titles=True)
    end = plain.generator.title_end
    assert not any(k[-len(end):] == end for k in plain.keys(QUERIES["q1"]))
    assert any(k[-len(end):] == end for k in titled.keys(QUERIES["q1"]))
    assert set(titled.search(QUERIES, k=3)) == set(QUERIES)
    assert titled.PARAMS.shown(titled.settings) == {"model": str(tiny_generator), "beams": 3,
                                                    "max_length": 4, "titles": True}


def test_beam_log_probs_equal_teacher_forcing(generator):
    from cormorant.retrieval.seal.constrained import DecodeSettings, decode

    docs = [generator.tokenize(generator.document_text(t, x)) for _, t, x in DOCS]
    index = SubstringIndex.build(docs, vocab_size=generator.vocab_size)
    decoded = decode(generator, index, QUERIES["q2"], DecodeSettings(3, 4, 3))
    forced = generator.prefix_log_probs(QUERIES["q2"], list(decoded.log_probs))
    for ngram, value in decoded.log_probs.items():
        assert forced[ngram] == pytest.approx(value, abs=1e-3), ngram
    first = generator.first_token_log_probs(QUERIES["q2"])
    assert np.allclose(decoded.first, first, atol=1e-4)
