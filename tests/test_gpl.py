"""GPL from a corpus alone (``cormorant train --unsupervised``) on a tiny random model and a
48-document collection: sizing, pseudo-queries, mining, teacher margins, loss, command line."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cormorant.training.config import TrainConfig
from cormorant.training.data import TrainingSet
from cormorant.training.gpl import (
    GPL,
    draw_tuples,
    planned_steps,
    query_order,
    teacher_margins,
    teacher_view,
    truncate_tokens,
    union,
)
from cormorant.training.losses import MarginMSELoss, margin_mse, student_margin
from cormorant.training.negatives import Negatives, ScoredNegative
from cormorant.training.pseudo_queries import (
    merge,
    plan_sizes,
    queries_per_passage,
    span_drafts,
    write_pseudo_queries,
)
from cormorant.training.strategies import Context
from cormorant.types import Corpus, Document
from tests.cli_support import run_cli
from tests.training_data import write_training_beir


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with only corpus.jsonl (48 documents with titles)."""
    full = write_training_beir(tmp_path_factory.mktemp("full") / "ds")
    folder = tmp_path_factory.mktemp("corpus") / "ds"
    folder.mkdir()
    shutil.copy(full / "corpus.jsonl", folder / "corpus.jsonl")
    return folder


@pytest.fixture(scope="module")
def corpus(corpus_dir: Path) -> Corpus:
    from cormorant.data import load_dataset

    return load_dataset(corpus_dir).corpus


def pseudo_set(corpus: Corpus, tuples: int = 40, seed: int = 0) -> TrainingSet:
    pseudo = write_pseudo_queries(corpus, "span", tuples, seed)
    return pseudo.training_set(corpus, {d.doc_id: d.contents for d in corpus})


# --- sizing and pseudo-queries ----------------------------------------------------------------

def test_queries_per_passage_is_gpls_rule() -> None:
    assert queries_per_passage(5183) == 49  # SciFact: ceil(250000 / 5183)
    assert queries_per_passage(3633) == 69  # NFCorpus
    assert queries_per_passage(83_333) == 4  # 3|C| = 249,999 < 250k: ceil(3.00001)
    assert queries_per_passage(83_334) == 3
    assert queries_per_passage(1_000_000) == 3


def test_sizes_are_gpls_pool_or_the_share_a_short_run_uses() -> None:
    assert plan_sizes(5183, 140_000 * 32) == (5183, 49)  # GPL's run uses the whole pool
    assert plan_sizes(1_000_000, 140_000 * 32) == (83_334, 3)  # GPL's new_size cut
    assert plan_sizes(5183, 4800) == (4800, 1)  # a CPU run: 4800 passages, one query each
    assert plan_sizes(100, 450) == (100, 5)
    assert plan_sizes(100, 450, qpp=2) == (100, 2)


def test_duplicates_are_merged_and_keep_every_source() -> None:
    merged = merge([("a", "x y"), ("a", "x  y"), ("b", "x y"), ("b", "z"), ("c", " ")])
    assert merged.queries == {"gpl-a-0": "x y", "gpl-b-1": "z"}
    assert merged.sources == {"gpl-a-0": ["a", "b"], "gpl-b-1": ["b"]}
    assert merged.generated == 5


def test_spans_are_contiguous_runs_of_their_passage_and_seeded(corpus: Corpus) -> None:
    docs = list(corpus)
    drafts = span_drafts(docs, 3, random.Random(7), words=(2, 4))
    contents = {d.doc_id: d.contents.split() for d in docs}
    assert len(drafts) == 3 * len(docs)
    for doc_id, span in drafts:
        words, n = contents[doc_id], len(span.split())
        assert 2 <= n <= 4
        assert any(words[i:i + n] == span.split() for i in range(len(words)))
    assert drafts == span_drafts(docs, 3, random.Random(7), words=(2, 4))
    assert drafts != span_drafts(docs, 3, random.Random(8), words=(2, 4))


