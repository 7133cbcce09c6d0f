"""A few real training steps on SciFact: the loss falls and the model reloads as a stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import shared_dataset

pytestmark = pytest.mark.slow


def scifact_slice(folder: Path, queries: int = 48, distractors: int = 400) -> Path:
    """SciFact's first train queries with their positives plus some other abstracts: small
    enough to train several epochs in a minute, real text and real judgments."""
    source = shared_dataset("scifact")
    rows = (source / "qrels" / "train.tsv").read_text().splitlines()[1:]
    chosen: dict[str, list[str]] = {}
    for row in rows:
        qid, did, _ = row.split("\t")
        if qid in chosen or len(chosen) < queries:
            chosen.setdefault(qid, []).append(did)
    keep_docs = {d for docs in chosen.values() for d in docs}
    lines = (source / "corpus.jsonl").read_text().splitlines()
    corpus = [line for line in lines if json.loads(line)["_id"] in keep_docs]
    corpus += [line for line in lines[:distractors] if json.loads(line)["_id"] not in keep_docs]
    queries_out = [line for line in (source / "queries.jsonl").read_text().splitlines()
                   if json.loads(line)["_id"] in chosen]
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("\n".join(corpus) + "\n")
    (folder / "queries.jsonl").write_text("\n".join(queries_out) + "\n")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, docs in chosen.items() for d in docs))
    return folder


def test_training_on_scifact_lowers_the_loss_and_the_model_reloads(tmp_path: Path) -> None:
    from cormorant.data import load_dataset
    from cormorant.retrieval.assemble import build_pipeline
    from cormorant.training.config import TrainConfig
    from cormorant.training.trainer import train

    data = scifact_slice(tmp_path / "slice")
    result = train(TrainConfig(dataset=data, out=tmp_path / "model", negatives="bm25",
                               batch_size=16, epochs=4, learning_rate=5e-5, dev_fraction=0.0,
                               num_negatives=4, max_length=96))
    assert result.steps == 12 and len(result.losses) >= 4
    first, last = sum(result.losses[:2]) / 2, sum(result.losses[-2:]) / 2
    assert last < first * 0.8, result.losses  # it learns the training pairs
    stage = build_pipeline(f"dense(model={result.out})", load_dataset(data).corpus)
    assert stage.encoder.settings["max_length"] == 256  # saved at the model's own length
    queries = {q: t for q, t in list(load_dataset(data).split("train").queries.items())[:5]}
    run = stage.search(queries, k=10)
    assert all(len(hits) == 10 for hits in run.values())


def test_cross_encoder_on_scifact_learns_to_rank_its_training_queries(tmp_path: Path) -> None:
    from cormorant.data import load_dataset
    from cormorant.eval.measures import evaluate
    from cormorant.retrieval.assemble import build_pipeline
    from cormorant.retrieval.encoders import resolve_model
    from cormorant.training.config import TrainConfig
    from cormorant.training.cross_encoder import load_base
    from cormorant.training.trainer import train

    data = scifact_slice(tmp_path / "slice")
    result = train(TrainConfig(dataset=data, out=tmp_path / "ce", kind="cross-encoder",
                               negatives="bm25", batch_size=16, epochs=3, dev_fraction=0.0,
                               max_length=96, learning_rate=1e-4))
    first, last = sum(result.losses[:2]) / 2, sum(result.losses[-2:]) / 2
    assert last < first * 0.8, result.losses  # the listwise loss leaves chance (ln 8)
    load_base(resolve_model(None)).save(str(tmp_path / "untrained"))  # same body, fresh head
    ds = load_dataset(data)
    split = ds.split("train")

    def reranked(model: Path) -> float:
        pipe = build_pipeline(f"bm25 % 20 >> rerank(model={model})", ds.corpus)
        run = pipe.search(split.queries, k=20)
        return evaluate(run, split.qrels, ["nDCG@10"]).aggregate["nDCG@10"]

    trained, untrained = reranked(result.out), reranked(tmp_path / "untrained")
    # Its own training queries: BM25's top 20 re-ranked far better than by the fresh head.
    # (Not better than BM25 itself: 0.74 against 0.77 when this was written.)
    assert trained > untrained + 0.1, (untrained, trained)
