"""Training strategies: how each one builds its training rows, loss and batches.

A strategy is registered by name under ``cormorant.strategies`` (``in-batch``, ``random``,
``bm25``, ``dense``, ``star``, ``adore``, ``tas-balanced``, ``distill-query``) and turns the
training set into a :class:`Plan` that the sentence-transformers Trainer runs.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cormorant import registry
from cormorant.errors import CormorantError
from cormorant.training.config import TrainConfig
from cormorant.training.data import TrainingSet
from cormorant.training.negatives import MiningConfig, Negatives, mine

log = logging.getLogger(__name__)
GROUP = "cormorant.strategies"


@dataclass
class Context:
    """What a strategy gets: the options, the training queries, and where to put files."""

    config: TrainConfig
    data: TrainingSet
    base_model: str
    work: Path
    # --teacher's scaled scores of every (query, positive) and (query, mined negative) pair,
    # computed on first use (denoising and margins read the same ones), and what the steps
    # before the plan report for summary.json.
    scores: dict[tuple[str, str], float] | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """What the Trainer runs: rows (text columns + ``label``), a loss, how batches are drawn."""

    rows: dict[str, list[Any]]
    loss: Any
    batch_sampler: Any = "no_duplicates"
    steps_per_epoch: int = 1
    negatives: Negatives | None = None
    fixed_documents: dict[str, np.ndarray] | None = None
    document_encoder: str | None = None
    learning_rate: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    # The share of ``rows`` the Trainer runs through; None: what ``--epochs`` asks of rows built
    # for ceil(epochs) passes (see :func:`epoch_share`).
    share: float | None = None


class Strategy:
    """Base: loads the model to train; subclasses build the plan."""

    name: ClassVar[str] = "strategy"

    def model(self, ctx: Context) -> Any:
        return load_model(ctx.base_model)

    def plan(self, ctx: Context, model: Any) -> Plan:
        raise NotImplementedError


def load_model(path: str) -> Any:
    from cormorant.retrieval.encoders import load_sentence_transformer

    return load_sentence_transformer(path)


def strategy(name: str) -> Strategy:
    """The strategy registered as ``name``."""
    return registry.get(GROUP, name)()


def passes(config: TrainConfig) -> int:
    """Passes over the training queries that rows are drawn for: ``--epochs`` rounded up.

    Example:
        >>> passes(TrainConfig(dataset=Path("d"), out=Path("o"), epochs=1.5))
        2
    """
    return max(1, int(np.ceil(config.epochs)))


def epoch_share(config: TrainConfig) -> float:
    """Rows hold ceil(epochs) passes, each drawn afresh; the Trainer runs this share of them,
    so ``--epochs 0.5`` trains half a pass and ``--epochs 1.5`` one and a half.

    Example:
        >>> epoch_share(TrainConfig(dataset=Path("d"), out=Path("o"), epochs=1.5))
        0.75
    """
    return float(config.epochs) / passes(config)


def _steps(rows: int, config: TrainConfig) -> int:
    return max(1, int(np.ceil(rows / config.batch_size)))


def mining_config(config: TrainConfig, **changes: Any) -> MiningConfig:
    base = MiningConfig(num_negatives=config.num_negatives, range_min=config.range_min,
                        range_max=config.range_max, relative_margin=config.relative_margin,
                        absolute_margin=config.absolute_margin,
                        cross_encoder=config.mining_cross_encoder,
                        model=config.mining_model, seed=config.seed)
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def negatives_for(ctx: Context, method: str, **changes: Any) -> Negatives:
    """The user's negatives file if given, else mined with ``method`` (and saved for reuse)."""
    if ctx.config.negatives_file is not None:
        return Negatives.load(ctx.config.negatives_file, ctx.data)
    saved = ctx.work / f"negatives-{method}.jsonl"
    if saved.is_file():  # a resumed run reuses what it mined
        negatives = Negatives.load(saved, ctx.data)
    else:
        negatives = mine(ctx.data, method, mining_config(ctx.config, **changes))
        negatives.save(saved)  # as mined: denoising is repeated from the cached teacher scores
    return denoised(ctx, negatives) if ctx.config.denoise else negatives