def test_pseudo_queries_are_seeded_and_their_qrel_is_the_source(corpus: Corpus) -> None:
    one, again = write_pseudo_queries(corpus, "span", 30, seed=1), \
        write_pseudo_queries(corpus, "span", 30, seed=1)
    assert one.queries == again.queries and one.sources == again.sources
    assert one.queries != write_pseudo_queries(corpus, "span", 30, seed=2).queries
    texts = {d.doc_id: d.contents for d in corpus}
    for qid, text in one.queries.items():
        assert all(text in texts[d] for d in one.sources[qid])
    assert one.passages == 30  # 30 tuples over 48 passages: 30 passages, one query each


def test_title_queries_merge_shared_titles_and_need_titles() -> None:
    docs = Corpus.from_documents([Document("a", "x", title="Vitamin D"),
                                  Document("b", "y", title="Vitamin  D"), Document("c", "z")])
    pseudo = write_pseudo_queries(docs, "title", tuples=10, seed=0)
    assert list(pseudo.queries.values()) == ["Vitamin D"]
    assert list(pseudo.sources.values()) == [["a", "b"]]
    from cormorant.errors import DataError

    with pytest.raises(DataError, match="no document of the corpus has a title"):
        write_pseudo_queries(Corpus.from_documents([Document("c", "z")]), "title", 10, 0)


def test_language_model_queries_come_from_the_synth_queries_path(corpus: Corpus,
                                                                  tmp_path: Path) -> None:
    examples = tmp_path / "examples.jsonl"
    examples.write_text(json.dumps({"query": "heart effect", "document": "heart study"}) + "\n")
    pseudo = write_pseudo_queries(corpus, "lm", tuples=8, seed=0, examples=examples, llm="echo")
    texts = {d.doc_id: d.contents for d in corpus}
    assert len(pseudo.queries) == 8
    for qid, text in pseudo.queries.items():  # the echo model repeats the prompt's document
        (source,) = pseudo.sources[qid]
        assert text.startswith(texts[source].split()[0])


# --- tuples, negatives, teacher margins ---------------------------------------------------------

def test_tuples_cycle_the_shuffled_queries_and_draw_negatives_from_the_union(corpus) -> None:
    data = pseudo_set(corpus)
    qids = sorted(data.queries)
    order = query_order(qids, 3 * len(qids) + 2, seed=0)
    assert order[:len(qids)] == order[len(qids):2 * len(qids)] and sorted(order[:len(qids)]) == qids
    docs = sorted(data.texts)
    dense = Negatives({q: [ScoredNegative(d, 1.0) for d in docs[:3]] for q in qids},
                      dict(data.positives), "dense")
    bm25 = Negatives({q: [ScoredNegative(d, 1.0) for d in docs[2:6]] for q in qids},
                     dict(data.positives), "bm25")
    pooled = union([dense, bm25], data)
    for q in qids:
        assert set(pooled.ids(q)) == set(docs[:6]) - data.relevant(q)
    tuples = draw_tuples(data, pooled, order, seed=0)
    assert [q for q, _, _ in tuples] == order
    for q, pos, neg in tuples:
        assert pos in data.positives[q] and neg not in data.relevant(q)
        assert neg in docs[:6]
    drawn = {neg for _, _, neg in tuples}
    assert len(drawn) == 6  # every document of the union is drawn (~2k draws over 6)
    assert tuples == draw_tuples(data, pooled, order, seed=0)


def test_each_text_is_truncated_on_its_own_before_the_teacher_reads_it(corpus,
                                                                       tiny_encoder) -> None:
    from cormorant.retrieval.encoders import load_sentence_transformer

    tokenizer = load_sentence_transformer(str(tiny_encoder)).tokenizer
    assert truncate_tokens("heart study of the liver", tokenizer, 2) == "heart study"
    assert truncate_tokens("heart", tokenizer, 2) == "heart"
    data = pseudo_set(corpus)
    tuples = draw_tuples(data, Negatives({}, {}), query_order(sorted(data.queries), 20, 0), 0)
    view = teacher_view(data, tuples, tokenizer, limit=3)
    for text in [*view.queries.values(), *view.texts.values()]:
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 3
    for d, text in view.texts.items():  # a prefix of the document, not of a (query, doc) pair
        assert data.texts[d].startswith(text)


