"""TILDEv2: the stage's scores are sums of the passages' max token weights over the query's
tokens, the first stage and the re-ranker agree, indexes reopen without the encoder, the
training kind learns, and bad input gets one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cormorant.errors import CormorantError, DataError, PipelineError
from cormorant.retrieval.assemble import build_pipeline, open_index, save_index
from cormorant.retrieval.tilde import QueryTokenizer, TildeModel, max_rows
from cormorant.retrieval.tildev2 import TildeV2Retriever, expanded
from cormorant.types import Corpus, Document, Run
from tests.conftest import DOCS, QUERIES

TWO = [Document("a", "cormorants dive for fish"), Document("b", "fish farms feed fish")]


def corpus_of(docs: list[Document]) -> Corpus:
    return Corpus.from_documents(docs, name="tilde")


def test_max_rows_keeps_each_tokens_largest_weight() -> None:
    ids = np.array([[5, 7, 5, 0], [9, 9, 2, 2]])
    weights = np.array([[0.5, 1.0, 2.0, 9.0], [0.3, 0.1, 0.0, 0.4]], dtype=np.float32)
    keep = np.array([[True, True, True, False], [True, True, True, True]])
    rows = max_rows(ids, weights, keep, vocab=10).toarray()
    expected = np.zeros((2, 10), np.float32)
    expected[0, [5, 7]] = [2.0, 1.0]  # token 5 twice: its larger weight; position 3 dropped
    expected[1, [9, 2]] = [0.3, 0.4]
    assert np.array_equal(rows, expected)


def test_query_is_token_counts_without_stop_words_or_special_tokens(tiny_tilde) -> None:
    tokens = QueryTokenizer.load(tiny_tilde)
    fish = tokens.tokenizer.convert_tokens_to_ids("fish")
    row = tokens.matrix(["the fish and the fish"])
    assert row.indices.tolist() == [fish]  # "the", "and": stop words; no [CLS]/[SEP]
    assert row.data.tolist() == [2.0]  # a repeated query token counts twice


def test_score_is_sum_over_query_tokens_of_max_weight(tiny_tilde) -> None:
    model = TildeModel.load(tiny_tilde)
    stage = TildeV2Retriever.build(corpus_of(TWO), model=str(tiny_tilde))
    # By hand: each stored token's largest weight, read off the model's raw output.
    expected = {}
    for doc in TWO:
        features = model.tokenize([doc.contents])
        with __import__("torch").inference_mode():
            weights = model(features["input_ids"], features["attention_mask"])[0].tolist()
        best: dict[int, float] = {}
        for token, weight in zip(features["input_ids"][0].tolist(), weights, strict=True):
            best[token] = max(best.get(token, 0.0), weight)
        query = model.tokenizer("fish cormorants fish", add_special_tokens=False)["input_ids"]
        expected[doc.doc_id] = sum(best.get(t, 0.0) for t in query)
    got = stage.search("fish cormorants fish", k=2)["0"]
    assert expected["a"] > expected["b"] > 0  # b lacks "cormorants"
    assert list(got) == ["a", "b"]
    for doc_id in got:
        assert got[doc_id] == pytest.approx(expected[doc_id], rel=1e-5)


def test_first_stage_and_reranker_give_the_same_scores(tiny_tilde) -> None:
    corpus = corpus_of([Document(i, f"{t}. {x}") for i, t, x in DOCS])
    stage = TildeV2Retriever.build(corpus, model=str(tiny_tilde))
    first = stage.retrieve(QUERIES, k=len(DOCS))
    candidates = Run({q: dict.fromkeys([d for d, *_ in DOCS], 0.0) for q in QUERIES})
    again = stage.rescore(QUERIES, candidates)
    for qid in QUERIES:
        assert first[qid]  # every query shares a token with some document
        for doc_id, score in first[qid].items():
            assert again[qid][doc_id] == pytest.approx(score, rel=1e-6)
        # documents the first stage leaves out share no query token: they score 0
        assert all(again[qid][d] == 0.0 for d in again[qid] if d not in first[qid])


def test_reranks_after_bm25_and_reopens_without_the_encoder(tiny_tilde, tmp_path) -> None:
    corpus = corpus_of([Document(i, x, title=t) for i, t, x in DOCS])
    text = f"bm25 % 3 >> tildev2(model={tiny_tilde})"
    want = build_pipeline(text, corpus).search(QUERIES, k=3)
    path = save_index(text, corpus, tmp_path / "index")
    with open_index(path) as handle:
        got = handle.pipeline.search(QUERIES, k=3)
        leaf = next(s for s in handle.pipeline.leaves() if s.name == "tildev2")
        assert leaf._model is None  # searching loaded the tokenizer only
    for qid in QUERIES:
        assert list(got[qid]) == list(want[qid])
        assert set(got[qid]) <= set(want[qid])
    assert json.loads((path / "1-tildev2" / "meta.json").read_text())["postings"] > 0


def test_expansion_appends_new_words_of_generated_queries(tiny_tilde, tmp_path) -> None:
    assert expanded("Cats purr.", "why do cats purr so") == "Cats purr. why do so"
    synth = tmp_path / "synth"
    (synth / "qrels").mkdir(parents=True)
    (synth / "corpus.jsonl").write_text("".join(json.dumps({"_id": d.doc_id, "text": d.text})
                                                + "\n" for d in TWO))
    (synth / "queries.jsonl").write_text(json.dumps({"_id": "s1", "text": "pelican"}) + "\n")
    (synth / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\ns1\ta\t1\n")
    plain = TildeV2Retriever.build(corpus_of(TWO), model=str(tiny_tilde))
    grown = TildeV2Retriever.build(corpus_of(TWO), model=str(tiny_tilde), expand=str(synth))
    assert plain.search("pelican", k=2)["0"] == {}
    assert list(grown.search("pelican", k=2)["0"]) == ["a"]  # only a got the new word


def test_training_learns_and_writes_a_checkpoint_the_stage_loads(tiny_encoder, tmp_path) -> None:
    from cormorant.training.config import TrainConfig
    from cormorant.training.trainer import train
    from tests.conftest import write_beir

    data = write_beir(tmp_path / "tiny")
    shutil.copy(data / "qrels" / "test.tsv", data / "qrels" / "train.tsv")
    out = tmp_path / "model"
    result = train(TrainConfig(dataset=data, out=out, kind="tildev2", base_model=str(tiny_encoder),
                               epochs=4, batch_size=4, tilde_group=3, dev_fraction=0,
                               learning_rate=1e-3))
    assert result.steps == 6  # 3 queries x 4 epochs, 2 groups a step
    assert all(np.isfinite(result.losses))
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["kind"] == "tildev2" and summary["group"] == 3
    start = TildeModel.from_encoder(str(tiny_encoder), seed=42)
    trained = TildeModel.load(out)
    assert not np.allclose(start.head.weight.detach(), trained.head.weight.detach())
    stage = TildeV2Retriever.build(corpus_of([Document(i, x, title=t) for i, t, x in DOCS]),
                                   model=str(out))
    assert stage.search(QUERIES, k=2)["q1"]


def test_group_loss_favours_the_positive_after_training_steps() -> None:
    import torch

    from cormorant.training.tildev2 import group_scores

    weights = torch.zeros(1, 2, 3, requires_grad=True)
    docs = torch.tensor([[[4, 5, 6], [4, 7, 8]]])
    query = torch.tensor([[4, 5, -1]])
    optimizer = torch.optim.SGD([weights], lr=1.0)
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(group_scores(torch.relu(weights + 0.1), docs,
                                                              query), torch.tensor([0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scores = group_scores(torch.relu(weights + 0.1), docs, query)[0]
    assert scores[0] > scores[1]  # token 5 only the positive has: its weight rose


def test_bad_input_gets_one_line_errors(tiny_encoder, tmp_path) -> None:
    corpus = corpus_of(TWO)
    with pytest.raises(PipelineError, match="needs model|model"):
        TildeV2Retriever.build(corpus)
    with pytest.raises(PipelineError, match="not a tildev2 checkpoint.*cormorant train --kind"):
        TildeV2Retriever.build(corpus, model=str(tiny_encoder))
    with pytest.raises(PipelineError, match="not a tildev2 checkpoint"):
        TildeV2Retriever.build(corpus, model=str(tmp_path / "missing"))
    with pytest.raises(CormorantError, match="not a tildev2 checkpoint"):
        TildeModel.load(tiny_encoder)
    with pytest.raises(CormorantError, match="cannot load encoder"):
        TildeModel.from_encoder(str(tmp_path))
    with pytest.raises(DataError, match="not a 'cormorant data synth-queries' folder"):
        from cormorant.retrieval.tildev2 import read_expansions

        read_expansions(tmp_path)


def test_reopening_with_another_model_is_refused(tiny_tilde, tiny_encoder, tmp_path) -> None:
    other = tmp_path / "other"
    TildeModel.from_encoder(str(tiny_encoder), seed=7).save(other)
    path = save_index(f"tildev2(model={tiny_tilde})", corpus_of(TWO), tmp_path / "index")
    with pytest.raises(PipelineError, match="another tildev2 model|rebuild"):
        open_index(path, pipeline=f"tildev2(model={other})").pipeline.search("fish", k=1)
    moved = Path(shutil.copytree(tiny_tilde, tmp_path / "moved"))
    path = save_index(f"tildev2(model={moved})", corpus_of(TWO), tmp_path / "index2")
    shutil.rmtree(moved)
    with pytest.raises(PipelineError, match="is not there.*model=DIR"):
        open_index(path)


def test_cli_trains_and_indexes(tiny_encoder, tmp_path) -> None:
    from tests.cli_support import assert_one_error_line, run_cli
    from tests.conftest import write_beir

    data = write_beir(tmp_path / "tiny")
    shutil.copy(data / "qrels" / "test.tsv", data / "qrels" / "train.tsv")
    out = tmp_path / "model"
    result = run_cli("train", "-d", str(data), "-o", str(out), "--kind", "tildev2",
                     "--base-model", str(tiny_encoder), "--max-steps", "1")
    assert result.code == 0 and result.traceback is None, (result.err, result.traceback)
    assert Path(out / "tildev2.json").is_file()
    bad = run_cli("train", "-d", str(data), "-o", str(tmp_path / "x"), "--kind", "tildev2",
                  "--base-model", str(tmp_path / "nothing"), "--max-steps", "1")
    assert_one_error_line(bad, "cannot load encoder")


def test_a_dead_relu_head_stops_training_with_a_clear_error() -> None:
    """Every token weight 0 means no gradient anywhere: the run stops instead of spending its
    budget and saving a model that scores every passage 0 (what happened on NFCorpus)."""
    import torch

    from cormorant.errors import CormorantError
    from cormorant.training.tildev2 import DeadHeadGuard

    guard = DeadHeadGuard(patience=3)
    for weights in (torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([[0.0, 0.2]])):
        guard(weights)  # a live step resets the count
    guard(torch.zeros(2, 4))
    guard(torch.zeros(2, 4))
    with pytest.raises(CormorantError, match="collapsed at step 6: every token weight has been 0"
                                              " for 3 steps"):
        guard(torch.zeros(2, 4))


def test_positives_that_share_no_query_token_are_not_trained_on(tiny_tilde) -> None:
    """A positive with none of its query's tokens scores 0 whatever the weights: training on it
    only pushes the negatives' weights to 0 (how the head died on NFCorpus), so it is left out,
    and a query left with no positive is dropped."""
    from cormorant.training.data import TrainingSet
    from cormorant.training.tildev2 import matchable

    texts = {"a": "cormorants dive for fish", "b": "birds of the open sea",
             "c": "fish farms feed fish"}
    data = TrainingSet({"q1": "diving cormorants", "q2": "the sea"},
                       {"q1": ["a", "b"], "q2": ["c"]}, corpus_of(TWO), texts)
    model = TildeModel.load(tiny_tilde)
    kept, dropped = matchable(data, model, max_length=32)
    assert kept.positives == {"q1": ["a"]}  # b shares no token; q2's only one is c, also none
    assert list(kept.queries) == ["q1"]
    assert dropped == {"unmatched_positives": 2, "unmatched_queries": 1}
    # cut where training cuts: at 4 tokens a is [CLS] co ##rm [SEP], which has no "fish"
    fish = TrainingSet({"q3": "fish"}, {"q3": ["a"]}, corpus_of(TWO), texts)
    assert matchable(fish, model, max_length=16)[1]["unmatched_positives"] == 0
    with pytest.raises(CormorantError, match="nothing to learn"):  # no positive left at all
        matchable(fish, model, max_length=4)