def scores_for(ctx: Context, negatives: Negatives) -> dict[tuple[str, str], float]:
    """``--teacher``'s scores (scaled per query, see ``teacher_norm``) of each query's
    positives and negatives, computed once per run: denoising, Margin-MSE of the hard-negative
    strategies and TAS-Balanced all read them from here. Pairs the teacher did not score are
    absent."""
    from cormorant.training.teacher import teacher_scores

    if ctx.scores is None:
        config = ctx.config
        pairs = [(q, d) for q in ctx.data.queries if negatives.ids(q)
                 for d in ctx.data.positives[q] + negatives.ids(q)]
        ctx.scores = teacher_scores(str(config.teacher), ctx.data, pairs,
                                    norm=config.teacher_norm, factor=config.teacher_range)
        ctx.notes["teacher"] = {"spec": config.teacher, "pairs": len(pairs),
                                "scored": len(ctx.scores)}
    return ctx.scores


def denoised(ctx: Context, negatives: Negatives) -> Negatives:
    """``negatives`` without those ``--teacher`` scores near or above the positives
    (:mod:`cormorant.training.denoise`); what was dropped goes to ``summary.json``."""
    from cormorant.training.denoise import denoise

    kept, report = denoise(negatives, scores_for(ctx, negatives), ctx.config.denoise_margin)
    ctx.notes["denoise"] = report.record()
    return kept


class InBatch(Strategy):
    """Contrastive loss over in-batch negatives (MultipleNegativesRankingLoss, or its cached
    variant with ``cached: true`` for large batches on small memory)."""

    name: ClassVar[str] = "in-batch"

    def plan(self, ctx: Context, model: Any) -> Plan:
        rows: dict[str, list[Any]] = {"query": [], "positive": []}
        for qid, positive, _ in draw_instances(ctx):
            rows["query"].append(ctx.data.queries[qid])
            rows["positive"].append(ctx.data.texts[positive])
        return Plan(rows, contrastive_loss(model, ctx.config),
                    steps_per_epoch=_steps(len(ctx.data.queries), ctx.config))


def draw_instances(ctx: Context, negatives: Negatives | None = None
                   ) -> list[tuple[str, str, str | None]]:
    """(query id, positive, negative) for every query in every epoch, seeded: a positive drawn
    at random, and a negative drawn from the query's pool in ``negatives`` (any document not
    judged relevant when its pool is empty); no negative without ``negatives``."""
    rng = random.Random(ctx.config.seed)
    doc_ids = sorted(ctx.data.texts)
    drawn = []
    for _ in range(passes(ctx.config)):
        for qid in ctx.data.queries:
            positive = rng.choice(ctx.data.positives[qid])
            negative = None
            if negatives is not None:
                pool = negatives.ids(qid) or _random_negatives(rng, doc_ids,
                                                               ctx.data.relevant(qid))
                negative = rng.choice(pool)
            drawn.append((qid, positive, negative))
    return drawn


def contrastive_loss(model: Any, config: TrainConfig) -> Any:
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.util import get_world_size

    gather = get_world_size() > 1  # in-batch negatives from every GPU under torchrun
    if config.cached:
        return losses.CachedMultipleNegativesRankingLoss(
            model, scale=config.scale, mini_batch_size=config.mini_batch_size,
            gather_across_devices=gather)
    return losses.MultipleNegativesRankingLoss(model, scale=config.scale,
                                               gather_across_devices=gather)


class HardNegatives(Strategy):
    """In-batch negatives plus one mined negative per query (``random``, ``bm25``, ``dense``)."""

    name: ClassVar[str] = "hard-negatives"

    def plan(self, ctx: Context, model: Any) -> Plan:
        negatives = negatives_for(ctx, self.name)
        if ctx.config.teacher:
            return margin_mse_plan(ctx, model, negatives)
        rows: dict[str, list[Any]] = {"query": [], "positive": [], "negative": []}
        for qid, positive, negative in draw_instances(ctx, negatives):
            rows["query"].append(ctx.data.queries[qid])
            rows["positive"].append(ctx.data.texts[positive])
            rows["negative"].append(ctx.data.texts[negative])
        return Plan(rows, contrastive_loss(model, ctx.config), negatives=negatives,
                    steps_per_epoch=_steps(len(ctx.data.queries), ctx.config))


