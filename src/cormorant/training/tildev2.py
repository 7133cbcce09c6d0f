"""``cormorant train --kind tildev2``: token weights for the ``tildev2`` stage.

The model is the base encoder (``--base-model``, any sentence-transformers or BERT folder;
default all-MiniLM-L6-v2) with a fresh ``Linear(hidden, 1)`` and a ReLU over every token
(:class:`~cormorant.retrieval.tilde.TildeModel`). As in the paper (Zhuang & Zuccon 2021,
after Gao et al.'s localized contrastive estimation), each training query gives, per epoch, a
group of ``tilde_group`` passages (default 8): one of its judged positives and
``tilde_group - 1`` negatives drawn from BM25's top candidates (``--negatives bm25``, the
default; any mined strategy or ``--negatives-file`` works), and the loss is the softmax
cross-entropy of the positive over its group, the scores being the stage's own: sum over the
query's tokens of the passage's largest weight for that token. Queries are tokenized exactly as
the stage tokenizes them (no special tokens, no stop words, repeats kept), so training scores
what search scores.

Choices and why:

- a step holds ``--batch-size / tilde_group`` groups (4 at the defaults: 32 passages a step,
  the cost of one bi-encoder step of 32 pairs), never fewer than 2;
- the fresh head learns at ``head_learning_rate`` (1e-3), the body at ``--learning-rate``
  (2e-5): at the body's rate a head that starts near zero passes the body almost no gradient
  for most of a short run (the cross-encoder kind found the same);
- there is no dev metric: this kind trains through the plain Hugging Face Trainer, and the
  dev queries ``--dev-fraction`` holds out are trained on as well rather than left idle; the
  last step is kept (``--max-time`` still bounds the run);
- ``--synthetic-queries DIR`` expands every passage with its generated queries' new words
  before weighting, in training as ``tildev2(expand=DIR)`` does when indexing;
- a positive that shares no token with its query (within the ``--max-length`` tokens trained
  on) is not drawn: TILDEv2 can only score exact matches, so such a positive scores 0 whatever
  the weights are, and its group's only way down the loss is to push every negative's weights
  to 0. NFCorpus's judgments are topical (68% of its training pairs share no query token with
  the passage's first 128 tokens; SciFact: none), and training on them killed the ReLU head
  within 60 steps; queries left with no such positive are dropped, and both counts are logged
  and written to the summary.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, ClassVar

from transformers import Trainer, TrainerCallback

from cormorant.errors import CormorantError
from cormorant.training.config import TrainConfig
from cormorant.training.data import TrainingSet
from cormorant.training.strategies import Context, epoch_share, negatives_for, passes
from cormorant.training.trainer import Job, Outcome, Session, TrainingKind, training_arguments

log = logging.getLogger(__name__)
DEFAULT_NEGATIVES = "bm25"


class TildeKind(TrainingKind):
    """TILDEv2's passage encoder: a fresh token-weight head on ``--base-model``."""

    name: ClassVar[str] = "tildev2"

    def base_model(self, config: TrainConfig) -> str:
        from cormorant.retrieval.encoders import resolve_model

        return resolve_model(config.base_model)

    def setup(self, session: Session) -> Job:
        return TildeJob(session)


def with_dev(data: TrainingSet, dev: TrainingSet | None) -> TrainingSet:
    """The training queries and the held-out dev queries as one set (this kind has no dev
    metric to spend them on)."""
    if dev is None:
        return data
    return TrainingSet({**data.queries, **dev.queries}, {**data.positives, **dev.positives},
                       data.corpus, data.texts, {**data.qrels, **dev.qrels})


