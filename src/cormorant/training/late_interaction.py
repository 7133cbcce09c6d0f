"""``cormorant train --kind late-interaction``: a ColBERT model for ``chamfer`` and ``muvera``.

The model follows PyLate 1.6 (its ``models/colbert.py``, collator and losses): the base
encoder (``--base-model``, default all-MiniLM-L6-v2) and a bias-free ``Linear(hidden, 128)``,
every token vector L2-normalised, scored by MaxSim (sum over the query's positions of the best
dot product with the document's). Training encodes with the very
:class:`~cormorant.retrieval.colbert.ColBERTEncoder` that ``chamfer(model=DIR)`` and
``muvera(model=DIR)`` load the written folder with (its ``tokenize``, ``vectors`` and ``kept``),
so a (query, document) pair scores in training what it scores at search time:

- markers: ``[unused0]``/``[unused1]`` after [CLS], as Stanford checkpoints have them (the
  layout our loader reads, and what a BERT vocabulary holds, so no embedding is added); a
  vocabulary without them gets PyLate's ``[Q]``/``[D]`` as new tokens, named in
  ``artifact.metadata``;
- queries: ``query_length`` (32) tokens, padded with [MASK] (query expansion), the masks not
  attended to but scored; documents: ``document_length`` (180) tokens, punctuation skipped
  (documents only);
- loss: with no teacher, PyLate's contrastive loss: each query against every document of
  the batch (its positive, its ``late_negatives`` mined negatives, default 1 from BM25, and the
  other queries' documents), target i·N, temperature 1; with ``--teacher`` (any teacher of
  :mod:`cormorant.training.teacher`; scores computed once and cached), PyLate's distillation:
  KL(teacher‖student) over each query's own 1 + ``late_negatives`` candidates (default 8),
  both min-max normalised per query;
- the projection starts as ColBERT's does, a seeded random orthogonal matrix
  (``projection_start``, default ``orthogonal``; ``pca`` starts from the leading principal
  directions of the base model's token vectors over a sample of the corpus: 0.631 against
  0.623 on SciFact untrained, but 0.721 against 0.735 after 3 epochs), and learns at
  ``head_learning_rate`` (1e-3); the body at ``--learning-rate`` (2e-5);
- no dev metric: like ``tildev2`` this kind trains through the plain Hugging Face Trainer,
  the dev share is trained on as well, and the last step is kept (``--max-time`` bounds it).

The output is a Stanford-layout checkpoint (:meth:`ColBERTEncoder.save`).

Example:
    >>> from cormorant.training.config import TrainConfig
    >>> from cormorant.training.trainer import train
    >>> train(TrainConfig(dataset="data/scifact", out="models/colbert",
    ...                   kind="late-interaction"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import torch
from transformers import Trainer, TrainerCallback

from cormorant.errors import CormorantError
from cormorant.training.config import TrainConfig
from cormorant.training.late_losses import contrastive_loss, distillation_loss, maxsim
from cormorant.training.negatives import Negatives
from cormorant.training.strategies import Context, epoch_share, negatives_for, passes
from cormorant.training.trainer import Job, Outcome, Session, TrainingKind, training_arguments

log = logging.getLogger(__name__)
DIMENSION = 128
DEFAULT_NEGATIVES = "bm25"
NEGATIVES, TEACHER_NEGATIVES = 1, 7  # PyLate's triplets; 8 candidates a query to distil over
STANFORD_MARKERS = ("[unused0]", "[unused1]")
PYLATE_MARKERS = ("[Q]", "[D]")


class LateInteractionKind(TrainingKind):
    """A ColBERT model: a fresh 128-dimensional projection on ``--base-model``."""

    name: ClassVar[str] = "late-interaction"

    def base_model(self, config: TrainConfig) -> str:
        from cormorant.retrieval.encoders import resolve_model

        return resolve_model(config.base_model)

    def setup(self, session: Session) -> Job:
        return LateJob(session)


def negatives_per_query(config: TrainConfig) -> int:
    """``late_negatives``, or its default: 1 (PyLate's triplets), 7 with a teacher.

    Example:
        >>> negatives_per_query(TrainConfig(dataset="d", out="o", kind="late-interaction"))
        1
    """
    if config.late_negatives is not None:
        return config.late_negatives
    return TEACHER_NEGATIVES if config.teacher else NEGATIVES


def start_encoder(base: str, config: TrainConfig, data: Any = None) -> Any:
    """The untrained ColBERT encoder: ``base``'s transformer and tokenizer, its markers, a
    projection to 128 dimensions, and the training lengths.

    The projection starts as ``config.projection_start`` says: ``orthogonal`` (the default)
    is a seeded random orthogonal matrix (ColBERT's and PyLate's fresh layer); ``pca`` (needs
    ``data``, a training set) is :func:`principal_directions` of the base model's token
    vectors over :func:`projection_sample` of its documents, drawn only then."""
    from cormorant.retrieval.colbert import ColBERTEncoder
    from cormorant.retrieval.tilde import load_transformer

    bert, tokenizer = load_transformer(base, "late-interaction")
    if tokenizer.mask_token_id is None:
        raise CormorantError(f"{base}: its tokenizer has no [MASK] token to expand queries with")
    markers = STANFORD_MARKERS
    if not all(m in tokenizer.get_vocab() for m in markers):
        markers = PYLATE_MARKERS
        tokenizer.add_tokens(list(markers), special_tokens=True)
        bert.resize_token_embeddings(len(tokenizer))
    generator = torch.Generator().manual_seed(config.seed)
    weight = torch.empty(DIMENSION, bert.config.hidden_size)
    torch.nn.init.orthogonal_(weight, generator=generator)
    settings = {"query_maxlen": config.query_length, "doc_maxlen": config.document_length,
                "query_token_id": markers[0], "doc_token_id": markers[1]}
    encoder = ColBERTEncoder.from_parts(base, tokenizer, bert, weight, settings, device="cpu")
    if config.projection_start == "pca":
        if bert.config.hidden_size < DIMENSION:
            raise CormorantError(f"late-interaction: projection_start pca keeps {DIMENSION} of"
                                 f" {base}'s {bert.config.hidden_size} dimensions, more than it"
                                 " has; use projection_start orthogonal")
        sample = projection_sample(data, config) if data is not None else []
        if not sample:
            raise CormorantError("late-interaction: projection_start pca needs documents to"
                                 " sample token vectors from")
        encoder.linear.weight.data.copy_(principal_directions(encoder, sample, DIMENSION))
    return encoder


def principal_directions(encoder: Any, documents: list[str], dim: int) -> Any:
    """The ``dim`` leading right singular vectors (dim x hidden) of the base transformer's
    token vectors over ``documents``, as the encoder reads documents (marker, length,
    punctuation skipped), not centred.

    Why: the uncentred leading directions are the 128-d linear map that keeps the most of the
    token vectors' dot products in least squares, where a random one keeps an arbitrary part.
    Measured on SciFact before any training: 0.631 nDCG@10 under ``chamfer`` against 0.623
    from a random orthogonal start (exact Chamfer on the 384-d vectors: 0.712; the rest of that
    gap is ColBERT's conventions, markers and [MASK] expansion). The gain does not survive
    training: after 3 epochs the random start scored 0.735 and this one 0.721 (p = 0.18), so
    ``orthogonal`` is the default and this start an option.

    Example:
        >>> principal_directions(encoder, ["a passage", "another one"], 128).shape  # doctest: +SKIP
        torch.Size([128, 384])
    """
    rows = []
    with torch.inference_mode():
        for start in range(0, len(documents), encoder.batch_size):
            ids, mask = encoder.tokenize(documents[start:start + encoder.batch_size], "document")
            hidden = encoder.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            rows.append(hidden[encoder.kept(ids, mask, "document")].float())
    tokens = torch.cat(rows)
    if tokens.shape[1] < dim:
        raise CormorantError(f"late-interaction: projection_start pca keeps {dim} of the base"
                             f" model's {tokens.shape[1]} dimensions, which is more than it has;"
                             " use projection_start orthogonal")
    if tokens.shape[0] < dim:
        raise CormorantError(f"late-interaction: {tokens.shape[0]} token vectors in the sample,"
                             f" fewer than the {dim} directions wanted; sample more documents")
    _, _, directions = torch.linalg.svd(tokens, full_matrices=False)
    return directions[:dim]


class LateModel(torch.nn.Module):
    """The encoder's transformer and projection as one module for the Trainer; ``save``
    writes the Stanford-layout checkpoint."""

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.encoder = encoder
        self.bert, self.linear = encoder.bert, encoder.linear

    def forward(self, ids: Any, mask: Any) -> Any:
        return self.encoder.vectors(ids, mask)

    def save(self, path: str) -> None:
        self.encoder.save(path)


class LateJob(Job):
    """Rows of (query, positive, negatives[, teacher scores]) for every epoch and the model."""

    def __init__(self, session: Session) -> None:
        from cormorant.training.cross_encoder import draw_groups
        from cormorant.training.tildev2 import with_dev

        config = self.config = session.config
        self.work = session.work
        data = with_dev(session.data, session.dev)
        self.model = LateModel(start_encoder(session.base_model, config, data))
        self.per_query = negatives_per_query(config)
        if config.teacher and self.per_query < 1:
            raise CormorantError("late-interaction with --teacher needs late_negatives of at"
                                 " least 1: distillation ranks each query's own candidates")
        self.method = "in-batch" if self.per_query == 0 else (
            DEFAULT_NEGATIVES if config.negatives == "in-batch" else config.negatives)
        self.negatives = Negatives({}, {}, "in-batch") if self.per_query == 0 else \
            negatives_for(Context(config, data, session.base_model, session.work), self.method)
        draws = list(draw_groups(data, self.negatives, self.per_query, config, fill=True))
        teacher = row_teacher_scores(config, data, draws)
        # A row the teacher did not score whole has no distillation target: left out.
        self.rows = [{"query": data.queries[q], "documents": [data.texts[d] for d in [p, *n]],
                      "teacher": teacher[i] if teacher else None}
                     for i, (q, p, n) in enumerate(draws) if not teacher or teacher[i]]
        log.info("late-interaction: %d rows of 1 + %d documents from %d queries (%s negatives,"
                 " %s loss)", len(self.rows), self.per_query, len(data.queries), self.method,
                 "distillation" if teacher else "contrastive")

    def trainer(self, callbacks: list[TrainerCallback]) -> Any:
        from transformers import TrainingArguments

        config = self.config
        per_epoch = math.ceil(len(self.rows) / passes(config) / config.batch_size)
        args = training_arguments(TrainingArguments, config, self.work, None,
                                  every=config.eval_steps or per_epoch,
                                  learning_rate=config.peak_learning_rate,
                                  share=epoch_share(config), remove_unused_columns=False)
        head = list(self.model.linear.parameters())
        body = list(self.model.bert.parameters())
        optimizer = torch.optim.AdamW(
            [{"params": body, "lr": config.peak_learning_rate,
              "weight_decay": config.weight_decay},
             {"params": head, "lr": config.head_learning_rate, "weight_decay": 0.0}])
        self.model.train()
        return MaxSimTrainer(model=self.model, args=args, train_dataset=self.rows,
                             data_collator=LateCollator(self.model.encoder),
                             optimizers=(optimizer, None), callbacks=callbacks)

    def finish(self) -> None:
        self.model.eval()

    def summary(self, trainer: Any, outcome: Outcome) -> dict[str, Any]:
        config = self.config
        return {"kind": "late-interaction", "negatives": self.method,
                "negatives_per_query": self.per_query,
                "loss": "distillation" if config.teacher else "contrastive",
                "teacher": config.teacher, "dim": DIMENSION,
                "query_length": config.query_length, "document_length": config.document_length,
                "markers": [self.model.encoder.config["query_token_id"],
                            self.model.encoder.config["doc_token_id"]],
                "rows": len(self.rows), "seconds": round(outcome.seconds, 1),
                "time_budget": outcome.time_budget}


def projection_sample(data: Any, config: TrainConfig) -> list[str]:
    """``projection_sample`` documents drawn with the run's seed: the positives of the training
    queries first (the documents training reads), then any others."""
    import random

    judged = sorted({d for docs in data.positives.values() for d in docs if d in data.texts})
    others = sorted(set(data.texts) - set(judged))
    rng = random.Random(config.seed)
    rng.shuffle(judged)
    rng.shuffle(others)
    return [data.texts[d] for d in (judged + others)[:config.projection_sample]]


def row_teacher_scores(config: TrainConfig, data: Any,
                       draws: list[tuple[str, str, list[str]]]) -> list[list[float] | None] | None:
    """The teacher's score of each row's candidates (positive first), None for a row with a
    pair the teacher left unscored (a pipeline's ranking may leave one out), or None without
    ``--teacher``. Through :func:`~cormorant.training.teacher.teacher_scores`, the one path every
    strategy takes to ``--teacher`` (cached, scaled per ``teacher_norm``; the KL loss min-max
    normalises per query anyway)."""
    if not config.teacher:
        return None
    from cormorant.training.teacher import teacher_scores

    pairs = [(q, d) for q, p, negs in draws for d in [p, *negs]]
    found = teacher_scores(str(config.teacher), data, pairs, norm=config.teacher_norm,
                           factor=config.teacher_range)
    rows = [[found.get((q, d)) for d in [p, *negs]] for q, p, negs in draws]
    return [None if None in row else row for row in rows]


class LateCollator:
    """A batch as the encoder tokenizes it: queries (with [MASK] expansion), the rows'
    documents in order, which document positions count, and the teacher's scores."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        query_ids, query_mask = self.encoder.tokenize([r["query"] for r in rows], "query")
        documents = [d for r in rows for d in r["documents"]]
        doc_ids, doc_mask = self.encoder.tokenize(documents, "document")
        batch = {"query_ids": query_ids, "query_mask": query_mask, "doc_ids": doc_ids,
                 "doc_mask": doc_mask, "doc_kept": self.encoder.kept(doc_ids, doc_mask,
                                                                     "document")}
        if rows[0]["teacher"] is not None:
            batch["teacher"] = torch.tensor([r["teacher"] for r in rows])
        return batch


def own_scores(queries: Any, documents: Any, kept: Any) -> Any:
    """Each query's MaxSim against its own row's documents only: (queries x per row)."""
    rows, per_row = queries.shape[0], documents.shape[0] // queries.shape[0]
    docs = documents.view(rows, per_row, *documents.shape[1:])
    dots = torch.einsum("aqd,anpd->anqp", queries, docs)
    dots = dots.masked_fill(~kept.view(rows, per_row, 1, -1), float("-inf"))
    return dots.amax(dim=-1).sum(dim=-1)


class MaxSimTrainer(Trainer):
    """The Hugging Face Trainer with PyLate's losses over MaxSim scores."""

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        queries = model(inputs["query_ids"], inputs["query_mask"])
        documents = model(inputs["doc_ids"], inputs["doc_mask"])
        per_row = documents.shape[0] // queries.shape[0]
        if "teacher" in inputs:
            scores = own_scores(queries, documents, inputs["doc_kept"])
            loss = distillation_loss(scores, inputs["teacher"].to(scores.dtype))
        else:
            scores = maxsim(queries, documents, inputs["doc_kept"])
            loss = contrastive_loss(scores, per_row)
        return (loss, {"scores": scores}) if return_outputs else loss
