"""Stages and the operators that compose them, as PyTerrier does with its transformers.

Every retriever, re-ranker and fuser is a :class:`Stage`. A stage maps queries (and, when it
follows another stage, that stage's candidates) to a :class:`~cormorant.types.Run`:

- ``a >> b``: ``b`` re-scores the candidates ``a`` returns;
- ``a % k``: keep ``a``'s top ``k`` per query;
- ``a + b``: add the two stages' scores (CombSUM); ``w * a`` scales ``a``'s scores;
- ``rrf(a, b, ...)``: reciprocal-rank fusion;
- ``reformulator >> b``: ``b`` searches with the queries the reformulator rewrote
  (:mod:`cormorant.retrieval.reformulate`).

Example:
    >>> from cormorant.pipeline import rrf
    >>> pipe = rrf(bm25 % 1000, dense % 1000) % 100  # doctest: +SKIP
    >>> run = pipe.search({"q1": "vitamin d and depression"}, k=10)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cormorant.errors import PipelineError
from cormorant.types import Queries, Run

DEFAULT_DEPTH = 1000


def as_queries(queries: Queries | Mapping[str, str] | Iterable[str] | str) -> Queries:
    """Accept a dict of id -> text, a list of texts (ids "0", "1", ...) or one text ("0")."""
    if isinstance(queries, str):
        queries = [queries]
    if isinstance(queries, Mapping):
        out = {str(qid): text for qid, text in queries.items()}
    else:
        out = {str(i): text for i, text in enumerate(queries)}
    if not out:
        raise PipelineError("no queries given")
    for qid, text in out.items():
        if not isinstance(text, str) or not text.strip():
            raise PipelineError(f"query {qid!r} is empty")
    return out


class Stage:
    """Base of everything that ranks. Subclasses implement :meth:`transform`."""

    def transform(self, queries: Queries, candidates: Run | None) -> Run:
        """Rank for ``queries``; re-score ``candidates`` if given, else the whole collection."""
        raise NotImplementedError

    def search(self, queries: Queries | Iterable[str] | str, k: int = 10) -> Run:
        """Run the stage for ``queries`` and keep the top ``k`` per query.

        Raises:
            PipelineError: no queries, an empty query, or ``k`` below 1.
        """
        if not isinstance(k, int) or k < 1:
            raise PipelineError(f"k must be a positive integer, got {k!r}")
        return self.transform(as_queries(queries), None).topk(k)

    def leaves(self) -> list[Stage]:
        """The stages with no sub-stages (the ones that hold an index), left to right."""
        return [self]

    def feed(self, second: Stage, queries: Queries, candidates: Run | None) -> Run:
        """``self >> second``: by default ``second`` re-scores this stage's ranking. A query
        reformulator overrides this to hand ``second`` rewritten queries instead."""
        return second.transform(queries, self.transform(queries, candidates))

    def __rshift__(self, other: Stage) -> Stage:
        return Then(self, _stage(other, ">>"))

    def __mod__(self, k: int) -> Stage:
        return Cutoff(self, k)

    def __add__(self, other: Stage) -> Stage:
        return CombSUM([self, _stage(other, "+")])

    def __mul__(self, weight: float) -> Stage:
        return Scaled(self, weight)

    __rmul__ = __mul__


def _stage(value: Any, op: str) -> Stage:
    if not isinstance(value, Stage):
        raise PipelineError(f"'{op}' needs a stage on both sides, got {type(value).__name__}")
    return value


class Then(Stage):
    """``first >> second``: the second stage re-scores the first stage's candidates."""

    def __init__(self, first: Stage, second: Stage) -> None:
        self.first, self.second = first, second

    def transform(self, queries: Queries, candidates: Run | None) -> Run:
        return self.first.feed(self.second, queries, candidates)

    def leaves(self) -> list[Stage]:
        return self.first.leaves() + self.second.leaves()

    def __str__(self) -> str:
        return f"{self.first} >> {self.second}"


class Cutoff(Stage):
    """``stage % k``: the stage's top ``k`` per query."""

    def __init__(self, stage: Stage, k: int) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise PipelineError(f"'% k' needs a positive integer, got {k!r}")
        self.stage, self.k = stage, k

    def transform(self, queries: Queries, candidates: Run | None) -> Run:
        return self.stage.transform(queries, candidates).topk(self.k)

    def leaves(self) -> list[Stage]:
        return self.stage.leaves()

    def __str__(self) -> str:
        return f"{_wrap(self.stage)} % {self.k}"


class Scaled(Stage):
    """``weight * stage``: the stage's scores times ``weight``."""

    def __init__(self, stage: Stage, weight: float) -> None:
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise PipelineError(f"'*' needs a number and a stage, got {weight!r}")
        self.stage, self.weight = stage, float(weight)

    def transform(self, queries: Queries, candidates: Run | None) -> Run:
        run = self.stage.transform(queries, candidates)
        return Run({q: {d: s * self.weight for d, s in docs.items()} for q, docs in run.items()})

    def leaves(self) -> list[Stage]:
        return self.stage.leaves()

    def __str__(self) -> str:
        return f"{self.weight:g} * {_wrap(self.stage)}"


