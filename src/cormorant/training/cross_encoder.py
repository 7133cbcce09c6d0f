"""``cormorant train --kind cross-encoder``: a re-ranker trained from a plain encoder.

Each training query gives, per epoch, one of its positives and three mined negatives
(``cross_encoder_mined``). The default loss is listwise (``cross_encoder_loss: listwise``): a
softmax over the positive, those three and four in-batch negatives (``cross_encoder_in_batch``,
other queries' documents), after localized contrastive estimation (Gao et al., ECIR 2021), whose
groups hold mined negatives only (``cross_encoder_mined: 7``, ``cross_encoder_in_batch: 0``).
In-batch negatives are not checked against the query's judgments: where queries share many
positives (NFCorpus), some are relevant, which mined-only groups avoid. ``bce`` scores the
same documents pointwise (label 1 / 0) with binary cross-entropy, ``pos_weight`` = negatives
per positive; on SciFact and NFCorpus it never left its constant-prediction loss, where the
listwise loss learned on SciFact. The result loads as ``rerank(model=DIR)`` and as a
TAS-Balanced teacher.

The scoring head reads the pair the way the base model was trained to be read. A
sentence-transformers bi-encoder (all-MiniLM-L6-v2) was trained with mean pooling and never
used its [CLS] token, so the usual sequence-classification head (pooler over [CLS]) starts from
features that say nothing about the pair. Such a base gets its own pooling followed by a fresh
linear head; any other encoder gets the standard classification head. Either fresh head trains
at ``head_learning_rate``: its weights start near zero, so at the body's rate the body sees
almost no gradient through it for most of a short run. On a toy lexical task (16 steps) this
took the loss from 0.69 to 0.54 where the [CLS] head reached 0.68; on SciFact's 728 training
queries neither head had moved the loss off its constant-prediction value (1.04) after 40
steps: that little data is hard for a cross-encoder that starts from a bi-encoder.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from transformers import TrainerCallback

from cormorant.training.config import TrainConfig
from cormorant.training.evaluation import DevEvaluator, DevSet, cross_encoder_scorer
from cormorant.training.strategies import Context, epoch_share, negatives_for, passes
from cormorant.training.trainer import Job, Outcome, Session, TrainingKind, training_arguments

log = logging.getLogger(__name__)
DEFAULT_NEGATIVES = "bm25"
CROSS_ENCODER_MAX_LENGTH = 256
NEGATIVES_PER_QUERY = 3  # the defaults of cross_encoder_mined and cross_encoder_in_batch
# listwise: each group also meets this many other queries' documents of the batch (random
# negatives), so a group scores 1 + 3 + 4 pairs.
IN_BATCH_NEGATIVES = 4


class CrossEncoderKind(TrainingKind):
    """A re-ranker: a fresh scoring head on ``--base-model`` (default all-MiniLM-L6-v2)."""

    name: ClassVar[str] = "cross-encoder"

    def base_model(self, config: TrainConfig) -> str:
        from cormorant.retrieval.encoders import resolve_model

        return resolve_model(config.base_model)

    def setup(self, session: Session) -> Job:
        return CrossEncoderJob(session)


class CrossEncoderJob(Job):
    """Mined negatives, the rows of every epoch, the model with its fresh head (pairs cut to
    ``--max-length`` while training) and dev nDCG@10 of its re-ranking."""

    def __init__(self, session: Session) -> None:
        config = self.config = session.config
        self.work = session.work
        self.method = DEFAULT_NEGATIVES if config.negatives == "in-batch" else config.negatives
        self.negatives = negatives_for(Context(config, session.data, session.base_model,
                                               session.work), self.method)
        self.listwise = config.cross_encoder_loss == "listwise"
        draw = group_rows if self.listwise else pair_rows
        self.rows = draw(session.data, self.negatives, config.cross_encoder_mined, config)
        self.model = load_base(session.base_model)
        # Pairs are cut to --max-length while training (like bi-encoder documents); the saved
        # model re-ranks at its full length.
        self.model.max_seq_length = min(config.max_length, CROSS_ENCODER_MAX_LENGTH)
        if session.dev is not None:
            self.evaluator = DevEvaluator(DevSet.build(session.dev, config.dev_candidates),
                                          cross_encoder_scorer)

    def trainer(self, callbacks: list[TrainerCallback]) -> Any:
        import torch
        from datasets import Dataset
        from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
        from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

        config = self.config
        mined, in_batch = config.cross_encoder_mined, config.cross_encoder_in_batch
        # A step scores about --batch-size pairs either way: a listwise row is a whole group.
        batch = max(2, config.batch_size // (1 + mined + in_batch)) if self.listwise \
            else config.batch_size
        per_epoch = len(self.rows["query"]) // passes(config)
        args = training_arguments(CrossEncoderTrainingArguments, config, self.work,
                                  self.evaluator,
                                  every=config.eval_steps or max(1, math.ceil(per_epoch / batch)),
                                  learning_rate=config.peak_learning_rate,
                                  share=epoch_share(config), batch_size=batch,
                                  learning_rate_mapping=head_learning_rates(self.model, config))
        loss = listwise_loss(self.model, in_batch) if self.listwise \
            else BinaryCrossEntropyLoss(self.model, pos_weight=torch.tensor(float(mined)))
        return CrossEncoderTrainer(model=self.model, args=args,
                                   train_dataset=Dataset.from_dict(self.rows), loss=loss,
                                   evaluator=self.evaluator, callbacks=callbacks)

    def finish(self) -> None:
        self.model.max_seq_length = CROSS_ENCODER_MAX_LENGTH

    def summary(self, trainer: Any, outcome: Outcome) -> dict[str, Any]:
        config = self.config
        in_batch = config.cross_encoder_in_batch if self.listwise else 0
        return {"kind": "cross-encoder", "negatives": self.method,
                "loss": config.cross_encoder_loss,
                "group": {"mined": config.cross_encoder_mined, "in_batch": in_batch},
                "seconds": round(outcome.seconds, 1), "time_budget": outcome.time_budget}


def listwise_loss(model: Any, in_batch: int) -> Any:
    """Softmax cross-entropy over each group (sentence-transformers' cross-encoder
    ``MultipleNegativesRankingLoss``, raw scores, scale 1), with ``in_batch`` of the batch's
    other documents added to each group; 0 keeps the mined group alone, as LCE has it."""
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss

    if in_batch > 0:
        return MultipleNegativesRankingLoss(model, num_negatives=in_batch, scale=1.0,
                                            activation_fn=None)

    class MinedGroupsOnly(MultipleNegativesRankingLoss):
        def get_in_batch_negatives(self, anchors: Any, candidates: Any) -> Iterator[list[str]]:
            return iter(())  # the library's sampler cannot draw zero of them

    return MinedGroupsOnly(model, num_negatives=None, scale=1.0, activation_fn=None)


def pair_rows(data: Any, negatives: Any, per_query: int, config: TrainConfig) -> dict[str, list]:
    """(query, document, label) rows: per query and epoch, one positive drawn from its judged
    positives and ``per_query`` negatives from its mined pool, freshly for each epoch.

    One positive keeps the classes at 1 : ``per_query``, the balance ``pos_weight`` assumes, and
    the cost at one row group per query: NFCorpus judges ~40 positives per training query, and
    taking several of each made an epoch 409 steps (over an hour on 2 cores).
    """
    rows: dict[str, list] = {"query": [], "document": [], "label": []}
    for qid, positive, drawn in draw_groups(data, negatives, per_query, config, fill=False):
        text = data.queries[qid]
        for doc, label in [(positive, 1.0), *((doc, 0.0) for doc in drawn)]:
            rows["query"].append(text)
            rows["document"].append(data.texts[doc])
            rows["label"].append(label)
    return rows


def group_rows(data: Any, negatives: Any, per_query: int, config: TrainConfig
               ) -> dict[str, list]:
    """Listwise rows (query, positive, negative_1 .. negative_k), drawn as in :func:`pair_rows`.

    A query whose mined pool is short is topped up with random corpus documents that are not
    judged relevant to it, so every row has the same columns.
    """
    rows: dict[str, list] = {"query": [], "positive": []}
    rows.update({f"negative_{i + 1}": [] for i in range(per_query)})
    for qid, positive, drawn in draw_groups(data, negatives, per_query, config, fill=True):
        rows["query"].append(data.queries[qid])
        rows["positive"].append(data.texts[positive])
        for i, doc in enumerate(drawn):
            rows[f"negative_{i + 1}"].append(data.texts[doc])
    return rows


def draw_groups(data: Any, negatives: Any, per_query: int, config: TrainConfig, fill: bool
                ) -> Iterator[tuple[str, str, list[str]]]:
    """(query id, positive id, negative ids) per query and epoch, seeded: one positive and
    up to ``per_query`` distinct negatives from the mined pool; ``fill`` tops a short pool up
    to ``per_query`` with random documents not judged relevant."""
    rng = random.Random(config.seed)
    doc_ids = list(data.texts)
    for _ in range(passes(config)):
        for qid in data.queries:
            positive = rng.choice(data.positives[qid])
            pool = negatives.ids(qid)
            drawn = rng.sample(pool, min(per_query, len(pool)))
            if fill and len(drawn) < per_query:
                drawn += _top_up(drawn, data.relevant(qid), doc_ids, per_query, rng)
            yield qid, positive, drawn


def _top_up(drawn: list[str], relevant: set[str], doc_ids: list[str], size: int,
            rng: random.Random) -> list[str]:
    """Random non-relevant documents to fill ``drawn`` to ``size``, repeated only when the
    corpus has too few."""
    spare = [d for d in doc_ids if d not in relevant and d not in drawn] or drawn or doc_ids
    need = size - len(drawn)
    if len(spare) >= need:
        return rng.sample(spare, need)
    return [*spare, *rng.choices(spare, k=need - len(spare))]


def load_base(base: str) -> Any:
    """A cross-encoder with a fresh one-logit head on ``base``, or a one-line error.

    A sentence-transformers folder with a pooling module keeps that pooling under the head
    (see the module docstring); anything else gets ``*ForSequenceClassification``.
    """
    from sentence_transformers.cross_encoder import CrossEncoder

    from cormorant.errors import CormorantError

    pooled = _pooled_modules(base) if (Path(base) / "modules.json").is_file() else None
    if pooled is not None:
        return CrossEncoder(modules=pooled)
    try:
        return CrossEncoder(base, num_labels=1, max_length=CROSS_ENCODER_MAX_LENGTH,
                            local_files_only=Path(base).exists())
    except (OSError, ValueError) as exc:
        raise CormorantError(f"cannot load base model {base!r} for a cross-encoder:"
                             f" {str(exc).splitlines()[0]}") from None


def _pooled_modules(base: str) -> list[Any] | None:
    """The sentence-transformers base's modules up to its pooling and a linear head writing
    ``scores``; None when the base has no pooling module."""
    from sentence_transformers.base.modules import Dense
    from sentence_transformers.sentence_transformer.modules import Pooling

    from cormorant.training.strategies import load_model

    modules = list(load_model(str(base)))
    pooling = next((i for i, m in enumerate(modules) if isinstance(m, Pooling)), None)
    if pooling is None:
        return None
    body = modules[0]
    body.max_seq_length = CROSS_ENCODER_MAX_LENGTH
    head = Dense(body.get_embedding_dimension(), 1, activation_function=None,
                 module_output_name="scores")
    return [*modules[:pooling + 1], head]


def head_learning_rates(model: Any, config: TrainConfig) -> dict[str, float]:
    """``learning_rate_mapping`` for the Trainer: the fresh head's parameters (the linear head
    of a pooled model, or the classifier) at ``config.head_learning_rate``."""
    from sentence_transformers.base.modules import Dense

    heads = [module for module in model if isinstance(module, Dense)]
    mine = {id(p) for head in heads for p in head.parameters()}
    names = [n for n, p in model.named_parameters()
             if id(p) in mine or (not heads and ".classifier." in n)]
    if not names:
        return {}
    # The Trainer matches against the loss module's names ("model." + these): anchor the ends.
    return {"|".join(rf"(^|\.){re.escape(name)}$" for name in names): config.head_learning_rate}
