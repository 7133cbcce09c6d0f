"""``cormorant train --kind bi-encoder`` (the default): a strategy's plan, run by the driver.

The strategy named by ``--negatives`` (:mod:`cormorant.training.strategies`) loads the model
and turns the training queries into a :class:`~cormorant.training.strategies.Plan`; dev
nDCG@10 ranks the dev queries' candidates with the model being trained (or with the fixed
document vectors of a query-only strategy). ``star+adore`` chains two strategies: STAR into a
stage folder, then ADORE against STAR's document index, each with an equal share of the time
left when it starts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from transformers import TrainerCallback

from cormorant.training.config import TrainConfig
from cormorant.training.evaluation import DevEvaluator, DevSet, bi_encoder_scorer
from cormorant.training.strategies import Context, epoch_share, strategy
from cormorant.training.trainer import (
    Job,
    Outcome,
    Session,
    TrainingKind,
    TrainResult,
    fit,
    training_arguments,
    work_dir,
)


class BiEncoderKind(TrainingKind):
    """A query and document encoder trained by one strategy, or a ``+`` chain of them.

    Example:
        >>> BiEncoderKind().base_model(TrainConfig(dataset="d", out="o", negatives="magic"))
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        cormorant.errors.CormorantError: unknown strategy 'magic'; known: ...
    """

    name: ClassVar[str] = "bi-encoder"

    def base_model(self, config: TrainConfig) -> str:
        from cormorant.retrieval.encoders import resolve_model

        for name in config.negatives.split("+"):
            strategy(name)  # fail on an unknown name before loading anything
        return resolve_model(config.base_model)

    def setup(self, session: Session) -> Job:
        return StrategyJob(session.config.negatives, session)

    def train(self, session: Session) -> TrainResult:
        steps = session.config.negatives.split("+")
        if len(steps) == 1:
            return super().train(session)
        # star+adore: each stage gets an equal share of the time left when it starts
        config, work = session.config, session.work
        first = dataclasses.replace(session, config=_stage(config, work / steps[0]),
                                    work=work_dir(work / steps[0]),
                                    deadline=session.deadline.share(len(steps)))
        trained = fit(StrategyJob(steps[0], first), first)
        rest = dataclasses.replace(session, base_model=str(trained.out), config=_stage(
            config, config.out, document_model=str(trained.out)))
        name = "+".join(steps[1:]) if len(steps) > 2 else steps[1]
        return fit(StrategyJob(name, rest), rest)


def _stage(config: TrainConfig, out: Path, **changes: Any) -> TrainConfig:
    return dataclasses.replace(config, out=out, negatives_file=None, overwrite=True, **changes)


class StrategyJob(Job):
    """One strategy's run: its model (documents cut to ``--max-length`` while training), its
    plan, and dev nDCG@10 from the starting point on."""

    evaluates_start = True

    def __init__(self, name: str, session: Session) -> None:
        config = self.config = session.config
        self.name, self.work = name, session.work
        self.work.mkdir(parents=True, exist_ok=True)  # a chained stage's own work dir
        chosen = strategy(name)
        ctx = Context(config, session.data, session.base_model, session.work)
        self.model = chosen.model(ctx)
        self.full_length = self.model.max_seq_length
        # Documents are cut short to train fast; the saved model encodes at its own length.
        self.model.max_seq_length = min(config.max_length, self.full_length or config.max_length)
        self.plan = chosen.plan(ctx, self.model)
        self.plan.notes = {**ctx.notes, **self.plan.notes}  # teacher and denoising reports
        self.negatives, self.document_encoder = self.plan.negatives, self.plan.document_encoder
        if session.dev is not None:
            self.evaluator = DevEvaluator(DevSet.build(session.dev, config.dev_candidates),
                                          bi_encoder_scorer(self.plan.fixed_documents))

    def trainer(self, callbacks: list[TrainerCallback]) -> Any:
        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

        config, plan = self.config, self.plan
        args = training_arguments(SentenceTransformerTrainingArguments, config, self.work,
                                  self.evaluator,
                                  every=config.eval_steps or plan.steps_per_epoch,
                                  learning_rate=plan.learning_rate or config.peak_learning_rate,
                                  batch_sampler=plan.batch_sampler, max_grad_norm=1.0,
                                  dataloader_drop_last=False,
                                  share=epoch_share(config) if plan.share is None else plan.share)
        return SentenceTransformerTrainer(model=self.model, args=args,
                                          train_dataset=Dataset.from_dict(plan.rows),
                                          loss=plan.loss, evaluator=self.evaluator,
                                          callbacks=callbacks)

    def finish(self) -> None:
        self.model.max_seq_length = self.full_length

    def summary(self, trainer: Any, outcome: Outcome) -> dict[str, Any]:
        summary = {"strategy": self.name, "seconds": round(outcome.seconds, 1),
                   **self.plan.notes, "time_budget": outcome.time_budget}
        if outcome.kept_start:
            summary["kept"] = "start"
        loss = self.plan.loss
        if hasattr(loss, "gather_across_devices"):  # the contrastive losses decide at build time
            summary["gathered_across_processes"] = bool(loss.gather_across_devices)
        return summary