class TildeJob(Job):
    """BM25-negative groups of every epoch and the model with its fresh head."""

    def __init__(self, session: Session) -> None:
        from cormorant.retrieval.tilde import TildeModel
        from cormorant.retrieval.tildev2 import expanded, read_expansions
        from cormorant.training.cross_encoder import group_rows

        config = self.config = session.config
        self.work = session.work
        # The model first: a bad --base-model fails before minutes of mining.
        self.model = TildeModel.from_encoder(session.base_model, seed=config.seed)
        data, self.unmatched = matchable(with_dev(session.data, session.dev), self.model,
                                         config.max_length)
        self.method = DEFAULT_NEGATIVES if config.negatives == "in-batch" else config.negatives
        self.negatives = negatives_for(Context(config, data, session.base_model, session.work),
                                       self.method)
        self.expansions = read_expansions(Path(config.synthetic_queries)) \
            if config.synthetic_queries else {}
        if self.expansions:
            texts = {d: expanded(t, self.expansions.get(d, "")) for d, t in data.texts.items()}
            data = TrainingSet(data.queries, data.positives, data.corpus, texts, data.qrels)
        rows = group_rows(data, self.negatives, config.tilde_group - 1, config)
        columns = [rows["positive"], *(rows[f"negative_{i + 1}"]
                                       for i in range(config.tilde_group - 1))]
        self.rows = [{"query": q, "passages": list(group)}
                     for q, *group in zip(rows["query"], *columns, strict=True)]
        log.info("tildev2: %d groups of %d passages from %d queries (%s negatives)",
                 len(self.rows), config.tilde_group, len(data.queries), self.method)

    def trainer(self, callbacks: list[TrainerCallback]) -> Any:
        import torch
        from transformers import TrainingArguments

        config = self.config
        groups = max(2, config.batch_size // config.tilde_group)
        per_epoch = math.ceil(len(self.rows) / passes(config) / groups)
        args = training_arguments(TrainingArguments, config, self.work, None,
                                  every=config.eval_steps or per_epoch,
                                  learning_rate=config.peak_learning_rate,
                                  share=epoch_share(config), batch_size=groups,
                                  remove_unused_columns=False)
        head = list(self.model.head.parameters())
        body = [p for n, p in self.model.named_parameters() if not n.startswith("head.")]
        optimizer = torch.optim.AdamW(
            [{"params": body, "lr": config.peak_learning_rate,
              "weight_decay": config.weight_decay},
             {"params": head, "lr": config.head_learning_rate, "weight_decay": 0.0}])
        self.model.train()
        return GroupTrainer(model=self.model, args=args, train_dataset=self.rows,
                            data_collator=GroupCollator(self.model, config.max_length),
                            optimizers=(optimizer, None), callbacks=callbacks)

    def finish(self) -> None:
        self.model.eval()

    def summary(self, trainer: Any, outcome: Outcome) -> dict[str, Any]:
        return {"kind": "tildev2", "negatives": self.method, "group": self.config.tilde_group,
                "groups": len(self.rows), "expanded_passages": len(self.expansions),
                **self.unmatched,
                "seconds": round(outcome.seconds, 1), "time_budget": outcome.time_budget}


def matchable(data: TrainingSet, model: Any, max_length: int | None
              ) -> tuple[TrainingSet, dict[str, int]]:
    """The training set with only the positives that share a kept token with their query in
    their first ``max_length`` tokens (the module docstring says why), the queries left with
    none dropped; and the counts of what was dropped.

    Example:
        >>> kept, dropped = matchable(data, model, 128)  # doctest: +SKIP
        >>> dropped  # doctest: +SKIP
        {'unmatched_positives': 75286, 'unmatched_queries': 377}
    """
    queries = list(data.queries)
    tokens = dict(zip(queries, map(set, model.queries.ids([data.queries[q] for q in queries])),
                      strict=True))
    docs = sorted({d for q in queries for d in data.positives[q]})
    # Cut as the collator cuts (special tokens included), so "shares a token" means "can score".
    found = model.tokenizer([data.texts[d] for d in docs], truncation=True,
                            max_length=max_length or model.max_length)
    words = dict(zip(docs, map(set, found["input_ids"]), strict=True))
    positives = {q: [d for d in data.positives[q] if tokens[q] & words[d]] for q in queries}
    dropped = {"unmatched_positives": sum(len(data.positives[q]) - len(positives[q])
                                          for q in queries),
               "unmatched_queries": sum(not p for p in positives.values())}
    if dropped["unmatched_positives"]:
        log.warning("tildev2: %d of %d positives share no token with their query and are not"
                    " trained on (%d queries left with none)", dropped["unmatched_positives"],
                    sum(len(p) for p in data.positives.values()), dropped["unmatched_queries"])
    positives = {q: p for q, p in positives.items() if p}
    if not positives:
        raise CormorantError("tildev2: no training query shares a token with any of its"
                             " positives, so TILDEv2 (an exact-match model) has nothing to learn")
    kept = TrainingSet({q: data.queries[q] for q in positives}, positives, data.corpus,
                       data.texts, data.qrels)
    return kept, dropped


def group_scores(weights: Any, doc_ids: Any, query_ids: Any) -> Any:
    """TILDEv2's scores of each group's passages: (groups x passages).

    ``weights`` and ``doc_ids`` are (groups x passages x positions); ``query_ids`` is
    (groups x query positions), padded with -1 (which matches no token). A query token absent
    from a passage adds 0; present, it adds the passage's largest weight for it.

    Example:
        >>> import torch
        >>> w = torch.tensor([[[0.5, 2.0, 1.0], [3.0, 0.0, 0.0]]])
        >>> d = torch.tensor([[[7, 8, 7], [9, 0, 0]]])
        >>> group_scores(w, d, torch.tensor([[7, 8, -1]])).tolist()
        [[3.0, 0.0]]
    """
    match = query_ids[:, None, :, None] == doc_ids[:, :, None, :]  # g x p x q x positions
    return (weights[:, :, None, :] * match).amax(dim=-1).sum(dim=-1)


class GroupCollator:
    """A batch of groups: the passages tokenized (cut to ``max_length``), the queries as the
    stage tokenizes them, padded with -1."""

    def __init__(self, model: Any, max_length: int) -> None:
        self.model, self.max_length = model, max_length

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        passages = [p for row in rows for p in row["passages"]]
        features = self.model.tokenize(passages, self.max_length)
        queries = self.model.queries.ids([row["query"] for row in rows])
        longest = max(1, *(len(q) for q in queries))
        query_ids = torch.tensor([q + [-1] * (longest - len(q)) for q in queries])
        return {"input_ids": features["input_ids"], "attention_mask": features["attention_mask"],
                "query_ids": query_ids}


class DeadHeadGuard:
    """Stops a run whose ReLU head has died: when every passage of a step scores 0, every
    weight its query's tokens meet is 0, no gradient reaches the head or the body, so the
    model can never leave that state, and every later step only spends time (the loss sits at
    ln(group)). Seen on NFCorpus at ``--learning-rate 5e-5``, with the head at 1e-3 and at
    2e-4: dead from step 60; the saved model scored every passage 0. (Weights at tokens no
    query meets, such as [CLS], may stay positive, so the check is on the scores.)

    Example:
        >>> import torch
        >>> guard = DeadHeadGuard(patience=2)
        >>> guard(torch.ones(2, 3)); guard(torch.zeros(2, 3))
        >>> guard(torch.zeros(2, 3))  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        cormorant.errors.CormorantError: tildev2 training collapsed ...
    """

    def __init__(self, patience: int = 20) -> None:
        self.patience, self.dead, self.steps = patience, 0, 0

    def __call__(self, scores: Any) -> None:
        self.steps += 1
        self.dead = self.dead + 1 if float(scores.detach().max()) <= 0 else 0
        if self.dead >= self.patience:
            raise CormorantError(
                f"tildev2 training collapsed at step {self.steps}: every token weight has been"
                f" 0 for {self.dead} steps (every passage scored 0: the ReLU head died), so no"
                " gradient flows and"
                " training cannot recover; no model was written. Train again with a lower"
                " --learning-rate or head_learning_rate (in --config).")


class GroupTrainer(Trainer):
    """The Hugging Face Trainer with localized contrastive estimation as its loss: softmax
    cross-entropy of each group's first passage (the positive) against the group."""

    guard: DeadHeadGuard | None = None

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        import torch

        query_ids = inputs["query_ids"]
        weights = model(inputs["input_ids"], inputs["attention_mask"])
        shape = (query_ids.shape[0], -1, weights.shape[-1])
        scores = group_scores(weights.view(shape), inputs["input_ids"].view(shape), query_ids)
        if model.training:
            self.guard = self.guard or DeadHeadGuard()
            self.guard(scores)
        labels = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
        loss = torch.nn.functional.cross_entropy(scores, labels)
        return (loss, {"scores": scores}) if return_outputs else loss