def margin_mse_plan(ctx: Context, model: Any, negatives: Negatives) -> Plan:
    """Hard negatives distilled from ``--teacher``: each instance's (positive, mined negative)
    pair is trained with Margin-MSE against the teacher's margin (Hofstätter et al., 2020),
    without in-batch negatives. Only pairs the teacher scored are drawn; queries left with no
    scored positive or negative are left out and counted."""
    from cormorant.training.losses import MarginMSELoss

    scores = scores_for(ctx, negatives)
    pools = {q: [n for n in negatives.by_query.get(q, []) if (q, n.doc_id) in scores]
             for q in ctx.data.queries}
    positives = {q: [p for p in ctx.data.positives[q] if (q, p) in scores]
                 for q in ctx.data.queries}
    qids = [q for q in ctx.data.queries if pools[q] and positives[q]]
    if not qids:
        raise CormorantError(f"the teacher {ctx.config.teacher} scored no (positive, negative)"
                             " pair of any training query: nothing to distil")
    data = TrainingSet({q: ctx.data.queries[q] for q in qids}, {q: positives[q] for q in qids},
                       ctx.data.corpus, ctx.data.texts, ctx.data.qrels)
    usable = Negatives({q: pools[q] for q in qids}, data.positives, negatives.method)
    rows: dict[str, list[Any]] = {"query": [], "positive": [], "negative": [], "label": []}
    margins = []
    for qid, positive, negative in draw_instances(replace(ctx, data=data), usable):
        rows["label"].append(len(margins))
        margins.append(scores[(qid, positive)] - scores[(qid, str(negative))])
        rows["query"].append(data.queries[qid])
        rows["positive"].append(data.texts[positive])
        rows["negative"].append(data.texts[str(negative)])
    loss = MarginMSELoss(model, np.asarray(margins, dtype=np.float32), scale=ctx.config.scale)
    return Plan(rows, loss, negatives=negatives, steps_per_epoch=_steps(len(qids), ctx.config),
                notes={"loss": "margin-mse", "queries_distilled": len(qids),
                       "queries_left_out": len(ctx.data.queries) - len(qids)})


def _random_negatives(rng: random.Random, doc_ids: list[str], relevant: set[str]) -> list[str]:
    while True:
        doc = rng.choice(doc_ids)
        if doc not in relevant:
            return [doc]


class RandomNegatives(HardNegatives):
    name: ClassVar[str] = "random"


class BM25Negatives(HardNegatives):
    name: ClassVar[str] = "bm25"


class DenseNegatives(HardNegatives):
    name: ClassVar[str] = "dense"


class STAR(Strategy):
    """STAR: static hard negatives from a warm-up model (its top ``star_pool`` minus positives,
    never refreshed), one per instance drawn uniformly; random negatives are the batch's other
    documents; one pooled pairwise loss with relevant pairs masked."""

    name: ClassVar[str] = "star"

    def plan(self, ctx: Context, model: Any) -> Plan:
        from cormorant.training.losses import STARLoss

        pool = ctx.config.star_pool
        negatives = negatives_for(ctx, "dense", num_negatives=pool, range_max=pool + 10,
                                  relative_margin=None, absolute_margin=None,
                                  model=ctx.config.mining_model or ctx.base_model)
        doc_index = {d: i for i, d in enumerate(sorted(ctx.data.texts))}
        qids = list(ctx.data.queries)
        relevant = {i: {doc_index[d] for d in ctx.data.relevant(q)} for i, q in enumerate(qids)}
        query_index = {q: i for i, q in enumerate(qids)}
        rows: dict[str, list[Any]] = {"query": [], "positive": [], "negative": [], "label": []}
        index_rows: list[tuple[int, int, int]] = []
        for qid, positive, negative in draw_instances(ctx, negatives):
            rows["label"].append(len(index_rows))
            index_rows.append((query_index[qid], doc_index[positive], doc_index[negative]))
            rows["query"].append(ctx.data.queries[qid])
            rows["positive"].append(ctx.data.texts[positive])
            rows["negative"].append(ctx.data.texts[negative])
        loss = STARLoss(model, index_rows, relevant, scale=ctx.config.scale)
        return Plan(rows, loss, negatives=negatives,
                    steps_per_epoch=_steps(len(qids), ctx.config))