class RecordingTeacher:
    """Scores from a table; records the texts it was given."""

    fingerprint = "recording"

    def __init__(self, scores: dict[tuple[str, str], float]) -> None:
        self.scores, self.seen = scores, []

    def score_pairs(self, data: TrainingSet, pairs: list[tuple[str, str]]) -> np.ndarray:
        self.seen += [(data.queries[q], data.texts[d]) for q, d in pairs]
        return np.array([self.scores[p] for p in pairs], dtype=np.float32)


def test_label_is_teacher_positive_minus_teacher_negative(corpus, isolated_cache) -> None:
    data = pseudo_set(corpus)
    q = sorted(data.queries)[0]
    pos = data.positives[q][0]
    negs = [d for d in sorted(data.texts) if d not in data.relevant(q)][:2]
    teacher = RecordingTeacher({(q, pos): 7.5, (q, negs[0]): 2.0, (q, negs[1]): 9.0})
    tuples = [(q, pos, negs[0]), (q, pos, negs[1]), (q, pos, negs[0])]
    margins = teacher_margins(teacher, data, tuples)
    np.testing.assert_allclose(margins, [5.5, -1.5, 5.5])
    assert len(teacher.seen) == 3  # each distinct pair scored once
    # A pipeline teacher's scores are min-max scaled per query first (to [0, factor]):
    # 7.5, 2.0, 9.0 -> 5.5/7, 0, 1 (x 7): margins 5.5 and -1.5 become 5.5 and -1.5 over 7 x 7.
    scaled = teacher_margins(teacher, data, tuples, norm="minmax", factor=7.0)
    np.testing.assert_allclose(scaled, [5.5, -1.5, 5.5], rtol=1e-5)
    unscored = RecordingTeacher({(q, pos): 7.5, (q, negs[0]): np.nan, (q, negs[1]): 9.0})
    unscored.fingerprint = "recording-with-a-gap"  # scores are cached by fingerprint
    assert np.isnan(teacher_margins(unscored, data, tuples, "minmax", 7.0)).tolist() == \
        [True, False, True]


def test_margin_mse_matches_a_hand_computation_and_ignores_a_shift() -> None:
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    p = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    n = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    margins = student_margin(q, p, n, scale=10.0)
    torch.testing.assert_close(margins, torch.tensor([8.0, 2.0]))
    teacher = torch.tensor([5.0, 3.0])
    assert margin_mse(margins, teacher).item() == pytest.approx(((8 - 5) ** 2 + (2 - 3) ** 2) / 2)
    # Teacher scores shifted by a constant leave the margins, and so the loss, unchanged.
    t_pos, t_neg = torch.tensor([10.0, 4.0]), torch.tensor([5.0, 1.0])
    assert margin_mse(margins, t_pos - t_neg).item() == \
        margin_mse(margins, (t_pos + 3) - (t_neg + 3)).item()


def test_margin_mse_loss_module_reads_each_rows_margin(tiny_encoder) -> None:
    from cormorant.retrieval.encoders import load_sentence_transformer

    model = load_sentence_transformer(str(tiny_encoder))
    texts = [["heart study", "sleep"], ["heart marker", "sleep marker"], ["bone", "skin"]]
    features = [model.tokenize(t) for t in texts]
    loss = MarginMSELoss(model, np.array([0.0, 4.0, -2.0]), scale=20.0)
    with torch.no_grad():
        got = loss(features, torch.tensor([2, 1])).item()
        q, p, n = (model(f)["sentence_embedding"] for f in features)
    expected = margin_mse(student_margin(q, p, n, 20.0), torch.tensor([-2.0, 4.0])).item()
    assert got == pytest.approx(expected, rel=1e-5) and got > 0


