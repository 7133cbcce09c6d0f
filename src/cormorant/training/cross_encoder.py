"""``cormorant train --kind cross-encoder``: a re-ranker trained from a plain encoder.

Each training query gives its positives (label 1) and mined negatives (label 0) as (query,
document) pairs; binary cross-entropy with ``pos_weight`` = negatives per positive keeps the two
classes balanced. The result loads as ``rerank(model=DIR)`` and as a TAS-Balanced teacher.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from typing import Any

from cormorant.index.format import atomic_directory
from cormorant.training.config import TrainConfig
from cormorant.training.evaluation import DevEvaluator, DevSet, cross_encoder_scorer
from cormorant.training.strategies import Context, negatives_for

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
        _reporters,
        log_every,
        prepare_out,
        split_dev,
        tensorboard_dir,
    )

    base = resolve_model(config.base_model)
    work = prepare_out(config)
    data, dev = split_dev(config)
    method = DEFAULT_NEGATIVES if config.negatives == "in-batch" else config.negatives
    negatives = negatives_for(Context(config, data, base, work), method)
    rows = pair_rows(data, negatives, NEGATIVES_PER_QUERY, config)
    model = _load(CrossEncoder, base)
    evaluator = DevEvaluator(DevSet.build(dev, config.dev_candidates), cross_encoder_scorer) \
        if dev is not None else None
    every = config.eval_steps or max(1, len(rows["query"]) // config.batch_size)
    cuda = torch.cuda.is_available()
    args = CrossEncoderTrainingArguments(
        output_dir=str(work / "checkpoints"), num_train_epochs=1,  # rows hold every epoch
        max_steps=config.max_steps, per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate, warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay, seed=config.seed, data_seed=config.seed,
        fp16=cuda if config.fp16 is None else config.fp16, use_cpu=not cuda,
        eval_strategy="steps" if evaluator else "no", eval_steps=every, save_strategy="steps",
        save_steps=every, save_total_limit=2, load_best_model_at_end=evaluator is not None,
        metric_for_best_model="eval_dev_ndcg@10" if evaluator else None,
        logging_steps=log_every(every, config.max_steps), report_to=_reporters())
    tensorboard_dir(work)
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(NEGATIVES_PER_QUERY)))
    csv_log = CSVLogger(work / "logs" / "train_log.csv")
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                                  loss=loss, evaluator=evaluator, callbacks=[csv_log])
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=_last_checkpoint(work) if config.resume else None)
    seconds = time.perf_counter() - start
    with atomic_directory(config.out, overwrite=True) as tmp:
        model.save(str(tmp))
        (tmp / "training").mkdir()
        if (work / "logs").is_dir():
            shutil.copytree(work / "logs", tmp / "training" / "logs")
        negatives.save(tmp / "training" / "negatives.jsonl")
        (tmp / "training" / "summary.json").write_text(json.dumps(
            {"kind": "cross-encoder", "negatives": method, "config": config.to_dict(),
             "seconds": round(seconds, 1),
             "dev_ndcg@10": evaluator.history if evaluator else []}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return TrainResult(config.out, seconds, trainer.state.global_step,
                       evaluator.history if evaluator else [], csv_log.values)


def pair_rows(data: Any, negatives: Any, per_query: int, config: TrainConfig) -> dict[str, list]:
    """(query, document, label) rows: each positive, and ``per_query`` negatives per query,
    freshly drawn for each epoch."""
    rng = random.Random(config.seed)
    rows: dict[str, list] = {"query": [], "document": [], "label": []}
    for _ in range(max(1, int(config.epochs + 0.999))):
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
