"""Pseudo-queries for a corpus without training queries: the first step of GPL (Wang et al.,
NAACL 2022), whose ``(query, source passage)`` pairs ``cormorant train --unsupervised`` trains on.

Three ways to write them (``--pseudo-queries``):

- ``span`` (the default; no language model): a random contiguous run of 4-16 words of the
  passage, drawn independently for each query. This is the independent cropping of Contriever
  (Izacard et al., TMLR 2022), which Lee et al.'s Inverse Cloze Task (ACL 2019) did with whole
  sentences; the length is sized to a search query rather than Contriever's 10-50% of a
  passage, because the span is a *query* here, scored against the whole passage by the teacher.
- ``title``: the passage's title (one per passage; passages without one get none).
- ``lm``: the few-shot language-model path of ``cormorant data synth-queries``
  (:mod:`cormorant.training.synthetic`), from ``--examples`` and ``--llm``.

Sizing follows GPL: QPP = ceil(250,000 / |C|) queries per passage when 3|C| < 250,000, else 3,
over at most 83,334 passages (GPL's ``new_size``). A run that trains on fewer (query, positive,
negative) tuples than that pool writes only what it uses: D = min(|C|, tuples) passages (a
seeded sample) with min(QPP, ceil(tuples / D)) queries each, so a short CPU run spreads its
queries over the corpus instead of spending them on a few passages. Identical query texts are
merged into one query whose positives are all their source passages; otherwise the qrel of a
query is its source passage.

Example:
    >>> queries_per_passage(5183), queries_per_passage(100_000)
    (49, 3)
    >>> plan_sizes(corpus_size=5183, tuples=4800)
    (4800, 1)
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cormorant.errors import DataError
from cormorant.training.data import TrainingSet
from cormorant.types import Corpus, Document

log = logging.getLogger(__name__)

GPL_QUERIES = 250_000  # GPL's target number of generated queries
GPL_MIN_QPP = 3  # queries per passage when the corpus alone reaches the target
GPL_MAX_PASSAGES = 83_334  # GPL's new_size=-1: the corpus is cut to this many passages
METHODS = ("span", "title", "lm")
SPAN_WORDS = (4, 16)


def queries_per_passage(corpus_size: int) -> int:
    """GPL's automatic QPP: ceil(250k / |C|) if 3|C| < 250k, else 3.

    Example:
        >>> queries_per_passage(3633), queries_per_passage(83_334)
        (69, 3)
    """
    if corpus_size < 1:
        raise DataError("the corpus is empty: no passage to write queries for")
    if GPL_MIN_QPP * corpus_size < GPL_QUERIES:
        return math.ceil(GPL_QUERIES / corpus_size)
    return GPL_MIN_QPP


def plan_sizes(corpus_size: int, tuples: int, qpp: int | None = None) -> tuple[int, int]:
    """(passages given queries, queries per passage) for a run of ``tuples`` training tuples:
    GPL's full pool (min(|C|, 83,334) passages x QPP) when the run uses it all, else the
    smallest share of it that covers ``tuples`` spread over as many passages as possible."""
    passages = min(corpus_size, GPL_MAX_PASSAGES)
    qpp = qpp or queries_per_passage(passages)
    if tuples >= passages * qpp:
        return passages, qpp
    passages = min(passages, tuples)
    return passages, min(qpp, math.ceil(tuples / passages))


@dataclass
class PseudoQueries:
    """Generated queries: text by query id and the source passage(s) of each."""

    queries: dict[str, str]
    sources: dict[str, list[str]]
    generated: int  # before merging duplicates
    passages: int

    def training_set(self, corpus: Corpus, texts: dict[str, str]) -> TrainingSet:
        """The queries as a training set: each one's positives are its source passages."""
        qrels = {q: {d: 1 for d in docs} for q, docs in self.sources.items()}
        return TrainingSet(dict(self.queries), {q: sorted(d) for q, d in self.sources.items()},
                           corpus, texts, qrels)


