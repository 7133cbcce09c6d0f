"""``cormorant train --kind seal``: fine-tune a SEAL generator to write its documents' n-grams.

Rows are (prompt, n-gram) pairs, the prompt being the one the ``seal`` stage decodes with:

- supervised, per training query and its first positive document: the title as an n-gram,
  the title as a title key (`` title @@`` under the title prompt, ``TITLE_COPIES`` copies, as
  the paper has it), and ``SPANS_PER_QUERY`` spans of ``SPAN_WORDS`` words whose start is
  drawn with probability ∝ exp(overlap with the query), never at a stop word (the spans that
  best match the query are the likeliest, but not the only ones, as in the paper's fuzzy-match
  sampling);
- unsupervised, per sampled corpus document: span → title, title → span, and span → another
  span of the same document (the paper's passage-to-title and span-to-span pairs), so the
  model learns the corpus itself, not only the documents training queries reach;
- optionally, synthetic queries (``--synthetic-queries``, a ``cormorant data synth-queries``
  folder) with the title and ``SPANS_PER_SYNTHETIC_QUERY`` spans of their document, the
  document-side queries Pradeep et al. (2023) found central to generative retrieval at scale.

Dev selection: held-out training queries (``--dev-split``, else ``--dev-fraction``, as for the
other kinds) give supervised pairs whose teacher-forced loss is measured four times a run; the
checkpoint with the lowest is kept. A retrieval metric would mean decoding, seconds a query.

A causal model is trained on ``prompt + n-gram`` with the loss on the n-gram only; a seq2seq
model reads the prompt and writes the n-gram. The output is a normal Hugging Face model folder
(``seal(model=OUT)``), written atomically with the training logs under ``OUT/training/``.
"""

from __future__ import annotations

import logging
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from transformers import TrainerCallback

from cormorant.retrieval.seal.generator import TITLE_END
from cormorant.training.config import TrainConfig
from cormorant.training.trainer import Job, Outcome, Session, TrainingKind, training_arguments

log = logging.getLogger(__name__)
SPAN_WORDS = 10
SPANS_PER_QUERY = 10
TITLE_COPIES = 3  # the paper's copies of each query -> title pair
# A synthetic query covers one document, and there are several per document: fewer spans each
# keep the corpus's share of the pairs from swamping the labelled queries.
SPANS_PER_SYNTHETIC_QUERY = 3
# Dev selection is by teacher-forced loss on held-out queries' pairs (decoding for a retrieval
# metric costs seconds a query here); this many pairs keep one evaluation under a minute.
DEV_SPANS = 3
DEV_PAIRS = 400
UNSUPERVISED_DOCS = 2000  # corpus documents sampled for unsupervised pairs (bounds CPU time)
STOPWORDS = frozenset("""a an and are as at be but by for from has have if in into is it its of
on or that the their there these this to was were what which while who will with""".split())


@dataclass
class Pair:
    source: str
    target: str
    titles: bool = False  # put to the model with the title prompt (a title key to write)


class SealKind(TrainingKind):
    """A SEAL generator fine-tuned on its corpus (default base: SmolLM2-135M-Instruct)."""

    name: ClassVar[str] = "seal"

    def base_model(self, config: TrainConfig) -> str:
        from cormorant.retrieval.seal.generator import resolve_generator

        return resolve_generator(config.base_model)

    def setup(self, session: Session) -> Job:
        return SealJob(session)


