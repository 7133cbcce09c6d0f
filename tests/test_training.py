"""Training strategies on a tiny random model and a small synthetic collection: what each one
promises (batches, negatives, frozen parts), the command line, and bad input."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cormorant.training.config import TrainConfig
from cormorant.training.data import TrainingSet
from cormorant.training.negatives import MiningConfig, Negatives, mine, select_negatives
from cormorant.training.tas_balanced import TASBalancedBatchSampler, margin_bins
from tests.training_data import write_training_beir


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_beir(tmp_path_factory.mktemp("train") / "ds")


@pytest.fixture(scope="module")
def data(train_dir: Path) -> TrainingSet:
    return TrainingSet.load(train_dir, "train")


def config(train_dir: Path, out: Path, encoder: Path, **changes: object) -> TrainConfig:
    base = {"dataset": train_dir, "out": out, "base_model": str(encoder), "batch_size": 4,
            "epochs": 1, "dev_fraction": 0.2}
    return TrainConfig.from_dict({**base, **changes})


# --- mining -------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdefghij"), st.floats(-5, 5)), max_size=12,
                unique_by=lambda x: x[0]),
       st.sets(st.sampled_from("abcdefghij"), min_size=1, max_size=3),
       st.integers(0, 3), st.sampled_from([None, 0.1, 0.5]), st.sampled_from(["top", "random"]))
def test_mining_never_returns_a_positive(ranked, relevant, range_min, margin, sampling) -> None:
    ranked = sorted(ranked, key=lambda x: -x[1])
    chosen = select_negatives(ranked, relevant, 2.0,
                              MiningConfig(num_negatives=4, range_min=range_min,
                                           relative_margin=margin, sampling=sampling))
    assert not {n.doc_id for n in chosen} & relevant
    assert len(chosen) <= 4


def test_mining_filters_apply_margins_then_range_min() -> None:
    ranked = [("p", 10.0), ("a", 9.6), ("b", 9.0), ("c", 8.0), ("d", 5.0)]
    cfg = MiningConfig(num_negatives=5, relative_margin=0.05)  # keep score <= 0.95 * 10
    assert [n.doc_id for n in select_negatives(ranked, {"p"}, 10.0, cfg)] == ["b", "c", "d"]
    cfg = MiningConfig(num_negatives=5, absolute_margin=1.5)  # keep score <= 10 - 1.5
    assert [n.doc_id for n in select_negatives(ranked, {"p"}, 10.0, cfg)] == ["c", "d"]
    # range_min skips the best *surviving* candidates, after the margin filter.
    cfg = MiningConfig(num_negatives=5, relative_margin=0.05, range_min=1)
    assert [n.doc_id for n in select_negatives(ranked, {"p"}, 10.0, cfg)] == ["c", "d"]


def test_bm25_mining_finds_hard_negatives_and_round_trips(data: TrainingSet, tmp_path: Path) -> None:
    negatives = mine(data, "bm25", MiningConfig(num_negatives=3))
    for qid, negs in negatives.by_query.items():
        assert negs and not set(negatives.ids(qid)) & data.relevant(qid)
        topic = data.queries[qid].split()[0]
        assert topic in data.texts[negs[0].doc_id]  # the best negative shares the topic
    negatives.save(tmp_path / "neg.jsonl")
    again = Negatives.load(tmp_path / "neg.jsonl", data)
    assert again.by_query == negatives.by_query and again.method == "bm25"


def test_cross_encoder_pairs_are_one_positive_to_three_negatives_per_query_and_epoch(
        data: TrainingSet, tmp_path: Path) -> None:
    from cormorant.training.cross_encoder import NEGATIVES_PER_QUERY, pair_rows

    negatives = mine(data, "bm25", MiningConfig(num_negatives=5))
    cfg = TrainConfig(dataset=tmp_path, out=tmp_path / "o", epochs=2)
    rows = pair_rows(data, negatives, NEGATIVES_PER_QUERY, cfg)
    text_of = {text: qid for qid, text in data.queries.items()}
    by_doc = {text: doc for doc, text in data.texts.items()}
    groups = Counter((text_of[q], label) for q, label in zip(rows["query"], rows["label"], strict=True))
    for qid in data.queries:
        assert groups[(qid, 1.0)] == 2 and groups[(qid, 0.0)] == 2 * NEGATIVES_PER_QUERY
    for query, document, label in zip(rows["query"], rows["document"], rows["label"],
                                       strict=True):
        relevant = by_doc[document] in data.relevant(text_of[query])
        assert relevant == (label == 1.0)  # a negative is never a judged positive


def test_listwise_cross_encoder_groups_hold_one_positive_and_distinct_negatives(
        data: TrainingSet, tmp_path: Path) -> None:
    from cormorant.training.cross_encoder import NEGATIVES_PER_QUERY, group_rows

    # A pool of two negatives for a group of three: the third is a random non-relevant document.
    negatives = mine(data, "bm25", MiningConfig(num_negatives=2))
    rows = group_rows(data, negatives, NEGATIVES_PER_QUERY,
                      TrainConfig(dataset=tmp_path, out=tmp_path / "o", epochs=2))
    columns = ["query", "positive"] + [f"negative_{i + 1}" for i in range(NEGATIVES_PER_QUERY)]
    assert list(rows) == columns  # the positive second: the listwise loss reads it so
    assert Counter(rows["query"]) == Counter({text: 2 for text in data.queries.values()})
    text_of = {text: qid for qid, text in data.queries.items()}
    by_doc = {text: doc for doc, text in data.texts.items()}
    for i, query in enumerate(rows["query"]):
        relevant = data.relevant(text_of[query])
        assert by_doc[rows["positive"][i]] in relevant
        drawn = [by_doc[rows[c][i]] for c in columns[2:]]
        assert len(set(drawn)) == NEGATIVES_PER_QUERY and not set(drawn) & relevant


def test_negatives_file_with_unknown_documents_is_refused(data: TrainingSet, tmp_path: Path) -> None:
    qid = next(iter(data.queries))
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"query_id": qid, "negatives": [{"doc_id": "nope", "score": 1}]}) + "\n")
    with pytest.raises(Exception, match="not in the corpus"):
        Negatives.load(path, data)
    pos = data.positives[qid][0]
    path.write_text(json.dumps({"query_id": qid, "negatives": [{"doc_id": pos, "score": 1}]}) + "\n")
    assert Negatives.load(path, data).ids(qid) == []  # a positive is never kept as a negative


# --- TAS-Balanced ----------------------------------------------------------------------------

def test_margin_bins_are_equal_width_with_the_maximum_in_the_last() -> None:
    bins = margin_bins([0.0, 0.05, 0.95, 1.0, 10.0])
    assert bins == [0, 0, 0, 1, 9]  # width 1.0: 1.0 opens the second bin


def test_tas_batches_come_from_one_cluster_and_spread_over_margin_bins() -> None:
    rng = random.Random(0)
    queries, margins, cluster = [], [], []
    for q in range(40):
        cluster.append(q % 2)  # two clusters of 20 queries, larger than the batch
        for m in [0.0, 1.0] + [rng.uniform(0, 0.2) for _ in range(8)] + [5.0, 9.0]:
            queries.append(q)
            margins.append(m)
    sampler = TASBalancedBatchSampler(queries, margins, cluster, batch_size=8, seed=1, batches=400)
    picked_bins = Counter()
    for batch in sampler:
        assert len({cluster[queries[r]] for r in batch}) == 1
        assert len({queries[r] for r in batch}) == 8
        for r in batch:
            rows = [i for i, qq in enumerate(queries) if qq == queries[r]]
            picked_bins[margin_bins([margins[i] for i in rows])[rows.index(r)]] += 1
    # Each query has 4 non-empty bins (0, 1, 5, 9); most of its pairs sit in bin 0, yet each
    # bin is drawn about a quarter of the time.
    assert set(picked_bins) == {0, 1, 5, 9}
    for count in picked_bins.values():
        assert abs(count / sum(picked_bins.values()) - 0.25) < 0.03


# --- strategies through the Trainer ----------------------------------------------------------

def test_star_batches_hold_static_hard_and_in_batch_negatives(train_dir, tiny_encoder, tmp_path) -> None:
    from cormorant.training.strategies import STAR, Context

    cfg = config(train_dir, tmp_path / "m", tiny_encoder, negatives="star", star_pool=5)
    data = TrainingSet.load(train_dir, "train")
    ctx = Context(cfg, data, str(tiny_encoder), tmp_path)
    plan = STAR().plan(ctx, STAR().model(ctx))
    pool = plan.negatives
    qid_of = {text: q for q, text in data.queries.items()}
    for query, negative in zip(plan.rows["query"], plan.rows["negative"], strict=True):
        qid = qid_of[query]
        assert negative in {data.texts[d] for d in pool.ids(qid)}  # one static hard negative
        assert len(pool.ids(qid)) == 5
    # The loss scores each query against all B positives and all B hard negatives, masking
    # only documents relevant to it (its own positive included).
    loss = plan.loss
    rows = loss.rows[:4]
    docs = rows[:, 1].tolist() + rows[:, 2].tolist()
    mask = loss.valid_pairs(rows[:, 0].tolist(), docs)
    assert mask.shape == (4, 8)
    for i in range(4):
        assert not mask[i, i]  # the query's own positive is never its negative
        expected = [d not in loss.relevant[int(rows[i, 0])] for d in docs]
        assert mask[i].tolist() == expected  # every other batch document is a random negative
        assert mask[i, :4].any() and mask[i, 4:].any()  # random and hard negatives both


def test_adore_keeps_documents_fixed_and_retrieves_with_the_current_query_encoder(
        train_dir, tiny_encoder, tmp_path) -> None:
    import torch

    from cormorant.training.strategies import ADORE, Context
    from cormorant.training.trainer import train

    cfg = config(train_dir, tmp_path / "adore", tiny_encoder, negatives="adore", epochs=2,
                 learning_rate=5e-3)
    data = TrainingSet.load(train_dir, "train")
    ctx = Context(cfg, data, str(tiny_encoder), tmp_path / "w")
    model = ADORE().model(ctx)
    plan = ADORE().plan(ctx, model)
    vectors_before = plan.loss.doc_vectors.clone()
    # on the model's device, as the Trainer's collator puts them (a GPU machine's CUDA)
    features = [{k: v.to(model.device) if isinstance(v, torch.Tensor) else v
                 for k, v in model.tokenize(plan.rows["query"][:6]).items()}]
    plan.loss(features, torch.arange(6))
    first = plan.loss.last_negatives
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    plan.loss(features, torch.arange(6))
    assert plan.loss.last_negatives != first  # negatives follow the query encoder
    assert torch.equal(plan.loss.doc_vectors, vectors_before)

    result = train(cfg)
    weights = "model.safetensors"
    assert (result.out / "document_encoder" / weights).read_bytes() == \
        (Path(tiny_encoder) / weights).read_bytes()  # the document tower is untouched
    assert (result.out / weights).read_bytes() != (Path(tiny_encoder) / weights).read_bytes()
    assert json.loads((result.out / "cormorant.json").read_text())["role"] == "query-encoder"


def test_trained_model_works_as_dense_stage_and_query_tower_uses_its_document_index(
        train_dir, tiny_encoder, tmp_path) -> None:
    from cormorant.data import load_dataset
    from cormorant.retrieval.assemble import build_pipeline, open_index, save_index
    from cormorant.training.trainer import train

    distilled = train(config(train_dir, tmp_path / "small", tiny_encoder,
                             negatives="distill-query", student_layers=1,
                             distill_epochs=1)).out
    corpus = load_dataset(train_dir).corpus
    stage = build_pipeline(f"dense(model={distilled})", corpus).stage
    assert stage.encoder.path == str(distilled / "document_encoder")  # documents: the teacher
    assert stage.query_encoder.path == str(distilled)  # queries: the one-layer student
    run = stage.search({"q": "heart marker0x1 effect"}, k=3)
    assert len(run["q"]) == 3
    save_index(f"dense(model={distilled})", corpus, tmp_path / "index")
    again = open_index(tmp_path / "index").pipeline.search({"q": "heart marker0x1 effect"}, k=3)
    assert list(again["q"]) == list(run["q"])


def test_tas_balanced_rows_are_the_drawn_pairs_and_carry_the_teachers_margins(
        train_dir, tiny_encoder, tmp_path) -> None:
    from cormorant.training.strategies import Context, TASBalanced
    from cormorant.training.teacher import cached_scores, load_teacher

    cfg = config(train_dir, tmp_path / "m", tiny_encoder, negatives="tas-balanced",
                 teacher=str(tiny_encoder), clusters=2)
    data = TrainingSet.load(train_dir, "train")
    ctx = Context(cfg, data, str(tiny_encoder), tmp_path)
    plan = TASBalanced().plan(ctx, TASBalanced().model(ctx))
    batches = list(plan.batch_sampler(dataset=None, batch_size=cfg.batch_size))
    rows = len(plan.rows["label"])
    # The dataset holds exactly the drawn pairs, far fewer than all candidates.
    assert {r for batch in batches for r in batch} == set(range(rows))
    assert plan.notes["pairs_drawn"] == rows < plan.notes["pairs"]
    assert all(len(batch) == cfg.batch_size for batch in batches)
    # Each row's margin is the teacher's T(q, d+) - T(q, d-) for that row's texts.
    qid_of = {text: q for q, text in data.queries.items()}
    doc_of = {text: d for d, text in data.texts.items()}
    for row in range(rows):
        qid = qid_of[plan.rows["query"][row]]
        pos, neg = doc_of[plan.rows["positive"][row]], doc_of[plan.rows["negative"][row]]
        assert pos in data.positives[qid] and neg not in data.positives[qid]
        expected = cached_scores(load_teacher(str(tiny_encoder)), data, [(qid, pos), (qid, neg)])
        label = plan.rows["label"][row]
        assert plan.loss.margins[label].item() == pytest.approx(float(expected[0] - expected[1]),
                                                                abs=1e-4)
    # --max-steps beyond the epoch draws fresh batches for every step, not a replay.
    longer = config(train_dir, tmp_path / "m2", tiny_encoder, negatives="tas-balanced",
                    teacher=str(tiny_encoder), clusters=2, max_steps=3 * len(batches))
    ctx = Context(longer, data, str(tiny_encoder), tmp_path)
    plan = TASBalanced().plan(ctx, TASBalanced().model(ctx))
    replayed = list(plan.batch_sampler(dataset=None, batch_size=cfg.batch_size))
    assert len(replayed) == 3 * len(batches)
    assert {tuple(b) for b in replayed[len(batches):]} != {tuple(b) for b in replayed[:len(batches)]}


def test_tas_balanced_and_cross_encoder_train_and_load(train_dir, tiny_encoder, tmp_path) -> None:
    from cormorant.data import load_dataset
    from cormorant.retrieval.assemble import build_pipeline
    from cormorant.training.teacher import CrossEncoderTeacher, load_teacher
    from cormorant.training.trainer import train

    ce = train(config(train_dir, tmp_path / "ce", tiny_encoder, kind="cross-encoder",
                      negatives="bm25")).out
    tas = train(config(train_dir, tmp_path / "tas", tiny_encoder, negatives="tas-balanced",
                       teacher=str(ce), clusters=3))
    summary = json.loads((tas.out / "training" / "summary.json").read_text())
    assert summary["clusters"] == 3 and summary["pairs"] > 0
    assert isinstance(load_teacher(str(ce)), CrossEncoderTeacher)  # not taken for a bi-encoder
    corpus = load_dataset(train_dir).corpus
    pipe = build_pipeline(f"bm25 % 5 >> rerank(model={ce})", corpus)
    run = pipe.search({"q": "heart marker0x1 effect"}, k=5)
    assert len(run["q"]) == 5


def test_cross_encoder_on_a_bi_encoder_keeps_its_pooling_and_speeds_up_only_the_head(
        train_dir, tiny_encoder, tmp_path) -> None:
    import re

    from sentence_transformers.base.modules import Dense
    from sentence_transformers.sentence_transformer.modules import Pooling

    from cormorant.training.cross_encoder import head_learning_rates, load_base

    model = load_base(str(tiny_encoder))
    pooling = next(m for m in model if isinstance(m, Pooling))
    assert pooling.pooling_mode == "mean"  # the tiny encoder's own pooling, not [CLS]
    head = next(m for m in model if isinstance(m, Dense))
    assert head.out_features == 1 and head.module_output_name == "scores"
    mapping = head_learning_rates(model, config(train_dir, tmp_path / "x", tiny_encoder,
                                                head_learning_rate=5e-4))
    (pattern, rate), = mapping.items()
    # The Trainer matches these patterns against the loss module's names ("model." + name).
    fast = {n for n, _ in model.named_parameters() if re.search(pattern, f"model.{n}")}
    assert rate == 5e-4 and fast == {f"2.linear.{n}" for n, _ in head.linear.named_parameters()}


def test_cross_encoder_groups_of_mined_negatives_only(train_dir, tiny_encoder, tmp_path) -> None:
    from cormorant.errors import CormorantError
    from cormorant.training.trainer import train

    # LCE's groups: the positive and seven mined negatives, no other queries' documents.
    result = train(config(train_dir, tmp_path / "lce", tiny_encoder, kind="cross-encoder",
                          negatives="bm25", cross_encoder_mined=7, cross_encoder_in_batch=0,
                          batch_size=16, max_steps=2))
    summary = json.loads((result.out / "training" / "summary.json").read_text())
    assert summary["group"] == {"mined": 7, "in_batch": 0} and result.steps == 2
    from cormorant.training.cross_encoder import listwise_loss, load_base

    model = load_base(str(tiny_encoder))
    columns = [["pos a", "pos b", "pos c"], ["neg a", "neg b", "neg c"]]
    assert list(listwise_loss(model, 0).get_in_batch_negatives(["a", "b", "c"], columns)) == []
    assert len(list(listwise_loss(model, 2).get_in_batch_negatives(["a", "b", "c"], columns))) == 2
    with pytest.raises(CormorantError, match="cross_encoder_in_batch must be 0 or more"):
        config(train_dir, tmp_path / "x", tiny_encoder, kind="cross-encoder",
               cross_encoder_in_batch=-1)


@pytest.mark.parametrize("kind, negatives, extra", [
    ("bi-encoder", "random", {}), ("cross-encoder", "bm25", {}),
    ("cross-encoder", "bm25", {"cross_encoder_loss": "bce"})])
def test_fractional_epochs_train_that_share_of_a_pass(train_dir, tiny_encoder, tmp_path, kind,
                                                      negatives, extra) -> None:
    from cormorant.training.trainer import train

    def steps(epochs: float) -> int:
        out = tmp_path / f"{kind}-{epochs}"
        return train(config(train_dir, out, tiny_encoder, kind=kind, negatives=negatives,
                            epochs=epochs, dev_fraction=0, **extra)).steps

    one, half, one_and_half = steps(1), steps(0.5), steps(1.5)
    assert one >= 4
    assert half == pytest.approx(one / 2, abs=1) and one_and_half == pytest.approx(1.5 * one, abs=1)


def test_training_is_seeded_and_logs_loss_and_dev_metrics(train_dir, tiny_encoder, tmp_path) -> None:
    from cormorant.training.trainer import train

    one = train(config(train_dir, tmp_path / "a", tiny_encoder, negatives="bm25", epochs=2))
    two = train(config(train_dir, tmp_path / "b", tiny_encoder, negatives="bm25", epochs=2))
    assert one.losses == two.losses and len(one.losses) >= 2
    assert (one.out / "model.safetensors").read_bytes() == (two.out / "model.safetensors").read_bytes()
    log = (one.out / "training" / "logs" / "train_log.csv").read_text()
    assert "loss" in log and "eval_dev_ndcg@10" in log
    assert list((one.out / "training" / "logs" / "tensorboard").glob("events.*"))
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ  # its folder set on the callback instead
    # Before training (step 0, the starting point) and after each of the two epochs.
    assert [step for step, _ in one.dev_history] == [0, 9, 17]
    assert not (tmp_path / "a.work").exists()


def test_start_was_best_compares_the_start_with_every_checkpoint() -> None:
    from cormorant.training.trainer import start_was_best

    assert start_was_best([(0, 0.7), (10, 0.6), (20, 0.7)])  # a tie keeps the start
    assert not start_was_best([(0, 0.7), (10, 0.6), (20, 0.71)])
    assert not start_was_best([(10, 0.6)])  # resumed: no start to compare with


def test_a_run_that_only_hurts_dev_writes_the_starting_weights(train_dir, tiny_encoder,
                                                                tmp_path) -> None:
    from safetensors.torch import load_file

    from cormorant.training.trainer import train

    # A learning rate this high wrecks the tiny encoder in its first steps.
    result = train(config(train_dir, tmp_path / "wrecked", tiny_encoder, negatives="in-batch",
                          learning_rate=5.0, warmup_ratio=0.0))
    (start, *later) = [value for _, value in result.dev_history]
    assert max(later) < start
    summary = json.loads((result.out / "training" / "summary.json").read_text())
    assert summary["kept"] == "start"
    written = load_file(result.out / "model.safetensors")
    base = load_file(tiny_encoder / "model.safetensors")
    assert written.keys() == base.keys()
    assert all(torch.equal(written[k], base[k]) for k in base)


def test_resume_continues_from_the_last_checkpoint(train_dir, tiny_encoder, tmp_path) -> None:
    from cormorant.training.trainer import train, work_dir

    cfg = config(train_dir, tmp_path / "r", tiny_encoder, negatives="in-batch", epochs=2,
                 dev_fraction=0.0, eval_steps=2)
    work = work_dir(cfg.out)
    # A run that died after its first checkpoint: only OUT.work exists, never OUT.
    import dataclasses

    partial = train(dataclasses.replace(cfg, max_steps=2, out=tmp_path / "first"))
    assert partial.steps == 2
    full = train(dataclasses.replace(cfg, resume=True))
    assert full.steps >= 8 and full.out.is_dir() and not work.exists()


def test_dev_view_keeps_the_best_judged_positives_of_a_query_with_many(data: TrainingSet) -> None:
    from dataclasses import replace

    from cormorant.training.evaluation import DevSet

    qid = next(iter(data.queries))
    docs = sorted(data.texts)
    grades = {d: (2 if i < 3 else 1) for i, d in enumerate(docs)}  # every document judged
    dev = replace(data, positives={**data.positives, qid: docs}, qrels={qid: grades})
    view = DevSet.build(dev, depth=5)
    kept = set(view.candidates[qid]) & set(docs[:3])
    assert kept == set(docs[:3])  # the grade-2 positives are all in the view
    assert len(view.candidates[qid]) <= 10 < len(docs)  # 5 from BM25 + at most 5 positives


# --- the command line and bad input ----------------------------------------------------------

def test_every_kind_is_found_by_its_name_and_an_unknown_one_is_refused() -> None:
    from cormorant.errors import CormorantError
    from cormorant.training.kinds import KINDS, training_kind

    assert {name: training_kind(name).name for name in KINDS} == {n: n for n in KINDS}
    with pytest.raises(CormorantError, match="--kind must be one of bi-encoder, cross-encoder"):
        training_kind("colbert")


def test_train_command_has_one_option_per_declared_flag_with_its_help() -> None:
    """The command line is generated from TrainConfig: each flagged field is an option (a
    switch can also be turned off), named as in the README, with the field's help."""
    import dataclasses

    import typer

    from cormorant.cli import app

    params = {p.name: p for p in typer.main.get_command(app).commands["train"].params}
    flagged = [f for f in dataclasses.fields(TrainConfig) if f.metadata["cli"]]
    assert len(flagged) == 27 and set(params) == {f.name for f in flagged} | {"config"}
    for field in flagged:
        option = params[field.name]
        assert f"--{field.name.replace('_', '-')}" in option.opts
        assert option.help.startswith(field.metadata["help"]) and option.default is None
    assert params["dataset"].opts == ["--dataset", "-d"]
    assert params["resume"].secondary_opts == ["--no-resume"]
    assert "Default: 32." in params["batch_size"].help


