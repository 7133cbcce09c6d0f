"""``cormorant train --kind cross-encoder``: a re-ranker trained from a plain encoder.

Each training query gives its positives (label 1) and mined negatives (label 0) as (query,
document) pairs; binary cross-entropy with ``pos_weight`` = negatives per positive keeps the two
classes balanced. The result loads as ``rerank(model=DIR)`` and as a TAS-Balanced teacher.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from cormorant.training.config import TrainConfig
from cormorant.training.evaluation import DevEvaluator, DevSet, cross_encoder_scorer
from cormorant.training.strategies import Context, _epochs, _steps, negatives_for

log = logging.getLogger(__name__)
DEFAULT_NEGATIVES = "bm25"
CROSS_ENCODER_MAX_LENGTH = 256
NEGATIVES_PER_QUERY = 3


def train_cross_encoder(config: TrainConfig) -> Any:
    """Train and write a cross-encoder; returns the same TrainResult as bi-encoders."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from cormorant.retrieval.encoders import resolve_model
    from cormorant.training.trainer import (
        CSVLogger,
        TrainResult,
        _last_checkpoint,
        prepare_out,
        split_dev,
        training_arguments,
        write_output,
    )

    base = resolve_model(config.base_model)
    work = prepare_out(config)
    data, dev = split_dev(config)
    method = DEFAULT_NEGATIVES if config.negatives == "in-batch" else config.negatives
    negatives = negatives_for(Context(config, data, base, work), method)
    rows = pair_rows(data, negatives, NEGATIVES_PER_QUERY, config)
    model = _load(CrossEncoder, base)
    # Pairs are cut to --max-length while training (like bi-encoder documents); the saved model
    # re-ranks at its full length.
    model.max_seq_length = min(config.max_length, CROSS_ENCODER_MAX_LENGTH)
    evaluator = DevEvaluator(DevSet.build(dev, config.dev_candidates), cross_encoder_scorer) \
        if dev is not None else None
    args = training_arguments(CrossEncoderTrainingArguments, config, work, evaluator,
                              every=config.eval_steps
                              or _steps(len(rows["query"]) // _epochs(config), config),
                              learning_rate=config.learning_rate)
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(NEGATIVES_PER_QUERY)))
    csv_log = CSVLogger(work / "logs" / "train_log.csv")
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                                  loss=loss, evaluator=evaluator, callbacks=[csv_log])
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=_last_checkpoint(work) if config.resume else None)
    seconds = time.perf_counter() - start
    model.max_seq_length = CROSS_ENCODER_MAX_LENGTH
    summary = {"kind": "cross-encoder", "negatives": method, "seconds": round(seconds, 1)}
    write_output(config, model, work, summary, evaluator, negatives)
    return TrainResult(config.out, seconds, trainer.state.global_step,
                       evaluator.history if evaluator else [], csv_log.values)


def pair_rows(data: Any, negatives: Any, per_query: int, config: TrainConfig) -> dict[str, list]:
    """(query, document, label) rows: each positive, and ``per_query`` negatives per query,
    freshly drawn for each epoch."""
    rng = random.Random(config.seed)
    rows: dict[str, list] = {"query": [], "document": [], "label": []}
    for _ in range(_epochs(config)):
        for qid, text in data.queries.items():
            pool = negatives.ids(qid)
            for doc in data.positives[qid][:per_query]:
                rows["query"].append(text)
                rows["document"].append(data.texts[doc])
                rows["label"].append(1.0)
            for doc in rng.sample(pool, min(per_query, len(pool))):
                rows["query"].append(text)
                rows["document"].append(data.texts[doc])
                rows["label"].append(0.0)
    return rows


def _load(cross_encoder: Any, base: str) -> Any:
    """A cross-encoder with a fresh one-logit head on ``base``, or a one-line error."""
    from pathlib import Path

    from cormorant.errors import CormorantError

    try:
        return cross_encoder(base, num_labels=1, max_length=CROSS_ENCODER_MAX_LENGTH,
                             local_files_only=Path(base).exists())
    except (OSError, ValueError) as exc:
        raise CormorantError(f"cannot load base model {base!r} for a cross-encoder:"
                             f" {str(exc).splitlines()[0]}") from None
