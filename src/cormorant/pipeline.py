"""Stages, the value that flows through them, and the operators that compose them.

Every retriever, re-ranker, query rewriter and fuser is a :class:`Stage` with one method,
``transform(flow) -> flow``. A :class:`Flow` carries what a query needs on its way through a
pipeline: the queries as they now read, the queries as they were asked, the ranking so far
(``None`` before the first ranking stage) and a handle for document text. So a rewriter
returns new query text, a retriever adds a ranking, a re-ranker re-scores one, and none of
them reaches into another. Operators, as PyTerrier's:

- ``a >> b``: ``b`` receives what ``a`` returns (a retriever after a ranking re-scores it);
- ``a % k``: keep ``a``'s top ``k`` per query; ``k`` also reaches the stages inside ``a`` that
  can stop early (a first-stage retriever asked for 100, not 1000, documents);
- ``a + b``: add the two stages' scores (CombSUM); ``w * a`` scales ``a``'s scores;
- ``rrf(a, b, ...)``: reciprocal-rank fusion.

A stage prints as its pipeline string; the printing is done once, by the syntax tree in
:mod:`cormorant.pipeline_syntax` (:meth:`Stage.spec`).

Example:
    >>> a = StaticStage(Run({"q": {"x": 3.0, "y": 2.0}}), "a")
    >>> b = StaticStage(Run({"q": {"y": 9.0}}), "b")
    >>> str(rrf(a, b) % 1)
    'rrf(a, b) % 1'
    >>> (rrf(a, b) % 1).search({"q": "text"}, k=5)
    {'q': {'y': 0.03252247488101534}}
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol

from cormorant import pipeline_syntax as syntax
from cormorant.errors import PipelineError
from cormorant.fusion import NORMS
from cormorant.params import Param, Params
from cormorant.types import Document, Queries, Run

DEFAULT_DEPTH = 1000


class Documents(Protocol):
    """Document text by id: an index's document store, a corpus, or a live index's view."""

    def get_many(self, doc_ids: list[str]) -> dict[str, Document]: ...


@dataclass(frozen=True)
class Flow:
    """What a batch of queries carries from stage to stage.

    Attributes:
        queries: query id -> text as it now reads (a rewriter changes it).
        original: query id -> text as it was asked.
        run: the ranking so far; ``None`` until a stage ranks.
        documents: where stages read document text (re-rankers, feedback).
        k: how many results per query the consumer keeps, when known: a retriever ranking the
            collection need not return more.
    """

    queries: Queries
    original: Queries
    run: Run | None = None
    documents: Documents | None = None
    k: int | None = None

    @classmethod
    def start(cls, queries: Queries, documents: Documents | None = None,
              k: int | None = None) -> Flow:
        return cls(dict(queries), dict(queries), None, documents, k)

    def with_run(self, run: Run | None) -> Flow:
        return replace(self, run=run)

    def with_queries(self, queries: Queries) -> Flow:
        return replace(self, queries=dict(queries))

    def with_k(self, k: int | None) -> Flow:
        return replace(self, k=k)

    def depth(self, own: int) -> int:
        """How many documents a stage ranking the collection should return."""
        return own if self.k is None else min(own, self.k)

    def ranking(self, stage: object) -> Run:
        """The ranking so far; ``stage`` (for the message) needs one."""
        if self.run is None:
            raise PipelineError(f"'{stage}' needs a ranking before it; put a retriever first,"
                                f" e.g. 'bm25 % 100 >> {stage}'")
        return self.run

    def result(self, stage: object) -> Run:
        """The final ranking of a pipeline ``stage`` that ran to its end."""
        if self.run is None:
            raise PipelineError(f"'{stage}' ranks nothing: end it with a stage that ranks,"
                                f" e.g. '{stage} >> bm25'")
        return self.run

    def texts(self, doc_ids: Iterable[str], stage: object) -> dict[str, str]:
        """Contents of the documents that exist, by id."""
        return {d: doc.contents for d, doc in self.records(doc_ids, stage).items()}

    def records(self, doc_ids: Iterable[str], stage: object) -> dict[str, Document]:
        """The documents that exist (title and text apart), by id."""
        if self.documents is None:
            raise PipelineError(f"'{stage}' reads document text, and this pipeline has no"
                                " documents; build it over a corpus or open it from an index")
        return dict(self.documents.get_many(list(dict.fromkeys(doc_ids))))


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
    """Base of every stage. Subclasses implement :meth:`transform` and :meth:`spec`.

    A stage with parameters declares them once in ``PARAMS`` and keeps its values in
    ``settings``; a stage that keeps files in an index directory sets ``stores_index``.
    """

    name: ClassVar[str] = "stage"
    usage: ClassVar[str] = ""
    """How the stage is written in a pipeline, for help (its name when empty)."""
    PARAMS: ClassVar[Params] = Params()
    stores_index: ClassVar[bool] = False
    settings: dict[str, Any]

    def transform(self, flow: Flow) -> Flow:
        """What this stage makes of ``flow``."""
        raise NotImplementedError

    @classmethod
    def declared(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter's value for ``params`` from a pipeline string, checked against
        ``PARAMS`` (defaults filled in), without building anything."""
        return cls.PARAMS.resolve(params, cls.name)

    @classmethod
    def identity(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """What decides this stage's results beyond ``settings``, for cache keys (a stage with
        ``model=PATH`` adds the model's fingerprint)."""
        return dict(settings)

    def children(self) -> list[Stage]:
        """The stages this one is made of, left to right."""
        return []

    def spec(self) -> syntax.Spec:
        """This stage as a syntax tree: its string form is ``str(stage.spec())``."""
        return syntax.Leaf(self.name, self.PARAMS.shown(getattr(self, "settings", {})))

    def walk(self) -> Iterator[Stage]:
        """This stage and every stage inside it, depth first, left to right."""
        yield self
        for child in self.children():
            yield from child.walk()

    def leaves(self) -> list[Stage]:
        """The stages that hold an index, left to right (what an index directory stores)."""
        return [s for s in self.walk() if s.stores_index]

    def rank(self, queries: Queries | Iterable[str] | str,
             documents: Documents | None = None) -> Run:
        """The whole ranking this stage makes for ``queries`` (each stage's own depth)."""
        return self.transform(Flow.start(as_queries(queries), documents)).result(self)

    def search(self, queries: Queries | Iterable[str] | str, k: int = 10,
               documents: Documents | None = None) -> Run:
        """Run the stage for ``queries`` and keep the top ``k`` per query.

        Raises:
            PipelineError: no queries, an empty query, or ``k`` below 1.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise PipelineError(f"k must be a positive integer, got {k!r}")
        flow = Flow.start(as_queries(queries), documents)
        return Cutoff(self, k).transform(flow).result(self)

    def __str__(self) -> str:
        return str(self.spec())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

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
    """``first >> second``: the second stage receives what the first returns."""

    def __init__(self, first: Stage, second: Stage) -> None:
        self.first, self.second = first, second

    def transform(self, flow: Flow) -> Flow:
        # A cut-off after the pair limits the second stage's output, not the first's.
        return self.second.transform(self.first.transform(flow.with_k(None)).with_k(flow.k))

    def children(self) -> list[Stage]:
        return [self.first, self.second]

    def spec(self) -> syntax.Spec:
        return syntax.Then(self.first.spec(), self.second.spec())


class Cutoff(Stage):
    """``stage % k``: the stage's top ``k`` per query."""

    def __init__(self, stage: Stage, k: int) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise PipelineError(f"'% k' needs a positive integer, got {k!r}")
        self.stage, self.k = stage, k

    def transform(self, flow: Flow) -> Flow:
        out = self.stage.transform(flow.with_k(flow.depth(self.k)))
        return out.with_run(out.result(self.stage).topk(self.k)).with_k(flow.k)

    def children(self) -> list[Stage]:
        return [self.stage]

    def spec(self) -> syntax.Spec:
        return syntax.Cutoff(self.stage.spec(), self.k)


class Scaled(Stage):
    """``weight * stage``: the stage's scores times ``weight``."""

    def __init__(self, stage: Stage, weight: float) -> None:
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise PipelineError(f"'*' needs a number and a stage, got {weight!r}")
        self.stage, self.weight = stage, float(weight)

    def transform(self, flow: Flow) -> Flow:
        # A positive weight keeps the order, so a cut-off may still reach the stage.
        out = self.stage.transform(flow if self.weight > 0 else flow.with_k(None))
        run = out.ranking(self.stage)
        return out.with_run(Run({q: {d: s * self.weight for d, s in docs.items()}
                                 for q, docs in run.items()}))

    def children(self) -> list[Stage]:
        return [self.stage]

    def spec(self) -> syntax.Spec:
        return syntax.Scale(self.stage.spec(), self.weight)


class Composite(Stage):
    """A stage built over other stages, written ``name(stage, ..., key=value)``.

    Subclasses set ``arity`` (how many stages they take; ``None`` for two or more) and
    ``PARAMS``, and register like any stage.
    """

    arity: ClassVar[int | None] = None

    def __init__(self, stages: list[Stage], **params: Any) -> None:
        stages = [_stage(s, self.name) for s in stages]
        if self.arity is None and len(stages) < 2:
            raise PipelineError(f"{self.name} needs at least two stages, got {len(stages)}")
        if self.arity is not None and len(stages) != self.arity:
            raise PipelineError(f"{self.name} takes {self.arity} stage(s), got {len(stages)}:"
                                f" {self.usage}")
        self.stages = stages
        self.settings = self.PARAMS.resolve(params, self.name)

    def children(self) -> list[Stage]:
        return list(self.stages)

    def spec(self) -> syntax.Spec:
        return syntax.Call(self.name, [s.spec() for s in self.stages],
                           self.PARAMS.shown(self.settings))


class Fusion(Composite):
    """Runs several stages on the same input and merges their rankings."""

    name: ClassVar[str] = "fusion"

    def transform(self, flow: Flow) -> Flow:
        # Each input is ranked to its own depth: fusion needs more than the final k of each.
        runs = [s.transform(flow.with_k(None)).ranking(s) for s in self.ranked_stages()]
        return flow.with_run(self.fuse(runs))

    def ranked_stages(self) -> list[Stage]:
        return self.stages

    def fuse(self, runs: list[Run]) -> Run:
        raise NotImplementedError


class CombSUM(Fusion):
    """Sum of the stages' scores (``a + b``); optionally normalised per query first
    (:func:`cormorant.fusion.normalize`, shared with ``cormorant fuse``). Normalised, a stage
    given as ``w * stage`` counts ``w`` times its normalised scores: an interpolation.

    Example:
        >>> a = StaticStage(Run({"q": {"x": 4.0, "y": 2.0, "z": 0.0}}))
        >>> b = StaticStage(Run({"q": {"x": 0.0, "y": 10.0, "z": 5.0}}))
        >>> CombSUM([0.25 * a, 0.75 * b], normalize="minmax").rank({"q": "text"})["q"]
        {'x': 0.25, 'y': 0.875, 'z': 0.375}
    """

    name: ClassVar[str] = "combsum"
    usage: ClassVar[str] = "combsum(bm25, dense, normalize=minmax)"
    PARAMS: ClassVar[Params] = Params(
        Param("normalize", str, "none", "normalise each run per query before summing"
              " (as cormorant.fusion.normalize)",
              choices=NORMS))

    def __init__(self, stages: list[Stage], **params: Any) -> None:
        settings = self.PARAMS.resolve(params, self.name)
        # Flatten a + b + c into one sum so its string form round-trips.
        flat: list[Stage] = []
        for stage in stages:
            same = isinstance(stage, CombSUM) and stage.settings == settings
            flat.extend(stage.stages if same else [stage])  # type: ignore[attr-defined]
        super().__init__(flat, **params)
        # Normalised, a weight applies to the normalised scores (an interpolation such as
        # combsum(0.4 * bm25, 0.6 * tildev2, normalize=minmax)): scaling the scores before
        # normalising them would cancel it.
        normalized = self.settings["normalize"] != "none"
        weighted = [_outer_weight(s) if normalized else (1.0, s) for s in self.stages]
        self.weights = [w for w, _ in weighted]
        self._ranked = [stage for _, stage in weighted]

    def ranked_stages(self) -> list[Stage]:
        return self._ranked

    def fuse(self, runs: list[Run]) -> Run:
        from cormorant.fusion import fuse

        return fuse(runs, "combsum", norm=self.settings["normalize"], weights=self.weights)

    def spec(self) -> syntax.Spec:
        if self.settings["normalize"] == "none":
            return syntax.Sum([s.spec() for s in self.stages])
        return super().spec()


class RRF(Fusion):
    """Reciprocal-rank fusion (Cormack et al., 2009): score(d) = sum w / (k + rank(d)), rank from
    1. A stage given as ``w * stage`` counts with weight ``w`` (weighted RRF; ranks are what
    the stage itself ranks, since scaling scores does not change them); others weigh 1.

    Example:
        >>> a = StaticStage(Run({"q": {"x": 3.0, "y": 2.0}}))
        >>> b = StaticStage(Run({"q": {"y": 9.0}}))
        >>> RRF([a, b], k=60).rank({"q": "text"})["q"]["y"] == 1 / 62 + 1 / 61
        True
        >>> RRF([a, 0.5 * b], k=60).rank({"q": "text"})["q"]["y"] == 1 / 62 + 0.5 / 61
        True
    """

    name: ClassVar[str] = "rrf"
    usage: ClassVar[str] = "rrf(bm25, dense)"
    PARAMS: ClassVar[Params] = Params(
        Param("k", int, 60, "rank offset: each document scores sum w / (k + rank)", low=0))

    def __init__(self, stages: list[Stage], **params: Any) -> None:
        super().__init__(stages, **params)
        weighted = [_rrf_weight(s) for s in self.stages]
        self.weights = [w for w, _ in weighted]
        self._ranked = [stage for _, stage in weighted]

    def ranked_stages(self) -> list[Stage]:
        # A weighted stage's own ranking: its weight applies to the reciprocal rank instead.
        return self._ranked

    def fuse(self, runs: list[Run]) -> Run:
        from cormorant.fusion import fuse

        return fuse(runs, "rrf", weights=self.weights, k=self.settings["k"])


def _outer_weight(stage: Stage) -> tuple[float, Stage]:
    """A fused argument's weight (the product of its outer ``w *`` factors, 1 without) and the
    stage whose ranking is fused."""
    weight = 1.0
    while isinstance(stage, Scaled):
        weight, stage = weight * stage.weight, stage.stage
    return weight, stage


def _rrf_weight(stage: Stage) -> tuple[float, Stage]:
    """:func:`_outer_weight`, checked for rrf: positive, and not inside a cut-off."""
    weight, stage = _outer_weight(stage)
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
        self.run, self.label = run, name

    def transform(self, flow: Flow) -> Flow:
        return flow.with_run(Run({q: dict(self.run.get(q, {})) for q in flow.queries}))

    def spec(self) -> syntax.Spec:
        return syntax.Leaf(self.label)


class WithDocuments(Stage):
    """A pipeline bound to where its document text lives (a corpus or an index's store), so
    ``pipe.search(...)`` needs no more arguments. Prints as the pipeline it wraps."""

    def __init__(self, stage: Stage, documents: Documents) -> None:
        self.stage, self.documents = stage, documents

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes this object lacks: the binding stays invisible to code
        # that reads the wrapped stage's own attributes (rrf's weights, dense's encoder).
        if name == "stage":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.stage, name)

    def transform(self, flow: Flow) -> Flow:
        return self.stage.transform(flow if flow.documents is not None
                                    else replace(flow, documents=self.documents))

    def children(self) -> list[Stage]:
        return [self.stage]

    def spec(self) -> syntax.Spec:
        return self.stage.spec()
