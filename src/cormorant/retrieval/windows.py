"""Long documents as overlapping windows, and window scores aggregated per document.

A document longer than an encoder's window (256-512 tokens) is otherwise truncated: whatever
follows is never seen. Split it instead into windows of ``LENGTH`` model tokens, ``STRIDE``
tokens between window starts (``passages=LENGTH/STRIDE``), score every window, and give the
document the maximum (MaxP), the first window's (FirstP) or the sum (SumP) of its windows'
scores, as Dai & Callan (2019) did for BERT re-ranking.

The title, when there is one, is put before every window (Dai & Callan do the same), and the
``LENGTH`` budget counts it and the model's special tokens ([CLS], [SEP]): each window fits
the model in ``LENGTH`` tokens. A title is cut to half of ``LENGTH`` at most, so every window
keeps at least half its budget for text; when less text fits than ``STRIDE``, the stride
shrinks to the text budget, so no text is ever skipped. Windows begin and end at word
boundaries (a word split into sub-word tokens stays whole: a start moves back to the word's
first token, an end back before a word that would be cut), unless one word is longer than a
window. They are cut from the original text at the tokenizer's character offsets, so a window
is plain text the model reads as the tokens it was counted in.

Queries may be split too (``query_passages=LENGTH/STRIDE``): each query window is scored
against the candidates of all windows, and the query's score of a document is the maximum or
the mean over its windows (``query_aggregate``).

Example:
    >>> spec = WindowSpec.parse("128/64")
    >>> spec.length, spec.stride, str(spec)
    (128, 64, '128/64')
    >>> spans(300, budget=126, stride=64)
    [(0, 126), (64, 190), (128, 254), (192, 300)]
    >>> aggregate_scores([("a", 1.0), ("a", 3.0), ("b", 2.0)], "max")
    {'a': 3.0, 'b': 2.0}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cormorant.errors import PipelineError
from cormorant.index.segments import Segments
from cormorant.params import BUILD, QUERY, Param, Params
from cormorant.types import Corpus, Document, Queries, Run

AGGREGATES = ("max", "first", "sum")
"""How window scores become a document's: MaxP, FirstP, SumP."""
QUERY_AGGREGATES = ("max", "mean")
"""How query windows' scores of a document become the query's."""
SEPARATOR = "#"
"""Between a query id and its window number in the sub-queries of a long query."""


@dataclass(frozen=True)
class WindowSpec:
    """``LENGTH/STRIDE``: windows of ``length`` model tokens, ``stride`` tokens apart."""

    length: int
    stride: int

    @classmethod
    def parse(cls, text: str) -> WindowSpec:
        """``"128/64"`` as a spec; ``"128"`` alone means windows that do not overlap.

        Raises:
            ValueError: with a one-line reason (the caller names the stage and parameter).
        """
        parts = str(text).strip().split("/")
        if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"must be LENGTH/STRIDE in tokens, e.g. 128/64, got {text!r}")
        length = int(parts[0])
        stride = int(parts[1]) if len(parts) == 2 else length
        if length < 8:
            raise ValueError(f"needs a LENGTH of at least 8 tokens, got {length}")
        if not 1 <= stride <= length:
            raise ValueError(f"needs a STRIDE between 1 and LENGTH ({length}), got {stride}"
                             " (a longer stride would skip text)")
        return cls(length, stride)

    def __str__(self) -> str:
        return f"{self.length}/{self.stride}"


def check_spec(value: Any) -> None:
    """The ``Param.valid`` check of a ``passages``-like parameter."""
    WindowSpec.parse(value)


def passages_param(name: str, when: Any, help_text: str) -> Param:
    """A nullable ``LENGTH/STRIDE`` parameter, checked when the pipeline is read."""
    return Param(name, str, None, help_text, when=when, nullable=True, valid=check_spec)


def window_params(passages_when: Any = BUILD) -> Params:
    """The parameters of a stage that splits long texts. ``passages`` is build-time for a
    stage that stores an index (its entries are the windows), query-time for one that does
    not (``rerank``)."""
    return Params(
        passages_param("passages", passages_when, "split documents into windows of LENGTH"
                       " tokens, STRIDE apart (e.g. 128/64; default: truncate)"),
        Param("aggregate", str, "max", "a document's score from its windows': max (MaxP),"
              " first (FirstP) or sum (SumP)", choices=AGGREGATES),
        passages_param("query_passages", QUERY, "split long queries into windows"
                       " LENGTH/STRIDE (default: truncate)"),
        Param("query_aggregate", str, "max", "a long query's score of a document from its"
              " windows': max or mean", choices=QUERY_AGGREGATES),
    )


