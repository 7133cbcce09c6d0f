"""GPL, Generative Pseudo Labeling (Wang et al., NAACL 2022): Margin-MSE on teacher margins
of mined negatives, the ``gpl`` strategy that ``cormorant train --unsupervised`` runs on
pseudo-queries (:mod:`cormorant.training.pseudo_queries`).

Steps, as in the authors' code (``UKPLab/gpl``; ../shared/PAPERS.md, Part 3 section 1):

1. Tuples: ``steps x batch`` of them (GPL: 140,000 x 32). The queries are shuffled once
   (seeded) and cycled through; each tuple takes one of its query's positives at random.
2. Negatives: each miner (``gpl_miners``: dense with the base model by default, through the
   embedding cache; ``dense,bm25`` adds BM25) retrieves its top ``gpl_negatives`` (50) and
   drops the query's positives; a tuple's negative is drawn uniformly from the *union* of the
   miners' lists.
3. Pseudo-labels: label = T(q, p) - T(q, n) from the teacher (``--teacher``, anything
   :func:`~cormorant.training.teacher.load_teacher` loads; default the base model as a
   bi-encoder). Query, positive and negative are each cut to ``teacher_max_length`` (350)
   tokens *separately* before scoring; a pair teacher never sees them truncated together.
4. Loss: Margin-MSE between the student's margin, ``scale`` x (cos(q, p) - cos(q, n)), and
   the label (:class:`~cormorant.training.losses.MarginMSELoss`).

There is no dev selection without labels: with ``--unsupervised`` no dev set exists and the
last checkpoint is the model written.

Example:
    >>> planned_steps(TrainConfig(dataset="d", out="o", max_steps=10), device="cpu")
    10
    >>> planned_steps(TrainConfig(dataset="d", out="o"), device="cuda")
    140000
"""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any, ClassVar

import numpy as np

from cormorant.errors import CormorantError
from cormorant.training.config import TrainConfig
from cormorant.training.data import TrainingSet
from cormorant.training.negatives import Negatives, ScoredNegative
from cormorant.training.strategies import Context, Plan, Strategy, negatives_for
from cormorant.training.teacher import (
    Pair,
    cached_scores,
    is_pipeline,
    load_teacher,
    scale_per_query,
)

log = logging.getLogger(__name__)

GPL_STEPS = 140_000  # GPL's steps_per_epoch (one epoch), batch 32
CPU_STEPS = 150  # ~20 minutes of Margin-MSE steps on 2 CPU cores; --max-steps for more
MINERS = ("dense", "bm25")

Tuple = tuple[str, str, str]  # (query id, positive doc id, negative doc id)


def planned_steps(config: TrainConfig, device: str) -> int:
    """Training steps, which size the pseudo-queries, the mining and the teacher scoring:
    ``--max-steps``, else GPL's 140,000 on a GPU and :data:`CPU_STEPS` on a CPU."""
    if config.max_steps > 0:
        return config.max_steps
    return GPL_STEPS if device == "cuda" else CPU_STEPS


def miners(config: TrainConfig) -> list[str]:
    """The retrievers ``gpl_miners`` names (comma-separated), checked."""
    names = [m.strip() for m in config.gpl_miners.split(",") if m.strip()]
    unknown = [m for m in names if m not in MINERS]
    if not names or unknown:
        raise CormorantError(f"gpl_miners must name one or more of {', '.join(MINERS)},"
                             f" got {config.gpl_miners!r}")
    return names


def query_order(qids: list[str], tuples: int, seed: int) -> list[str]:
    """The query of each tuple: the queries shuffled once (seeded) and cycled through.

    Example:
        >>> query_order(["a", "b"], 5, seed=0)
        ['a', 'b', 'a', 'b', 'a']
    """
    order = list(qids)
    random.Random(seed).shuffle(order)
    return [order[i % len(order)] for i in range(tuples)]


def union(lists: list[Negatives], data: TrainingSet) -> Negatives:
    """Each query's negatives from every miner, first-seen order, positives never included."""
    by_query: dict[str, list[ScoredNegative]] = {}
    for qid in data.queries:
        seen: dict[str, ScoredNegative] = {}
        for negatives in lists:
            for negative in negatives.by_query.get(qid, []):
                if negative.doc_id not in data.relevant(qid):
                    seen.setdefault(negative.doc_id, negative)
        by_query[qid] = list(seen.values())
    method = "gpl:" + "+".join(n.method for n in lists)
    return Negatives(by_query, dict(data.positives), method)


def draw_tuples(data: TrainingSet, negatives: Negatives, order: list[str],
                seed: int) -> list[Tuple]:
    """(query, positive, negative) per entry of ``order``: a positive drawn at random, a
    negative uniformly from the query's union of mined lists (any document not judged
    relevant when the union is empty, as on a corpus smaller than the mining depth)."""
    rng = random.Random(seed + 1)
    doc_ids = sorted(data.texts)
    drawn = []
    for qid in order:
        relevant = data.relevant(qid)
        pool = negatives.ids(qid)
        if not pool:
            pool = [d for d in doc_ids if d not in relevant]
            if not pool:
                raise CormorantError("every document is a positive of some query: no negative"
                                     " can be drawn")
        drawn.append((qid, rng.choice(data.positives[qid]), rng.choice(pool)))
    return drawn