class ADORE(Strategy):
    """ADORE: the query encoder trains against a fixed document index of ``document_model``
    (default: the base model, e.g. a STAR model), with negatives retrieved at every step."""

    name: ClassVar[str] = "adore"

    def plan(self, ctx: Context, model: Any) -> Plan:
        from cormorant.index.embeddings import corpus_embeddings
        from cormorant.retrieval.encoders import SentenceTransformerEncoder
        from cormorant.training.losses import ADORELoss

        doc_model = ctx.config.document_model or ctx.base_model
        encoder = SentenceTransformerEncoder(doc_model)
        vectors = np.asarray(corpus_embeddings(encoder, ctx.data.corpus))
        doc_ids = [d.doc_id for d in ctx.data.corpus]
        row_of = {d: i for i, d in enumerate(doc_ids)}
        qids = list(ctx.data.queries)
        relevant = {q: [row_of[d] for d in ctx.data.positives[q]] for q in qids}
        rows: dict[str, list[Any]] = {"query": [], "label": []}
        for _ in range(passes(ctx.config)):
            for i, qid in enumerate(qids):
                rows["query"].append(ctx.data.queries[qid])
                rows["label"].append(i)
        loss = ADORELoss(model, vectors, relevant, qids, top_k=ctx.config.adore_top_k,
                         metric_cut=ctx.config.metric_cut, scale=ctx.config.scale)
        fixed = dict(zip(doc_ids, vectors, strict=True))
        return Plan(rows, loss, batch_sampler="batch_sampler", fixed_documents=fixed,
                    document_encoder=encoder.path,
                    steps_per_epoch=_steps(len(qids), ctx.config))


