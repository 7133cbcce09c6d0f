"""Prompts and instructions: an explicit prompt reaches the tokenizer, a model's named prompts
are used by default, and a prompt is part of the encoder's and the stage's identity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cormorant.data import load_dataset
from cormorant.index.embeddings import embeddings_key
from cormorant.retrieval.dense import DenseRetriever
from cormorant.retrieval.encoders import SentenceTransformerEncoder

TEXTS = ["does vitamin d help with depression", "cormorants catch fish"]


@pytest.fixture(scope="module")
def prompted_model(tiny_encoder, tmp_path_factory):
    """The tiny model with e5-style named prompts in its saved config."""
    import shutil

    folder = tmp_path_factory.mktemp("prompted") / "model"
    shutil.copytree(tiny_encoder, folder)
    config = folder / "config_sentence_transformers.json"
    saved = json.loads(config.read_text()) if config.is_file() else {}
    saved["prompts"] = {"query": "query: ", "document": "passage: "}
    config.write_text(json.dumps(saved))
    return folder


def test_an_explicit_prompt_reaches_the_tokenizer(tiny_encoder):
    plain = SentenceTransformerEncoder(str(tiny_encoder))
    prompted = SentenceTransformerEncoder(str(tiny_encoder), query_prompt="Instruct: find"
                                          " evidence\nQuery: ", document_prompt="passage: ")
    # Mean pooling over the prompt's tokens too: the same as writing the prompt by hand.
    assert np.allclose(prompted.encode_queries(TEXTS),
                       plain.encode_queries([f"Instruct: find evidence\nQuery: {t}" for t in TEXTS]),
                       atol=1e-5)
    assert np.allclose(prompted.encode_documents(TEXTS),
                       plain.encode_documents([f"passage: {t}" for t in TEXTS]), atol=1e-5)
    assert not np.allclose(prompted.encode_queries(TEXTS), plain.encode_queries(TEXTS), atol=1e-3)


def test_named_prompts_from_the_model_config_are_the_default(prompted_model, tiny_encoder):
    named = SentenceTransformerEncoder(str(prompted_model))
    bare = SentenceTransformerEncoder(str(tiny_encoder))
    assert named.prompts == {"query": "query: ", "document": "passage: "}
    assert np.allclose(named.encode_queries(TEXTS),
                       bare.encode_queries([f"query: {t}" for t in TEXTS]), atol=1e-5)
    assert np.allclose(named.encode_documents(TEXTS),
                       bare.encode_documents([f"passage: {t}" for t in TEXTS]), atol=1e-5)
    # An explicit '' switches the model's prompt off.
    off = SentenceTransformerEncoder(str(prompted_model), query_prompt="")
    assert np.allclose(off.encode_queries(TEXTS), bare.encode_queries(TEXTS), atol=1e-5)


def test_prompt_is_part_of_the_identity(tiny_encoder, beir_dir):
    corpus_small = load_dataset(beir_dir).corpus
    plain = SentenceTransformerEncoder(str(tiny_encoder)).settings
    prompted = SentenceTransformerEncoder(str(tiny_encoder), document_prompt="passage: ").settings
    assert "document_prompt" not in plain  # cache keys of unprompted encoders are unchanged
    assert embeddings_key(plain, corpus_small) != embeddings_key(prompted, corpus_small)
    base = DenseRetriever.PARAMS.resolve({"model": str(tiny_encoder)}, "dense")
    asked = {**base, "query_prompt": "query: "}
    assert DenseRetriever.identity(base) != DenseRetriever.identity(asked)


@pytest.mark.slow
def test_a_prompt_changes_minilm_vectors_and_cache_key(beir_dir):
    """all-MiniLM-L6-v2 has no prompts of its own; an instruction moves its vectors (a little:
    it was not trained with one) and gives its embeddings another cache entry."""
    corpus = load_dataset(beir_dir).corpus
    plain = SentenceTransformerEncoder()
    prompted = SentenceTransformerEncoder(query_prompt="Represent this question for retrieving"
                                          " supporting abstracts: ", document_prompt="passage: ")
    assert plain.prompts == {"query": "", "document": ""}
    moved = (plain.encode_queries(TEXTS) * prompted.encode_queries(TEXTS)).sum(axis=1)
    assert (moved < 0.99).all()
    assert embeddings_key(plain.settings, corpus) != embeddings_key(prompted.settings, corpus)


def test_experiment_files_carry_per_dataset_instructions(tiny_encoder, beir_dir, tmp_path,
                                                         isolated_cache):
    """BRIGHT's instructed baselines: one instruction per dataset, given to every stage that
    takes prompts; the run is another (cached apart), the result keeps the pipeline's name."""
    from cormorant.eval.experiment import Experiment, instructed, run_experiment

    pipeline = f"dense(model={tiny_encoder})"
    (tmp_path / "exp.yaml").write_text(
        f"datasets:\n  - {beir_dir}\n  - {{path: {beir_dir}, query_prompt: \"Instruct: find"
        f" the passage\\nQuery: \"}}\npipelines: ['{pipeline}']\nmeasures: [nDCG@10]\n")
    exp = Experiment.from_file(tmp_path / "exp.yaml")
    assert exp.datasets[1].prompts == {"query_prompt": "Instruct: find the passage\nQuery: "}
    assert "query_prompt" in instructed(pipeline, exp.datasets[1].prompts)
    assert instructed(f"bm25 >> {pipeline}", {"query_prompt": "x"}).startswith("bm25 >>")
    plain, prompted = run_experiment(exp).results
    assert plain.pipeline == prompted.pipeline == pipeline
    assert plain.run != prompted.run