def spec_of(value: str | None) -> WindowSpec | None:
    """The spec of a checked parameter value; None when windows are off."""
    return None if value is None else WindowSpec.parse(value)


def splitter_of(encoder: Any, value: str | None, stage: str, name: str = "passages",
                queries: bool = False) -> Splitter | None:
    """The splitter a ``passages``-like value asks for, counted in ``encoder``'s tokens; None
    when it is not set. The encoder gives ``tokenizer`` and ``max_length`` (and, where it
    differs, ``query_max_length``); ``special_tokens`` where it adds more than its
    tokenizer's own (ColBERT's [Q]/[D] marker).

    Raises:
        PipelineError: windows longer than the model reads (they would be truncated again).
    """
    spec = spec_of(value)
    if spec is None:
        return None
    tokenizer = encoder.tokenizer
    limit = getattr(encoder, "query_max_length", None) if queries else None
    limit = int(limit or encoder.max_length)
    if spec.length > limit:
        raise PipelineError(f"{stage}: {name}={spec} has windows longer than the"
                            f" {limit} tokens the model reads (max_length)")
    special = getattr(encoder, "special_tokens", None)
    return Splitter(tokenizer, spec, tokenizer.num_special_tokens_to_add()
                    if special is None else int(special))


def spans(tokens: int, budget: int, stride: int,
          begins: Sequence[bool] | None = None) -> list[tuple[int, int]]:
    """(start, stop) token ranges of the windows of a text of ``tokens`` tokens: ``budget``
    tokens each, starting every ``stride`` tokens until one reaches the end (one window for a
    short or empty text). With ``begins`` (whether token i begins a word), a start moves back
    to its word's first token (forward to the next word's when that word began the window
    before) and a stop back before a word it would cut (unless the word fills the window).

    Example:
        >>> spans(10, budget=4, stride=3), spans(3, budget=4, stride=3)
        ([(0, 4), (3, 7), (6, 10)], [(0, 3)])
        >>> spans(6, budget=4, stride=2, begins=[1, 0, 0, 1, 0, 1])
        [(0, 3), (3, 6)]
    """
    def back(position: int, floor: int) -> int:
        """``position`` moved back to a word start above ``floor`` (or left where it was)."""
        if begins is None:
            return position
        found = position
        while found > floor and not begins[found]:
            found -= 1
        return found if found > floor else position

    found = []
    start = 0
    while True:
        stop = min(start + budget, tokens)
        if stop < tokens:
            stop = back(stop, start)
        found.append((start, stop))
        if stop >= tokens:
            return found
        target = min(start + stride, stop)  # never past the stop: no text skipped
        moved = back(target, start)
        if moved == target and begins is not None and not begins[target]:
            # the word at the stride began at this window's start: take the next word
            moved = next((i for i in range(target, stop) if begins[i]), stop)
        start = moved