class SealJob(Job):
    """The generator, its encoded (prompt, n-gram) pairs, and dev pairs whose loss picks the
    checkpoint (no dev nDCG@10: the evaluator stays None)."""

    def __init__(self, session: Session) -> None:
        from cormorant.retrieval.seal.generator import Generator

        config = self.config = session.config
        data, dev = session.data, session.dev
        self.work, self.base = session.work, session.base_model
        self.model = generator = Generator.load(session.base_model)
        self.synthetic = load_synthetic(config.synthetic_queries, data.corpus) \
            if config.synthetic_queries else None
        documents = {d.doc_id: d for d in data.corpus}
        self.pairs = training_pairs(data, self.synthetic, documents, config)
        self.features = [encode_pair(generator, p, config.max_length) for p in self.pairs]
        self.dev_rows = _dev_rows(generator, dev, documents, config) if dev is not None else None
        if self.dev_rows is not None and not len(self.dev_rows):
            # Dev queries whose documents have neither title nor text give no pairs; evaluating
            # nothing would leave "best checkpoint" without a metric, so train without a dev set.
            log.warning("seal: the %d dev queries gave no pairs (their documents have no title"
                        " and no text); training without a dev set", len(dev.queries))
            self.dev_rows = None
        log.info("seal: %d training pairs from %d queries%s, %s", len(self.pairs),
                 len(data.queries),
                 f" and {len(self.synthetic.queries)} synthetic queries" if self.synthetic else "",
                 f"{len(self.dev_rows)} dev pairs from {len(dev.queries)} queries"
                 if self.dev_rows else "no dev set")

    def trainer(self, callbacks: list[TrainerCallback]) -> Any:
        from transformers import Trainer, TrainingArguments

        from cormorant.training.strategies import epoch_share

        config, generator = self.config, self.model
        every = _eval_interval(config, len(self.features), self.dev_rows is not None)
        args = training_arguments(TrainingArguments, config, self.work, self.dev_rows,
                                  every=every, learning_rate=config.peak_learning_rate,
                                  share=epoch_share(config), best=("eval_loss", False),
                                  remove_unused_columns=False, max_grad_norm=1.0,
                                  per_device_eval_batch_size=config.batch_size)
        generator.model.train()
        return Trainer(model=generator.model, args=args, train_dataset=_Rows(self.features),
                       eval_dataset=self.dev_rows,
                       data_collator=Collator(generator.tokenizer.pad_token_id),
                       callbacks=callbacks)

    def finish(self) -> None:
        self.model.model.eval()

    def summary(self, trainer: Any, outcome: Outcome) -> dict[str, Any]:
        history = _dev_losses(trainer)
        best = trainer.state.best_model_checkpoint
        summary = {"kind": "seal", "base_model": self.base, "pairs": len(self.pairs),
                   "synthetic_queries": len(self.synthetic.queries) if self.synthetic else 0,
                   "seconds": round(outcome.seconds, 1), "dev_loss": history,
                   "kept_checkpoint": Path(best).name if best else "last step",
                   "time_budget": outcome.time_budget}
        if history:
            log.info("seal: dev loss %s; kept %s", " -> ".join(str(h["loss"]) for h in history),
                     summary["kept_checkpoint"])
        return summary

    def best_dev_loss(self, trainer: Any) -> float | None:
        return min((h["loss"] for h in _dev_losses(trainer)), default=None)


def _dev_losses(trainer: Any) -> list[dict[str, Any]]:
    """Each dev evaluation's step and loss, from the Trainer's log."""
    return [{"step": e["step"], "loss": round(e["eval_loss"], 4)}
            for e in trainer.state.log_history if "eval_loss" in e]


def training_pairs(data: Any, synthetic: Any, documents: dict[str, Any],
                   config: TrainConfig) -> list[Pair]:
    """Supervised, unsupervised and synthetic-query pairs, repeated per epoch, shuffled."""
    rng = random.Random(config.seed)
    pairs = supervised_pairs(data.queries, data.positives, documents, rng) \
        + unsupervised_pairs(documents, rng)
    if synthetic is not None:
        pairs += supervised_pairs(synthetic.queries, synthetic.positives, documents, rng,
                                  SPANS_PER_SYNTHETIC_QUERY)
    pairs = pairs * max(1, math.ceil(config.epochs))
    rng.shuffle(pairs)
    return pairs


def _dev_rows(generator: Any, dev: Any, documents: dict[str, Any],
              config: TrainConfig) -> _Rows:
    """A seeded sample of the dev queries' supervised pairs, encoded."""
    rng = random.Random(config.seed + 1)
    pairs = supervised_pairs(dev.queries, dev.positives, documents, rng, DEV_SPANS)
    pairs = rng.sample(pairs, min(DEV_PAIRS, len(pairs)))
    return _Rows([encode_pair(generator, p, config.max_length) for p in pairs])