def test_config_values_are_converted_by_type_and_checked_with_one_line_errors(tmp_path) -> None:
    from cormorant.errors import CormorantError

    conf = tmp_path / "train.yaml"
    conf.write_text("dataset: data/x\nout: models/y\nnegatives-file: neg.jsonl\nresume: true\n")
    loaded = TrainConfig.from_file(conf)
    assert loaded.negatives_file == Path("neg.jsonl") and loaded.out == Path("models/y")
    assert TrainConfig.from_file(conf, resume=False).resume is False  # --no-resume wins
    for text, message in [("batch_size: abc", "--batch-size takes a whole number, got 'abc'"),
                          ("epochs: yes", "--epochs takes a number, got True"),
                          ("kind: colbert", "--kind must be one of bi-encoder, cross-encoder,"
                                            " late-interaction, seal, tildev2, got 'colbert'"),
                          ("dev_fraction: 1", "dev_fraction must be in [0, 1)"),
                          ("teacher: [a, b]", "--teacher takes text, got ['a', 'b']")]:
        conf.write_text(f"dataset: d\nout: o\n{text}\n")
        with pytest.raises(CormorantError) as raised:
            TrainConfig.from_file(conf)
        assert str(raised.value) == message


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cormorant.cli", *args], capture_output=True,
                          text=True)