def truncate_tokens(text: str, tokenizer: Any, limit: int) -> str:
    """``text`` cut after its first ``limit`` tokens (no special tokens counted), at the
    character where that token ends, so the teacher reads the original characters.

    Example:
        >>> truncate_tokens("one two three", tokenizer, 2)  # doctest: +SKIP
        'one two'
    """
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                        truncation=False, verbose=False)
    offsets = encoded["offset_mapping"]
    if len(offsets) <= limit:
        return text
    return text[:offsets[limit - 1][1]]


def teacher_view(data: TrainingSet, tuples: list[Tuple], tokenizer: Any,
                 limit: int) -> TrainingSet:
    """The tuples' queries and documents each truncated to ``limit`` tokens on its own (GPL
    truncates query, positive and negative separately, never the concatenated pair)."""
    qids = sorted({q for q, _, _ in tuples})
    docs = sorted({d for _, p, n in tuples for d in (p, n)})
    queries = {q: truncate_tokens(data.queries[q], tokenizer, limit) for q in qids}
    texts = {d: truncate_tokens(data.texts[d], tokenizer, limit) for d in docs}
    return TrainingSet(queries, {q: data.positives[q] for q in qids}, data.corpus, texts,
                       {q: data.qrels[q] for q in qids if q in data.qrels})


def teacher_margins(teacher: Any, view: TrainingSet, tuples: list[Tuple], norm: str = "none",
                    factor: float = 1.0) -> np.ndarray:
    """label = T(q, p) - T(q, n) per tuple, each distinct pair scored once (and cached), the
    scores first scaled per query as ``--teacher``'s are everywhere (``teacher_norm``,
    :func:`~cormorant.training.teacher.scale_per_query`); NaN where the teacher left a pair
    unscored."""
    pairs: list[Pair] = sorted({(q, d) for q, p, n in tuples for d in (p, n)})
    scaled = scale_per_query(pairs, cached_scores(teacher, view, pairs), norm, factor)
    scores = dict(zip(pairs, scaled.tolist(), strict=True))
    return np.asarray([scores[(q, p)] - scores[(q, n)] for q, p, n in tuples], dtype=np.float32)


class GPL(Strategy):
    """GPL's pseudo-labelling and Margin-MSE: mined negatives, teacher margins, one pass over
    ``steps x batch`` tuples. Works on any training queries, pseudo or judged."""

    name: ClassVar[str] = "gpl"

    def plan(self, ctx: Context, model: Any) -> Plan:
        from cormorant.training.losses import MarginMSELoss
        from cormorant.training.trainer import hardware

        config = ctx.config
        steps = planned_steps(config, hardware(config)["device"])
        order = query_order(list(ctx.data.queries), steps * config.batch_size, config.seed)
        used = ctx.data.subset(sorted(set(order)))
        negatives = self.mine(dataclasses.replace(ctx, data=used))
        tuples = draw_tuples(used, negatives, order, config.seed)
        teacher = load_teacher(config.teacher or ctx.base_model)
        view = teacher_view(used, tuples, model.tokenizer, config.teacher_max_length)
        norm = config.teacher_norm
        if norm == "auto":  # a pipeline's scores are on its own scale (RRF's ~1/60)
            norm = "minmax" if is_pipeline(teacher) else "none"
        margins = teacher_margins(teacher, view, tuples, norm,
                                  config.teacher_range if norm != "none" else 1.0)
        scored = np.isfinite(margins)  # a pipeline may leave a pair out of its ranking
        tuples, margins = [t for t, ok in zip(tuples, scored, strict=True) if ok], margins[scored]
        rows: dict[str, list[Any]] = {"query": [], "positive": [], "negative": [], "label": []}
        for row, (qid, pos, neg) in enumerate(tuples):
            rows["query"].append(used.queries[qid])
            rows["positive"].append(used.texts[pos])
            rows["negative"].append(used.texts[neg])
            rows["label"].append(row)
        loss = MarginMSELoss(model, margins, scale=config.scale)
        return Plan(rows, loss, batch_sampler="batch_sampler", negatives=negatives,
                    steps_per_epoch=steps, share=1.0, notes={
                        "queries": len(ctx.data.queries), "queries_used": len(used.queries),
                        "tuples": len(tuples), "teacher": teacher.fingerprint,
                        "miners": miners(config),
                        "margin_mean": round(float(margins.mean()), 4),
                        "margin_std": round(float(margins.std()), 4)})

    @staticmethod
    def mine(ctx: Context) -> Negatives:
        """Each miner's top ``gpl_negatives`` minus positives, and their union per query."""
        config = ctx.config
        lists = [negatives_for(ctx, method, num_negatives=config.gpl_negatives,
                               range_max=config.gpl_negatives, range_min=0,
                               relative_margin=None, absolute_margin=None, cross_encoder=None,
                               model=config.mining_model or ctx.base_model)
                 for method in miners(config)]
        return union(lists, ctx.data)