def test_the_gpl_plan_holds_steps_times_batch_tuples_with_their_margins(
        corpus_dir, corpus, tiny_encoder, tmp_path, isolated_cache) -> None:
    from cormorant.retrieval.encoders import load_sentence_transformer

    config = TrainConfig(dataset=corpus_dir, out=tmp_path / "o", base_model=str(tiny_encoder),
                         unsupervised=True, batch_size=4, max_steps=3, gpl_miners="dense,bm25",
                         gpl_negatives=5)
    assert planned_steps(config, "cpu") == 3
    data = write_pseudo_queries(corpus, "span", 12, 0).training_set(
        corpus, {d.doc_id: d.contents for d in corpus})
    model = load_sentence_transformer(str(tiny_encoder))
    plan = GPL().plan(Context(config, data, str(tiny_encoder), tmp_path), model)
    assert len(plan.rows["query"]) == 12 and plan.steps_per_epoch == 3
    assert plan.notes["tuples"] == 12 and plan.notes["miners"] == ["dense", "bm25"]
    for qid in data.queries:
        mined = plan.negatives.ids(qid)
        assert not set(mined) & data.relevant(qid)
        assert len(mined) <= 2 * 5  # each miner's top 5, positives removed, pooled
    assert plan.loss.margins.shape == (12,)


# --- the command ------------------------------------------------------------------------------

def test_train_unsupervised_writes_a_model_from_a_corpus_only_folder(corpus_dir, tiny_encoder,
                                                                     tmp_path,
                                                                     isolated_cache) -> None:
    from cormorant.retrieval.assemble import build_pipeline

    out = tmp_path / "gpl"
    done = run_cli("train", "--dataset", corpus_dir, "--unsupervised", "--base-model",
                   tiny_encoder, "--batch-size", "4", "--max-steps", "2", "--seed", "3",
                   "--out", out)
    assert done.code == 0 and done.traceback is None, done.err
    assert "trained gpl for 2 steps" in done.out
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["strategy"] == "gpl" and summary["tuples"] == 8
    assert summary["dev_ndcg@10"] == [] and summary["config"]["unsupervised"] is True
    negatives = [json.loads(line) for line in
                 (out / "training" / "negatives.jsonl").read_text().splitlines()]
    assert negatives and all(n["query_id"].startswith("gpl-") for n in negatives)
    from cormorant.data import load_dataset

    run = build_pipeline(f"dense(model={out})", load_dataset(corpus_dir).corpus).search(
        {"q": "heart"}, k=3)
    assert len(run["q"]) == 3


@pytest.mark.parametrize("args, message", [
    (["--kind", "cross-encoder"], "--unsupervised trains a bi-encoder"),
    (["--negatives", "star"], "--negatives star needs judged queries"),
    (["--dev-split", "test"], "--dev-split cannot be used"),
    (["--pseudo-queries", "lm"], "--pseudo-queries lm needs --examples"),
    (["--pseudo-queries", "words"], "--pseudo-queries must be one of span, title, lm"),
])
def test_bad_unsupervised_input_is_one_line_and_writes_nothing(corpus_dir, tiny_encoder,
                                                               tmp_path, args, message) -> None:
    out = tmp_path / "never"
    done = run_cli("train", "--dataset", corpus_dir, "--unsupervised", "--base-model",
                   tiny_encoder, "--max-steps", "1", "--out", out, *args)
    assert done.code not in (0, None) and done.traceback is None
    assert any(message in line for line in done.error_lines()), done.err
    assert not out.exists()


def test_unsupervised_ignores_the_folders_queries_and_has_no_dev_set(tmp_path) -> None:
    from cormorant.training.trainer import split_dev

    full = write_training_beir(tmp_path / "full")
    config = TrainConfig(dataset=full, out=tmp_path / "o", unsupervised=True, batch_size=4,
                         max_steps=5, pseudo_queries="title")
    assert config.negatives == "gpl"
    data, dev = split_dev(config)
    assert dev is None
    assert all(q.startswith("gpl-") for q in data.queries) and len(data.queries) == 20
    from cormorant.data import load_dataset

    titles = {d.doc_id: d.title for d in load_dataset(full).corpus}
    for qid, text in data.queries.items():  # each query is its one source passage's title
        assert [titles[d] for d in data.positives[qid]] == [text]