def test_cli_trains_from_a_config_file(train_dir, tiny_encoder, tmp_path) -> None:
    conf = tmp_path / "train.yaml"
    conf.write_text(f"dataset: {train_dir}\nnegatives: bm25\nbase-model: {tiny_encoder}\n"
                    "batch_size: 4\nnum_negatives: 2\ndev_fraction: 0.2\n")
    done = cli("train", "--config", str(conf), "--out", str(tmp_path / "m"), "--max-steps", "3")
    assert done.returncode == 0, done.stderr
    assert "trained bm25 for 3 steps" in done.stdout
    # A quiet terminal: one line per dev evaluation, no raw Trainer dicts, no weight-loading bar.
    assert "{'loss'" not in done.stderr + done.stdout and "{'eval_" not in done.stderr + done.stdout
    assert "Loading weights" not in done.stderr
    lines = done.stderr.splitlines()
    assert [line for line in lines if line.startswith("step 3/3  dev nDCG@10 ")], done.stderr
    summary = json.loads((tmp_path / "m" / "training" / "summary.json").read_text())
    assert summary["config"]["num_negatives"] == 2 and summary["config"]["max_steps"] == 3
    negatives = (tmp_path / "m" / "training" / "negatives.jsonl").read_text().splitlines()
    assert all(len(json.loads(line)["negatives"]) <= 2 for line in negatives)