class Splitter:
    """Cuts texts into windows counted in a model's tokens.

    Args:
        tokenizer: the model's Hugging Face tokenizer (a fast one: it gives character offsets).
        spec: window length and stride.
        special: tokens the model adds to every input ([CLS] and [SEP]: 2), part of the
            budget.

    Example:
        >>> splitter = Splitter(tokenizer, WindowSpec(128, 64), special=2)  # doctest: +SKIP
        >>> splitter.split("a long text ...", title="Its title")  # doctest: +SKIP
        ['Its title a long text ...', 'Its title ...']
    """

    def __init__(self, tokenizer: Any, spec: WindowSpec, special: int = 2) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise PipelineError("passages needs a fast (Rust) tokenizer, for character offsets")
        self.tokenizer = tokenizer
        self.spec = spec
        self.special = special

    @staticmethod
    def word_starts(offsets: Sequence[tuple[int, int]]) -> list[bool]:
        """Whether each token begins a word: it does not start where the one before ended
        (a ``##`` piece, or the rest of a word a byte-level tokenizer split)."""
        return [i == 0 or offsets[i][0] != offsets[i - 1][1] for i in range(len(offsets))]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """(start, end) characters of each token of ``text``, no special tokens."""
        found = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                               truncation=False, verbose=False)
        return [tuple(pair) for pair in found["offset_mapping"]]

    def split(self, text: str, title: str = "") -> list[str]:
        """The windows of one text, each with ``title`` before it."""
        budget = self.spec.length - self.special
        title = self.head(title, budget // 2)
        if title:
            budget -= len(self.offsets(title))
        stride = min(self.spec.stride, budget)
        offsets = self.offsets(text)
        windows = []
        for start, stop in spans(len(offsets), budget, stride, self.word_starts(offsets)):
            piece = text[offsets[start][0]:offsets[stop - 1][1]] if offsets else ""
            windows.append(f"{title} {piece}".strip() if title else piece)
        return windows

    def head(self, text: str, tokens: int) -> str:
        """The first ``tokens`` tokens of ``text``."""
        offsets = self.offsets(text)
        return text[:offsets[tokens - 1][1]] if len(offsets) > tokens else text

    def split_documents(self, documents: Iterable[Document]) -> tuple[list[str], list[str]]:
        """(window texts, owner document id per window), windows of a document consecutive
        and in order: the window -> document map a windowed segment stores as its row ids."""
        texts: list[str] = []
        owners: list[str] = []
        for document in documents:
            windows = self.split(document.text, document.title)
            texts.extend(windows)
            owners.extend([document.doc_id] * len(windows))
        return texts, owners

    def split_queries(self, queries: Queries) -> tuple[Queries, dict[str, str]]:
        """(sub-queries ``qid#i``, sub-query -> query): one per window of each query."""
        parts: dict[str, str] = {}
        owner: dict[str, str] = {}
        for qid, text in queries.items():
            for number, window in enumerate(self.split(text)):
                parts[f"{qid}{SEPARATOR}{number}"] = window
                owner[f"{qid}{SEPARATOR}{number}"] = qid
        return Queries(parts), owner


def window_corpus(splitter: Splitter, corpus: Corpus) -> tuple[Corpus, list[str]]:
    """(the windows of ``corpus`` as a corpus of their own, owner id per window): a corpus
    whose embeddings or token vectors the cache keeps like any other's (window ids ``doc#n``
    and texts are in its content hash, so each split gets its own entry)."""
    texts, owners = splitter.split_documents(corpus)
    numbers: dict[str, int] = {}
    windows = []
    for text, owner in zip(texts, owners, strict=True):
        number = numbers[owner] = numbers.get(owner, -1) + 1
        windows.append(Document(f"{owner}{SEPARATOR}{number}", text))
    return Corpus.from_documents(windows, name=f"{corpus.name}-windows"), owners


def all_windows(segments: Segments, located: Iterable[tuple[int, int]]
                ) -> list[tuple[int, int]]:
    """Every window's (segment position, row) of the documents whose first rows are
    ``located``, in order (one row each for a stage without windows)."""
    return [(p, r) for p, first in located for r in segments.items[p].span(first)]


def group_starts(owners: Sequence[str]) -> np.ndarray:
    """The rows where a new document begins in a row -> document list (windows of a document
    are consecutive).

    Example:
        >>> group_starts(["a", "a", "b", "c", "c"]).tolist()
        [0, 2, 3]
    """
    if not len(owners):
        return np.zeros(0, dtype=np.int64)
    ids = np.asarray(owners, dtype=object)
    return np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))


def reduce_groups(scores: np.ndarray, starts: np.ndarray, how: str) -> np.ndarray:
    """Each document's score from a row of window scores, documents beginning at ``starts``:
    :func:`aggregate_scores` for a whole segment at once.

    Example:
        >>> rows = np.array([1.0, 3.0, 2.0])
        >>> [reduce_groups(rows, np.array([0, 2]), h).tolist() for h in AGGREGATES]
        [[3.0, 2.0], [1.0, 2.0], [4.0, 2.0]]
    """
    if how == "max":
        return np.maximum.reduceat(scores, starts)
    if how == "first":
        return scores[starts]
    if how == "sum":
        return np.add.reduceat(scores, starts)
    raise PipelineError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {how!r}")


