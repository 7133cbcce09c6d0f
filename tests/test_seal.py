"""SEAL: the suffix array against brute force, constrained decoding only writes corpus n-grams,
the paper's weights and intersective scoring, the stage in pipelines and on disk, training."""

from __future__ import annotations

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
    assert index.next_tokens(()) == sorted({t for doc in docs for t in doc})
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

    from cormorant.retrieval.assemble import build_pipeline
    from cormorant.types import Corpus, Document

    corpus = Corpus.from_documents([Document(i, x, t) for i, t, x in DOCS], name="tiny")
    run = build_pipeline(f"seal(model={out}, beams=2, max_length=3)", corpus).search(QUERIES, k=2)
    assert set(run) == set(QUERIES)

    bad = cormorant("train", "--kind", "seal", "--base-model", tmp_path / "missing",
                    "--dataset", data, "--split", "test", "--out", tmp_path / "bad")
    assert_clean_error(bad, "not found")
    assert not (tmp_path / "bad").exists()


def test_training_pairs_follow_the_query():
    import random

    from cormorant.training.seal import query_spans

    text = " ".join(["filler"] * 40 + ["vitamin", "d", "deficiency", "causes", "depression"]
                    + ["filler"] * 40)
    spans = query_spans("vitamin d deficiency and depression", text, random.Random(0), 10)
    assert any("vitamin d deficiency" in s for s in spans)


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