class TASBalanced(Strategy):
    """TAS-Balanced: topic-clustered batches, margin-balanced pairs, Margin-MSE from a teacher
    plus an in-batch Margin-MSE from a second (bi-encoder) teacher."""

    name: ClassVar[str] = "tas-balanced"

    def plan(self, ctx: Context, model: Any) -> Plan:
        from cormorant.training.losses import TASBalancedLoss
        from cormorant.training.tas_balanced import ReplayBatches, cluster_queries, draw_batches
        from cormorant.training.teacher import BiEncoderTeacher

        config = ctx.config
        if not config.teacher:
            raise CormorantError("tas-balanced needs --teacher: a cross-encoder folder (train one"
                                 " with 'cormorant train --kind cross-encoder'), a bi-encoder"
                                 " folder, a scores file or a pipeline such as"
                                 " 'rrf(bm25, chamfer)'")
        negatives = negatives_for(ctx, config.tas_candidates)
        qids = [q for q in ctx.data.queries if negatives.ids(q)]
        scores = scores_for(ctx, negatives)
        inbatch = BiEncoderTeacher(config.inbatch_teacher or ctx.base_model, scale=config.scale)
        query_vectors, doc_vectors = inbatch.vectors(ctx.data)
        # Only pairs the teacher scored have a margin (a pipeline may leave some out).
        candidates = [(i, pos, neg) for i, qid in enumerate(qids)
                      for pos in ctx.data.positives[qid] for neg in negatives.ids(qid)
                      if (qid, pos) in scores and (qid, neg) in scores]
        margins = [scores[(qids[i], pos)] - scores[(qids[i], neg)] for i, pos, neg in candidates]
        clusters = config.clusters or max(1, len(qids) // (4 * config.batch_size))
        query_matrix = np.stack([query_vectors[q] for q in qids])
        cluster_of = cluster_queries(query_matrix, clusters, config.seed)
        per_epoch = max(1, len(qids) // config.batch_size)
        drawn = draw_batches([i for i, _, _ in candidates], margins, cluster_of.tolist(),
                             config.batch_size, config.seed, _tas_batch_count(config, per_epoch))
        # Only the drawn pairs become rows: all candidates would be 763k rows of three texts on
        # NFCorpus, for the 68 x 32 an epoch draws.
        used = sorted({c for batch in drawn for c in batch})
        row_of = {c: row for row, c in enumerate(used)}
        rows, (row_indices, documents) = _tas_rows(ctx, qids, [candidates[c] for c in used])
        loss = TASBalancedLoss(model, np.asarray([margins[c] for c in used], dtype=np.float32),
                               query_matrix, np.stack([doc_vectors[d] for d in documents]),
                               row_indices, inbatch_weight=config.inbatch_weight,
                               scale=config.scale,
                               teacher_scale=config.scale)  # the student's score scale
        batch_sampler = ReplayBatches([[row_of[c] for c in batch] for batch in drawn])
        return Plan(rows, loss, batch_sampler=batch_sampler, negatives=negatives,
                    steps_per_epoch=per_epoch,
                    notes={"clusters": int(len(set(cluster_of.tolist()))), "pairs": len(margins),
                           "pairs_drawn": len(used)})


def _tas_batch_count(config: TrainConfig, per_epoch: int) -> int:
    """Batches to draw up front: ceil(epochs) passes, or more when ``--max-steps`` asks for more
    steps (each of the ``WORLD_SIZE`` processes takes its own batches), so a long run meets
    fresh draws instead of replaying the first ones. A multiple of ``WORLD_SIZE``: accelerate
    deals the batches round-robin, and processes with unequal step counts would hang DDP."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    batches = per_epoch * passes(config)
    if config.max_steps > 0:
        batches = max(batches, config.max_steps * world)
    return -(-batches // world) * world


def _tas_rows(ctx: Context, qids: list[str], pairs: list[tuple[int, str, str]]
              ) -> tuple[dict[str, list[Any]], tuple[np.ndarray, list[str]]]:
    """The Trainer's rows for TAS-Balanced's drawn (query index, positive, negative) pairs, and
    the in-batch teacher's view of them: each row's (query, positive, negative) indices into
    the query matrix and into the documents the rows use (listed in the order first met)."""
    rows: dict[str, list[Any]] = {"query": [], "positive": [], "negative": [], "label": []}
    doc_index: dict[str, int] = {}
    indices = []
    for row, (i, pos, neg) in enumerate(pairs):
        rows["query"].append(ctx.data.queries[qids[i]])
        rows["positive"].append(ctx.data.texts[pos])
        rows["negative"].append(ctx.data.texts[neg])
        rows["label"].append(row)
        indices.append((i, doc_index.setdefault(pos, len(doc_index)),
                        doc_index.setdefault(neg, len(doc_index))))
    return rows, (np.asarray(indices, dtype=np.int32).reshape(-1, 3), list(doc_index))


class DistillQuery(Strategy):
    """A smaller query tower trained to reproduce the base model's query vectors (MSE plus
    cosine); documents keep the base model's index, so serving pays only the small encoder."""

    name: ClassVar[str] = "distill-query"

    def model(self, ctx: Context) -> Any:
        if ctx.config.student:
            student = load_model(ctx.config.student)
        else:
            student = load_model(ctx.base_model)
            truncate_layers(student, ctx.config.student_layers)
        return student

    def plan(self, ctx: Context, model: Any) -> Plan:
        from cormorant.index.embeddings import corpus_embeddings
        from cormorant.retrieval.encoders import SentenceTransformerEncoder
        from cormorant.training.losses import QueryDistillLoss

        teacher = SentenceTransformerEncoder(ctx.base_model)
        texts = distill_texts(ctx)
        targets = teacher.encode_queries(texts)
        match_dimension(model, teacher.dim)
        rows: dict[str, list[Any]] = {"query": [], "label": []}
        for _ in range(ctx.config.distill_epochs):
            rows["query"] += texts
            rows["label"] += list(range(len(texts)))
        docs = np.asarray(corpus_embeddings(teacher, ctx.data.corpus))
        fixed = {d.doc_id: docs[i] for i, d in enumerate(ctx.data.corpus)}
        return Plan(rows, QueryDistillLoss(model, targets), batch_sampler="batch_sampler",
                    fixed_documents=fixed, document_encoder=teacher.path,
                    learning_rate=ctx.config.distill_learning_rate,
                    steps_per_epoch=_steps(len(texts), ctx.config), share=1.0,
                    notes={"distill_texts": len(texts)})


def distill_texts(ctx: Context) -> list[str]:
    """What the student learns to embed like the teacher: the training queries and, with
    ``distill_titles``, the corpus's document titles (short, query-like, and unlabelled, so no
    judgment is used). A few hundred queries alone are too few to align a cut-down encoder."""
    texts = list(ctx.data.queries.values())
    if ctx.config.distill_titles:
        texts += sorted({d.title for d in ctx.data.corpus if d.title.strip()})
    return texts


def truncate_layers(model: Any, layers: int) -> None:
    """Keep the first ``layers`` transformer layers (a DistilBERT-style student start)."""
    backbone = model[0].auto_model
    encoder = getattr(backbone, "encoder", None)
    blocks = getattr(encoder, "layer", None)
    if blocks is None:
        raise CormorantError("--student-layers works on BERT-like models; give --student PATH")
    if layers >= len(blocks):
        raise CormorantError(f"--student-layers {layers} is not fewer than the base model's"
                             f" {len(blocks)} layers")
    encoder.layer = blocks[:layers]
    backbone.config.num_hidden_layers = layers


def match_dimension(model: Any, dim: int) -> None:
    """Append a linear projection when the student's output size differs from the teacher's."""
    dimension = getattr(model, "get_embedding_dimension", None) \
        or model.get_sentence_embedding_dimension  # before sentence-transformers 6
    size = dimension()
    if size == dim:
        return
    from sentence_transformers.models import Dense

    model.append(Dense(size, dim, activation_function=None))