def _eval_interval(config: TrainConfig, rows: int, has_dev: bool) -> int:
    """Steps between dev evaluations (and checkpoints): ``eval_steps``, else four a run with
    a dev set, else one checkpoint a pass."""
    if config.eval_steps:
        return config.eval_steps
    if has_dev:
        return max(1, math.ceil(_planned_steps(config, rows) / 4))
    return max(1, rows // config.batch_size)


def load_synthetic(path: Path, corpus: Any) -> Any:
    """The train split of a ``cormorant data synth-queries`` folder, its documents checked
    against the training corpus (synthetic queries only add pairs for documents it holds)."""
    from cormorant.errors import DataError
    from cormorant.training.data import TrainingSet

    synthetic = TrainingSet.load(path, "train")
    known = {d.doc_id for d in corpus}
    unknown = sorted({d for docs in synthetic.positives.values() for d in docs} - known)
    if unknown:
        raise DataError(f"--synthetic-queries {path}: {len(unknown)} document id(s) are not in"
                        f" the training corpus (first: {unknown[0]!r}); generate the queries"
                        " from the same corpus")
    return synthetic


def _planned_steps(config: TrainConfig, rows: int) -> int:
    """Optimizer steps the run will take: ``--max-steps``, else the share of the rows."""
    from cormorant.training.strategies import epoch_share

    if config.max_steps > 0:
        return config.max_steps
    return max(1, math.ceil(rows * epoch_share(config) / config.batch_size))


def supervised_pairs(queries: dict[str, str], positives: dict[str, list[str]],
                     documents: dict[str, Any], rng: random.Random,
                     spans: int = SPANS_PER_QUERY) -> list[Pair]:
    """Query → title of its first positive, and query → ``spans`` spans of it that overlap
    the query."""
    pairs = []
    for qid, query in queries.items():
        doc = documents[positives[qid][0]]
        if doc.title:
            pairs.append(Pair(query, f" {doc.title}"))
            # Title keys, as the paper trains them: the whole title and its end marker, under
            # the title prompt, in TITLE_COPIES copies.
            pairs += [Pair(query, f" {doc.title}{TITLE_END}", titles=True)] * TITLE_COPIES
        for span in query_spans(query, doc.text, rng, spans):
            pairs.append(Pair(query, f" {span}"))
    return pairs


def unsupervised_pairs(documents: dict[str, Any], rng: random.Random,
                       count: int = UNSUPERVISED_DOCS) -> list[Pair]:
    """Span → title, title → span, span → span, over a seeded sample of the corpus."""
    pairs = []
    for doc_id in rng.sample(sorted(documents), min(count, len(documents))):
        title, words = documents[doc_id].title, documents[doc_id].text.split()
        if len(words) < 2 * SPAN_WORDS:
            continue
        first, second = _random_span(words, rng), _random_span(words, rng)
        if title:
            pairs.append(Pair(first, f" {title}") if rng.random() < 0.5
                         else Pair(title, f" {first}"))
        pairs.append(Pair(first, f" {second}"))
    return pairs


def query_spans(query: str, text: str, rng: random.Random, count: int) -> list[str]:
    """``count`` spans of ``text``, starts drawn ∝ exp(query words in the span), no stop word
    first."""
    words = text.split()
    if not words:
        return []
    wanted = {w for w in _words(query) if w not in STOPWORDS}
    starts = [i for i, w in enumerate(words) if _norm(w) not in STOPWORDS] or [0]
    overlap = [len(wanted & {_norm(w) for w in words[i:i + SPAN_WORDS]}) for i in starts]
    chosen = rng.choices(starts, weights=[math.exp(o) for o in overlap], k=count)
    return sorted({" ".join(words[i:i + SPAN_WORDS]) for i in chosen})


def encode_pair(generator: Any, pair: Pair, max_length: int) -> dict[str, list[int]]:
    """Token ids and labels: the loss falls on the target n-gram only."""
    prompt = generator.prompt_ids(pair.source, titles=pair.titles)
    target = generator.tokenize(pair.target)[:max(1, max_length // 2)]
    if generator.seq2seq:
        return {"input_ids": prompt[:max_length], "labels": target}
    prompt = prompt[-(max_length - len(target)):]
    return {"input_ids": prompt + target, "labels": [-100] * len(prompt) + target}


class Collator:
    """Right-pads a batch; padded labels are ignored by the loss."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad = pad_token_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        def padded(key: str, value: int) -> Any:
            longest = max(len(r[key]) for r in rows)
            return torch.tensor([r[key] + [value] * (longest - len(r[key])) for r in rows])

        longest = max(len(r["input_ids"]) for r in rows)
        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (longest - len(r["input_ids"]))
                             for r in rows])
        return {"input_ids": padded("input_ids", self.pad), "attention_mask": mask,
                "labels": padded("labels", -100)}


class _Rows:
    """A list of features as a map-style dataset (no ``datasets`` conversion needed)."""

    def __init__(self, rows: list[dict[str, list[int]]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


def _random_span(words: list[str], rng: random.Random) -> str:
    start = rng.randrange(0, len(words) - SPAN_WORDS + 1)
    return " ".join(words[start:start + SPAN_WORDS])


def _words(text: str) -> list[str]:
    return [_norm(w) for w in text.split() if _norm(w)]


def _norm(word: str) -> str:
    return re.sub(r"\W+", "", word.lower())