@pytest.mark.parametrize("negatives", ["star", "in-batch"])
def test_torchrun_data_parallel_training_writes_one_model(train_dir, tiny_encoder, tmp_path,
                                                         negatives) -> None:
    """Two CPU processes (gloo) stand in for two GPUs: the contrastive loss is built to gather
    every rank's embeddings, and only the main process writes the model and reports."""
    import os

    from cormorant.data import load_dataset
    from cormorant.retrieval.assemble import build_pipeline

    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
         "-m", "cormorant.cli", "train", "--dataset", str(train_dir), "--negatives", negatives,
         "--base-model", str(tiny_encoder), "--out", str(out), "--batch-size", "4"],
        capture_output=True, text=True, timeout=300,
        # CPU processes even on a GPU machine: two ranks cannot share one GPU over NCCL
        # (test_training_gpu.py launches one process per GPU there).
        env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(f"trained {negatives} for") == 1
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["processes"] == 2
    assert "gloo" in summary["hardware"]["backend"]  # "gloo", or "cpu:gloo,..." per device
    if negatives == "in-batch":  # decided when the loss is built, before the Trainer starts
        assert summary["gathered_across_processes"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # no work dir, no temp copy
    run = build_pipeline(f"dense(model={out})", load_dataset(train_dir).corpus).search(
        {"q": "heart marker0x1 effect"}, k=3)
    assert len(run["q"]) == 3


@pytest.mark.parametrize("args, message", [
    (["--split", "dev"], "has no split 'dev'"),
    (["--base-model", "/nonexistent/model"], "cannot load encoder"),
    (["--negatives", "magic"], "unknown strategy 'magic'"),
    (["--negatives", "tas-balanced"], "tas-balanced needs --teacher"),
    (["--batch-size", "1"], "--batch-size must be at least 2"),
    (["--max-time", "-1"], "--max-time must be 0 (no limit) or a positive number of minutes"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(train_dir, tiny_encoder, tmp_path, args,
                                                      message) -> None:
    out = tmp_path / "never"
    base = ["train", "--dataset", str(train_dir), "--out", str(out)]
    if "--base-model" not in args:
        base += ["--base-model", str(tiny_encoder)]
    done = cli(*base, *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # neither OUT nor an empty OUT.work


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_fp16_without_a_gpu_is_refused_before_any_work(train_dir, tiny_encoder, tmp_path) -> None:
    conf = tmp_path / "fp16.yaml"
    conf.write_text("fp16: true\n")
    out = tmp_path / "m"
    done = cli("train", "--dataset", str(train_dir), "--out", str(out), "--base-model",
               str(tiny_encoder), "--config", str(conf))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "fp16: true needs a CUDA GPU" in done.stderr
    assert not out.exists() and not (tmp_path / "m.work").exists()


def test_cli_refuses_queries_without_positives_and_unknown_negative_ids(train_dir, tiny_encoder,
                                                                        tmp_path) -> None:
    ds = tmp_path / "nopos"
    import shutil

    shutil.copytree(train_dir, ds)
    rows = (ds / "qrels" / "train.tsv").read_text().splitlines()
    (ds / "qrels" / "train.tsv").write_text("\n".join(
        [rows[0]] + [r.rsplit("\t", 1)[0] + "\t0" for r in rows[1:]]) + "\n")
    done = cli("train", "-d", str(ds), "-o", str(tmp_path / "x"), "--base-model", str(tiny_encoder))
    assert done.returncode == 2 and "no query with a positive" in done.stderr
    bad = tmp_path / "neg.jsonl"
    bad.write_text(json.dumps({"query_id": "q0-0", "negatives": [{"doc_id": "zzz"}]}) + "\n")
    done = cli("train", "-d", str(train_dir), "-o", str(tmp_path / "y"), "--negatives", "bm25",
               "--negatives-file", str(bad), "--base-model", str(tiny_encoder))
    assert done.returncode == 2 and "not in the corpus" in done.stderr
    assert not (tmp_path / "y").exists() and not (tmp_path / "x").exists()


def test_data_negatives_command_writes_a_file_train_reads(train_dir, tiny_encoder, tmp_path) -> None:
    out = tmp_path / "neg.jsonl"
    done = cli("data", "negatives", "-d", str(train_dir), "-o", str(out), "--method", "bm25",
               "--num-negatives", "2", "--relative-margin", "0.05")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and all(len(r["negatives"]) <= 2 for r in records)
    assert all(not set(n["doc_id"] for n in r["negatives"]) & set(r["positives"]) for r in records)
    done = cli("train", "-d", str(train_dir), "-o", str(tmp_path / "m"), "--negatives", "bm25",
               "--negatives-file", str(out), "--base-model", str(tiny_encoder), "--max-steps", "2")
    assert done.returncode == 0, done.stderr




def test_adore_and_late_interaction_default_epochs_and_an_explicit_count_wins(tmp_path) -> None:
    def epochs(**changes) -> float:
        return TrainConfig(dataset=tmp_path, out=tmp_path / "o", **changes).epochs

    assert epochs() == 1.0 and epochs(negatives="bm25") == 1.0
    assert epochs(negatives="adore") == 10.0  # query-only steps: ten passes cost one pair pass
    assert epochs(negatives="adore", epochs=2) == 2
    assert epochs(kind="late-interaction") == 3.0
    assert TrainConfig(dataset=tmp_path, out=tmp_path / "o",
                       negatives="adore").to_dict()["epochs"] == 10.0