def aggregate_scores(scored: Iterable[tuple[str, float]], how: str) -> dict[str, float]:
    """Documents' scores from (document, window score) pairs given in window order: the
    maximum (``max``), the first window's (``first``) or the sum (``sum``).

    Example:
        >>> pairs = [("a", 0.5), ("a", 0.75), ("b", 0.25)]
        >>> aggregate_scores(pairs, "first"), aggregate_scores(pairs, "sum")
        ({'a': 0.5, 'b': 0.25}, {'a': 1.25, 'b': 0.25})
    """
    out: dict[str, float] = {}
    if how == "max":
        for doc_id, score in scored:
            if doc_id not in out or score > out[doc_id]:
                out[doc_id] = score
    elif how == "first":
        for doc_id, score in scored:
            out.setdefault(doc_id, score)
    elif how == "sum":
        for doc_id, score in scored:
            out[doc_id] = out.get(doc_id, 0.0) + score
    else:
        raise PipelineError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {how!r}")
    return out


def window_scores(owners: Sequence[str], scores: np.ndarray, how: str) -> dict[str, float]:
    """:func:`aggregate_scores` over rows: ``owners[i]`` owns the window scored ``scores[i]``."""
    return aggregate_scores(zip(owners, np.asarray(scores).tolist(), strict=True), how)


def combine_query_windows(runs: Run, owner: dict[str, str], how: str) -> Run:
    """One run per query from its windows' runs: each document's maximum or mean over the
    query's windows (a window that did not score the document counts as its lowest score
    there, so a mean never rewards a document for being missed)."""
    grouped: dict[str, list[dict[str, float]]] = {}
    for sub, docs in runs.items():
        grouped.setdefault(owner[sub], []).append(docs)
    out = Run()
    for qid, parts in grouped.items():
        docs = {d for part in parts for d in part}
        floors = [min(part.values(), default=0.0) for part in parts]
        columns = [[part.get(d, floor) for part, floor in zip(parts, floors, strict=True)]
                   for d in docs]
        reduce = max if how == "max" else (lambda xs: sum(xs) / len(xs))
        out[qid] = {d: float(reduce(col)) for d, col in zip(docs, columns, strict=True)}
    return out


def search_query_windows(splitter: Splitter, queries: Queries, how: str,
                         retrieve: Callable[[Queries], Run],
                         rescore: Callable[[Queries, Run], Run]) -> Run:
    """Long queries: every window of a query retrieves (``retrieve``), every window then
    scores the union of its query's candidates (``rescore``), and the window scores are
    combined (:func:`combine_query_windows`). A query of one window is searched as it is."""
    parts, owner = splitter.split_queries(queries)
    first = retrieve(parts)
    pooled: dict[str, set[str]] = {}
    for sub, docs in first.items():
        pooled.setdefault(owner[sub], set()).update(docs)
    candidates = Run({sub: {d: 0.0 for d in sorted(pooled[owner[sub]])} for sub in parts})
    return combine_query_windows(rescore(parts, candidates), owner, how)


def rescore_query_windows(splitter: Splitter, queries: Queries, candidates: Run, how: str,
                          rescore: Callable[[Queries, Run], Run]) -> Run:
    """Long queries re-scoring a ranking: every window of a query scores the query's
    candidates, combined as :func:`combine_query_windows` does."""
    parts, owner = splitter.split_queries(queries)
    asked = Run({sub: candidates.get(owner[sub], {}) for sub in parts})
    return combine_query_windows(rescore(parts, asked), owner, how)


class LongQueries:
    """What a stage that splits long queries (``query_passages``) does in ``retrieve`` and
    ``rescore``: each query read whole when no split is asked or it fits one window, else
    :func:`search_query_windows` / :func:`rescore_query_windows`. A stage mixes it in before
    its base, sets ``query_splitter`` and implements :meth:`retrieve_whole` and
    :meth:`rescore_whole`."""

    settings: dict[str, Any]
    query_splitter: Splitter | None = None

    def retrieve_whole(self, queries: Queries, k: int) -> Run:
        """The top ``k`` documents per query, each query encoded whole."""
        raise NotImplementedError

    def rescore_whole(self, queries: Queries, candidates: Run) -> Run:
        """Scores of ``candidates``, each query encoded whole."""
        raise NotImplementedError

    def retrieve(self, queries: Queries, k: int) -> Run:
        if self.query_splitter is None:
            return self.retrieve_whole(queries, k)
        return search_query_windows(self.query_splitter, queries,
                                    self.settings["query_aggregate"],
                                    lambda asked: self.retrieve_whole(asked, k),
                                    self.rescore_whole).topk(k)

    def rescore(self, queries: Queries, candidates: Run) -> Run:
        if self.query_splitter is None:
            return self.rescore_whole(queries, candidates)
        return rescore_query_windows(self.query_splitter, queries, candidates,
                                     self.settings["query_aggregate"], self.rescore_whole)