def merge(drafts: Sequence[tuple[str, str]]) -> PseudoQueries:
    """(source doc id, query text) drafts -> queries, identical texts merged (whitespace
    normalised); a merged query keeps the id of its first draft and every source passage.

    Example:
        >>> merged = merge([("d1", "vitamin  d"), ("d1", "vitamin d"), ("d2", "vitamin d")])
        >>> merged.queries, merged.sources
        ({'gpl-d1-0': 'vitamin d'}, {'gpl-d1-0': ['d1', 'd2']})
    """
    queries: dict[str, str] = {}
    sources: dict[str, list[str]] = {}
    by_text: dict[str, str] = {}
    count: dict[str, int] = {}
    for doc_id, text in drafts:
        text = " ".join(text.split())
        if not text:
            continue
        n = count[doc_id] = count.get(doc_id, -1) + 1
        qid = by_text.setdefault(text, f"gpl-{doc_id}-{n}")
        if qid not in queries:
            queries[qid], sources[qid] = text, []
        if doc_id not in sources[qid]:
            sources[qid].append(doc_id)
    return PseudoQueries(queries, sources, len(drafts), len(count))


def span_drafts(docs: Sequence[Document], per_doc: int, rng: random.Random,
                words: tuple[int, int] = SPAN_WORDS) -> list[tuple[str, str]]:
    """``per_doc`` random contiguous word spans of each passage, lengths uniform in ``words``
    (a passage shorter than the drawn length gives all its words).

    Example:
        >>> span_drafts([Document("d", "a b c d e f")], 2, random.Random(0), (2, 3))
        [('d', 'd e f'), ('d', 'c d')]
    """
    drafts = []
    for doc in docs:
        tokens = doc.contents.split()
        for _ in range(per_doc):
            length = rng.randint(*words)
            start = rng.randint(0, max(0, len(tokens) - length))
            drafts.append((doc.doc_id, " ".join(tokens[start:start + length])))
    return drafts


def title_drafts(docs: Sequence[Document]) -> list[tuple[str, str]]:
    """Each passage's title as its one query; passages without a title get none."""
    drafts = [(d.doc_id, d.title) for d in docs if d.title.strip()]
    if not drafts:
        raise DataError("--pseudo-queries title: no document of the corpus has a title"
                        " (use --pseudo-queries span)")
    return drafts


def lm_drafts(docs: Sequence[Document], per_doc: int, examples: Path | None, llm: str,
              corpus: Corpus, seed: int) -> list[tuple[str, str]]:
    """Queries sampled by a language model from a few-shot prompt, as ``cormorant data
    synth-queries`` writes them (no round-trip filter: GPL keeps every generated query)."""
    from cormorant.llm import load_llm
    from cormorant.training.synthetic import SynthConfig, generate_queries, load_examples

    if examples is None:
        raise DataError("--pseudo-queries lm needs --examples: a JSONL file of 1-8"
                        " {\"query\", \"document\"} examples (as for 'data synth-queries')")
    shots = load_examples(examples, corpus)
    result = generate_queries(load_llm(llm), shots, docs, SynthConfig(per_doc=per_doc, seed=seed))
    return [(result.source[q], text) for q, text in result.queries.items()]


def write_pseudo_queries(corpus: Corpus, method: str, tuples: int, seed: int,
                         qpp: int | None = None, examples: Path | None = None,
                         llm: str = "transformers:smollm2") -> PseudoQueries:
    """Pseudo-queries for a run of ``tuples`` training tuples (sizes: :func:`plan_sizes`),
    seeded: the same arguments give the same queries.

    Example:
        >>> corpus = Corpus.from_documents([Document("d1", "one two three four five six")])
        >>> write_pseudo_queries(corpus, "span", tuples=3, seed=0).sources  # doctest: +SKIP
        {'gpl-d1-0': ['d1'], 'gpl-d1-1': ['d1'], 'gpl-d1-2': ['d1']}
    """
    if method not in METHODS:
        raise DataError(f"--pseudo-queries must be one of {', '.join(METHODS)}, got {method!r}")
    docs = [d for d in corpus if d.contents.strip()]
    passages, per_doc = plan_sizes(len(docs), tuples, qpp)
    rng = random.Random(seed)
    if passages < len(docs):
        keep = set(rng.sample(range(len(docs)), passages))
        docs = [d for i, d in enumerate(docs) if i in keep]
    makers: dict[str, Callable[[], list[tuple[str, str]]]] = {
        "span": lambda: span_drafts(docs, per_doc, rng),
        "title": lambda: title_drafts(docs),
        "lm": lambda: lm_drafts(docs, per_doc, examples, llm, corpus, seed),
    }
    merged = merge(makers[method]())
    if not merged.queries:
        raise DataError(f"--pseudo-queries {method} wrote no query for this corpus")
    log.info("%s pseudo-queries: %d from %d passages (%d per passage), %d after merging"
             " duplicates", method, merged.generated, len(docs), per_doc, len(merged.queries))
    return merged