class Fusion(Stage):
    """A stage that runs several stages on the same input and merges their runs."""

    name = "fusion"

    def __init__(self, stages: list[Stage]) -> None:
        if len(stages) < 2:
            raise PipelineError(f"{self.name} needs at least two stages, got {len(stages)}")
        self.stages = [_stage(s, self.name) for s in stages]

    def transform(self, queries: Queries, candidates: Run | None) -> Run:
        return self.fuse([s.transform(queries, candidates) for s in self.stages])

    def fuse(self, runs: list[Run]) -> Run:
        raise NotImplementedError

    def leaves(self) -> list[Stage]:
        return [leaf for stage in self.stages for leaf in stage.leaves()]

    def params(self) -> str:
        return ""

    def __str__(self) -> str:
        inner = ", ".join(str(s) for s in self.stages)
        extra = self.params()
        return f"{self.name}({inner}{', ' + extra if extra else ''})"


class CombSUM(Fusion):
    """Sum of the stages' scores (``a + b``); optionally min-max normalised per query first."""

    name = "combsum"

    def __init__(self, stages: list[Stage], normalize: str = "none") -> None:
        if normalize not in ("none", "minmax"):
            raise PipelineError(f"combsum normalize must be 'none' or 'minmax', got {normalize!r}")
        # Flatten a + b + c into one sum so its string form round-trips.
        flat: list[Stage] = []
        for stage in stages:
            same = isinstance(stage, CombSUM) and stage.normalize == normalize
            flat.extend(stage.stages if same else [stage])  # type: ignore[attr-defined]
        super().__init__(flat)
        self.normalize = normalize

    def fuse(self, runs: list[Run]) -> Run:
        out = Run()
        for run in runs:
            for qid, docs in run.items():
                if self.normalize == "minmax":
                    docs = _minmax(docs)
                target = out.setdefault(qid, {})
                for doc, score in docs.items():
                    target[doc] = target.get(doc, 0.0) + score
        return out

    def params(self) -> str:
        return "" if self.normalize == "none" else f"normalize={self.normalize}"

    def __str__(self) -> str:
        if self.normalize == "none":
            return " + ".join(_wrap(s) for s in self.stages)
        return super().__str__()


class RRF(Fusion):
    """Reciprocal-rank fusion (Cormack et al., 2009): score(d) = sum w / (k + rank(d)), rank from
    1. A stage given as ``w * stage`` counts with weight ``w`` (weighted RRF; ranks are what
    the stage itself ranks, since scaling scores does not change them); others weigh 1.

    Example:
        >>> a = StaticStage(Run({"q": {"x": 3.0, "y": 2.0}}))
        >>> b = StaticStage(Run({"q": {"y": 9.0}}))
        >>> RRF([a, b], k=60).transform({"q": "text"}, None)["q"]["y"] == 1 / 62 + 1 / 61
        True
        >>> RRF([a, 0.5 * b], k=60).transform({"q": "text"}, None)["q"]["y"] == 1 / 62 + 0.5 / 61
        True
    """

    name = "rrf"

    def __init__(self, stages: list[Stage], k: int = 60) -> None:
        super().__init__(stages)
        if isinstance(k, bool) or not isinstance(k, int | float) or k < 0:
            raise PipelineError(f"rrf k must be a non-negative number, got {k!r}")
        self.k = k
        weighted = [_rrf_weight(s) for s in self.stages]
        self.weights = [w for w, _ in weighted]
        self._ranked = [stage for _, stage in weighted]

    def transform(self, queries: Queries, candidates: Run | None) -> Run:
        # A weighted stage's own ranking: its weight applies to the reciprocal rank instead.
        return self.fuse([s.transform(queries, candidates) for s in self._ranked])

    def fuse(self, runs: list[Run]) -> Run:
        out = Run()
        for run, weight in zip(runs, self.weights, strict=True):
            for qid in run:
                target = out.setdefault(qid, {})
                for rank, (doc, _) in enumerate(run.ranked(qid), start=1):
                    target[doc] = target.get(doc, 0.0) + weight / (self.k + rank)
        return out

    def params(self) -> str:
        return "" if self.k == 60 else f"k={self.k}"


def _rrf_weight(stage: Stage) -> tuple[float, Stage]:
    """An rrf argument's weight (the product of its outer ``w *`` factors, 1 without) and the
    stage whose ranking is fused."""
    weight = 1.0
    while isinstance(stage, Scaled):
        weight, stage = weight * stage.weight, stage.stage
    if weight <= 0:
        raise PipelineError(f"rrf weights ('w * stage') must be positive, got {weight:g}")
    if isinstance(stage, Cutoff) and isinstance(stage.stage, Scaled):
        raise PipelineError("in rrf, put the weight outside the cut-off: 'w * (stage % k)'"
                            f" (a weight inside it changes no rank), got '{stage}'")
    return weight, stage


def rrf(*stages: Stage, k: int = 60) -> RRF:
    """Reciprocal-rank fusion of ``stages`` (see :class:`RRF`)."""
    return RRF(list(stages), k=k)


class StaticStage(Stage):
    """A stage that returns a fixed run: for tests, and for fusing runs read from files."""

    def __init__(self, run: Run, name: str = "static") -> None:
        self.run, self.name = run, name

    def transform(self, queries: Queries, candidates: Run | None) -> Run:
        return Run({q: dict(self.run.get(q, {})) for q in queries})

    def __str__(self) -> str:
        return self.name


def _minmax(docs: dict[str, float]) -> dict[str, float]:
    if not docs:
        return docs
    low, high = min(docs.values()), max(docs.values())
    span = high - low
    return {d: (s - low) / span if span else 1.0 for d, s in docs.items()}


def _wrap(stage: Stage) -> str:
    text = str(stage)
    return f"({text})" if isinstance(stage, Then | CombSUM) and " " in text else text
