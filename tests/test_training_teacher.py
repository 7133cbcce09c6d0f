"""Pipeline teachers, per-query scaling of teacher scores, denoised negatives and Margin-MSE
hard-negative training, on a tiny random model and the small synthetic collection."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cormorant.errors import CormorantError
from cormorant.training.config import TrainConfig
from cormorant.training.data import TrainingSet
from cormorant.training.denoise import denoise
from cormorant.training.negatives import Negatives, ScoredNegative
from cormorant.training.teacher import (
    BiEncoderTeacher,
    PipelineTeacher,
    ScoresFileTeacher,
    cached_scores,
    load_teacher,
    scale_per_query,
    teacher_scores,
)
from cormorant.types import Run
from tests.training_data import write_training_beir


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_beir(tmp_path_factory.mktemp("teacher") / "ds")


@pytest.fixture(scope="module")
def data(train_dir: Path) -> TrainingSet:
    return TrainingSet.load(train_dir, "train")


def config(train_dir: Path, out: Path, encoder: Path, **changes: object) -> TrainConfig:
    base = {"dataset": train_dir, "out": out, "base_model": str(encoder), "batch_size": 4,
            "epochs": 1, "dev_fraction": 0.2, "num_negatives": 3}
    return TrainConfig.from_dict({**base, **changes})


def pairs_of(data: TrainingSet, per_query: int = 4) -> list[tuple[str, str]]:
    docs = sorted(data.texts)
    return [(q, d) for i, q in enumerate(sorted(data.queries))
            for d in dict.fromkeys(data.positives[q] + docs[i:i + per_query])]


# --- the pipeline teacher ------------------------------------------------------------------

def test_a_pipeline_teacher_scores_each_candidate_list_as_the_pipeline_rescoring_it(
        data, tiny_encoder) -> None:
    from cormorant.retrieval.bm25 import BM25Retriever
    from cormorant.retrieval.dense import DenseRetriever

    pairs = pairs_of(data)
    candidates = Run()
    for q, d in pairs:
        candidates.setdefault(q, {})[d] = 0.0
    # What rrf must give: 1/(60 + rank) summed over BM25's and dense's ranks among the candidates.
    runs = [BM25Retriever.build(data.corpus).rescore(data.queries, candidates),
            DenseRetriever.build(data.corpus, model=str(tiny_encoder)).rescore(data.queries,
                                                                              candidates)]
    expected = []
    for q, d in pairs:
        ranks = [[doc for doc, _ in r.ranked(q)].index(d) + 1 for r in runs]  # ties as trec_eval
        expected.append(sum(1 / (60 + rank) for rank in ranks))
    teacher = PipelineTeacher(f"rrf(bm25, dense(model={tiny_encoder}))")
    got = teacher.score_pairs(data, pairs)
    assert got.tolist() == pytest.approx(expected, rel=1e-5)
    bm25 = PipelineTeacher("bm25").score_pairs(data, pairs)
    assert bm25.tolist() == pytest.approx([runs[0][q][d] for q, d in pairs], rel=1e-5)


def test_candidates_a_pipeline_leaves_out_are_nan_and_then_unused_never_zero(
        data, isolated_cache) -> None:
    pairs = pairs_of(data)
    raw = PipelineTeacher("bm25 % 2").score_pairs(data, pairs)
    per_query = {q: sum(1 for (p, _), s in zip(pairs, raw, strict=True) if p == q and not math.isnan(s))
                 for q, _ in pairs}
    assert set(per_query.values()) == {2}  # the cut-off kept 2 of each query's 4-5
    scored = teacher_scores("bm25 % 2", data, pairs)
    assert len(scored) == 2 * len(per_query) < len(pairs)
    assert all(math.isfinite(s) for s in scored.values())


def test_teacher_spec_an_existing_path_wins_else_a_pipeline_else_a_clear_error(
        tmp_path, tiny_encoder, monkeypatch) -> None:
    scores = tmp_path / "rrf(bm25, dense)"  # a file named like a pipeline is the file
    scores.write_text("q\td\t1.5\n")
    assert isinstance(load_teacher(str(scores)), ScoresFileTeacher)
    assert isinstance(load_teacher(str(tiny_encoder)), BiEncoderTeacher)
    monkeypatch.chdir(tmp_path.parent)
    assert isinstance(load_teacher("rrf(bm25, chamfer)"), PipelineTeacher)
    for spec, says in [("models/nowhere", "unexpected '/nowhere'"),
                       ("rrf(bm25, nosuch)", "unknown stage 'nosuch'"), ("bm25(k1=-3)", "k1")]:
        with pytest.raises(CormorantError) as failed:
            load_teacher(spec)
        assert f"--teacher {spec!r} is neither an existing file or model folder nor a" \
               " pipeline" in str(failed.value) and says in str(failed.value)


def test_the_fingerprint_follows_the_pipeline_and_its_models(tiny_encoder, other_tiny_encoder
                                                             ) -> None:
    one = PipelineTeacher(f"rrf(bm25, dense(model={tiny_encoder}))").fingerprint
    assert one == PipelineTeacher(f"rrf(bm25,dense(model={tiny_encoder}))").fingerprint
    assert one != PipelineTeacher(f"rrf(bm25, dense(model={other_tiny_encoder}))").fingerprint
    assert one != PipelineTeacher(f"combsum(bm25, dense(model={tiny_encoder}))").fingerprint
    assert one != PipelineTeacher(f"rrf(bm25, dense(model={tiny_encoder}), k=10)").fingerprint


def test_pipeline_teacher_scores_are_computed_once_then_read_from_the_cache(
        data, isolated_cache, monkeypatch) -> None:
    pairs = pairs_of(data)
    first = cached_scores(PipelineTeacher("bm25"), data, pairs)

    def refuse(*_: object) -> None:
        raise AssertionError("scored again")

    monkeypatch.setattr(PipelineTeacher, "score_pairs", refuse)
    assert cached_scores(PipelineTeacher("bm25"), data, pairs).tolist() == first.tolist()


# --- scaling ---------------------------------------------------------------------------------

def test_scaling_is_per_query_and_keeps_unscored_pairs_unscored() -> None:
    pairs = [("q", "a"), ("q", "b"), ("q", "c"), ("r", "a"), ("r", "b")]
    raw = np.array([1 / 61, 1 / 62, np.nan, 30.0, 10.0])
    minmax = scale_per_query(pairs, raw, "minmax", 7.5)
    assert minmax[[0, 1, 3, 4]].tolist() == pytest.approx([7.5, 0.0, 7.5, 0.0])
    assert math.isnan(minmax[2])
    z = scale_per_query(pairs, raw, "zscore", 2.0)
    assert z[3] == pytest.approx(-z[4]) and z[3] > 0
    assert scale_per_query(pairs, raw, "none", 2.0)[3] == pytest.approx(60.0)


def test_auto_scaling_is_minmax_for_a_pipeline_and_none_for_a_model(data, tiny_encoder,
                                                                      isolated_cache) -> None:
    pairs = pairs_of(data)
    piped = teacher_scores("bm25", data, pairs, factor=7.5)
    for q in {q for q, _ in pairs}:
        values = [s for (p, _), s in piped.items() if p == q]
        assert min(values) == pytest.approx(0.0) and max(values) == pytest.approx(7.5)
    model = teacher_scores(str(tiny_encoder), data, pairs, factor=7.5)
    raw = cached_scores(load_teacher(str(tiny_encoder)), data, pairs)
    assert [model[p] for p in pairs] == pytest.approx(raw.tolist())


# --- denoising --------------------------------------------------------------------------------

def test_denoising_drops_negatives_above_the_weakest_positive_after_minmax() -> None:
    negs = [ScoredNegative(d, None) for d in ("a", "b", "c", "d", "e")]
    mined = Negatives({"q": negs}, {"q": ["p1", "p2"]})
    # minmax over {p1, p2, a..d}: range 0..10, weakest positive p2 = 0.8, limit 0.95 x 0.8 = 0.76
    scores = {("q", "p1"): 10.0, ("q", "p2"): 8.0, ("q", "a"): 9.0, ("q", "b"): 7.6,
              ("q", "c"): 7.7, ("q", "d"): 0.0}
    kept, report = denoise(mined, scores, 0.05)
    assert kept.ids("q") == ["b", "d", "e"]  # 7.6 is at the limit (kept), "e" was not scored
    assert (report.checked, report.dropped, report.unscored) == (5, 2, 1)
    assert report.record()["share_dropped"] == pytest.approx(0.4)
    assert denoise(mined, scores, 0.0)[0].ids("q") == ["b", "c", "d", "e"]


def test_denoising_leaves_a_query_unchecked_without_a_scored_positive() -> None:
    mined = Negatives({"q": [ScoredNegative("a", None)], "r": [ScoredNegative("a", None)]},
                      {"q": ["p"], "r": ["p"]})
    kept, report = denoise(mined, {("q", "a"): 5.0, ("r", "p"): 1.0, ("r", "a"): 3.0})
    assert kept.ids("q") == ["a"] and kept.ids("r") == []
    assert report.emptied_queries == 1 and report.checked == 1


# --- strategies reach the teacher through one path ----------------------------------------------

def test_hard_negatives_and_tas_balanced_distil_the_same_scaled_pipeline_scores(
        train_dir, data, tiny_encoder, tmp_path, isolated_cache) -> None:
    from cormorant.training.losses import MarginMSELoss
    from cormorant.training.strategies import BM25Negatives, Context, TASBalanced

    teacher = f"rrf(bm25, dense(model={tiny_encoder}))"
    margins = {}
    for name, strategy in [("bm25", BM25Negatives()), ("tas-balanced", TASBalanced())]:
        cfg = config(train_dir, tmp_path / name, tiny_encoder, negatives=name, teacher=teacher,
                     clusters=2, denoise=True, tas_candidates="bm25")
        ctx = Context(cfg, data, str(tiny_encoder), tmp_path / name)
        plan = strategy.plan(ctx, strategy.model(ctx))
        assert set(ctx.notes) == {"teacher", "denoise"}
        assert 0 < ctx.notes["denoise"]["dropped"] < ctx.notes["denoise"]["checked"]
        qid_of = {text: q for q, text in data.queries.items()}
        doc_of = {text: d for d, text in data.texts.items()}
        for row, label in enumerate(plan.rows["label"]):
            q = qid_of[plan.rows["query"][row]]
            pos, neg = doc_of[plan.rows["positive"][row]], doc_of[plan.rows["negative"][row]]
            assert neg in plan.negatives.ids(q)  # only negatives that survived denoising
            margin = ctx.scores[(q, pos)] - ctx.scores[(q, neg)]
            assert plan.loss.margins[label].item() == pytest.approx(margin, abs=1e-5)
            margins[(name, q, pos, neg)] = margin
        assert all(-7.5 <= m <= 7.5 for m in margins.values())
        if name == "bm25":
            assert isinstance(plan.loss, MarginMSELoss)
            assert plan.notes["queries_distilled"] + plan.notes["queries_left_out"] == len(
                data.queries)
    shared = {k[1:] for k in margins if k[0] == "bm25"} & {k[1:] for k in margins
                                                           if k[0] == "tas-balanced"}
    assert all(margins[("bm25", *k)] == margins[("tas-balanced", *k)] for k in shared)


def test_margin_mse_loss_is_zero_when_student_margins_match_and_squared_otherwise() -> None:
    import torch

    from cormorant.training.losses import MarginMSELoss

    class Fixed(torch.nn.Module):
        def forward(self, features):
            return {"sentence_embedding": features["v"]}

    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    n = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # student margins: 20 x (0.6 - 0) = 12 and 20 x (1 - 0) = 20
    loss = MarginMSELoss(Fixed(), np.array([12.0, 18.0]), scale=20.0)
    value = loss([{"v": q}, {"v": p}, {"v": n}], torch.tensor([0, 1]))
    assert value.item() == pytest.approx((0 + 2.0 ** 2) / 2)


# --- the command line -----------------------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cormorant.cli", *args], capture_output=True,
                          text=True)


def test_cli_trains_from_a_pipeline_teacher_with_denoising(train_dir, tiny_encoder,
                                                           tmp_path) -> None:
    out = tmp_path / "m"
    done = cli("-v", "train", "-d", str(train_dir), "-o", str(out), "--base-model",
               str(tiny_encoder),
               "--negatives", "bm25", "--teacher", "rrf(bm25, bm25(k1=0.5))", "--denoise",
               "--denoise-margin", "0.1", "--batch-size", "4", "--max-steps", "2")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["loss"] == "margin-mse"
    assert summary["teacher"]["spec"] == "rrf(bm25, bm25(k1=0.5))"
    record = summary["denoise"]
    assert record["margin"] == 0.1 and 0 <= record["share_dropped"] <= 1
    assert record["dropped"] == round(record["share_dropped"] * record["checked"])
    assert "denoising: dropped" in done.stderr


def test_cli_help_and_bad_teacher_input(train_dir, tiny_encoder, tmp_path) -> None:
    from tests.cli_support import run_cli

    shown = run_cli("train", "--help")
    assert "--denoise" in shown.out and "--denoise-margin" in shown.out
    base = ["train", "-d", str(train_dir), "-o", str(tmp_path / "never"), "--base-model",
            str(tiny_encoder), "--negatives", "bm25"]
    for args, says in [(["--denoise"], "--denoise needs --teacher"),
                       (["--teacher", "nosuchstage"], "nor a pipeline"),
                       (["--teacher", "bm25", "--denoise-margin", "1.5"], "must be in [0, 1)"),
                       (["--teacher", "bm25", "--negatives", "in-batch"],
                        "in-batch would ignore it")]:
        done = run_cli(*base, *args)
        assert done.code == 2 and says in done.err, done.err
        assert done.traceback is None
    assert not (tmp_path / "never").exists()
