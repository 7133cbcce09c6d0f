"""The leaf stage: a retriever that holds an index over a corpus."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar

from cormorant.errors import PipelineError
from cormorant.pipeline import DEFAULT_DEPTH, Stage
from cormorant.pipeline_syntax import Leaf
from cormorant.types import Corpus, Queries, Run


class Retriever(Stage):
    """A stage that ranks a whole collection (and, where it can, re-scores candidates).

    Subclasses implement :meth:`build`, :meth:`retrieve`, :meth:`save` and :meth:`load`, and
    register under ``cormorant.retrievers``. ``params`` are the keyword arguments the retriever
    was built or loaded with; they give its string form, ``dense(model=/m/x)``.
    """

    name: ClassVar[str] = "retriever"
    index_kind: ClassVar[str | None] = None
    """The on-disk index this stage reads, when it shares another stage's (rm3 reads Lucene's)."""

    @classmethod
    def reads(cls) -> str:
        return cls.index_kind or cls.name

    def __init__(self, params: dict[str, Any] | None = None, depth: int = DEFAULT_DEPTH) -> None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise PipelineError(f"{self.name}: depth must be a positive integer, got {depth!r}")
        self.params = dict(params or {})
        self.depth = depth

    @classmethod
    def build(cls, corpus: Corpus, **params: Any) -> Retriever:
        """Index ``corpus`` and return a ready retriever."""
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], **params: Any) -> Retriever:
        """Open what :meth:`save` wrote; ``params`` are query-time options to apply or check."""
        raise NotImplementedError

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the index files into ``directory``; return what ``meta.json`` should record."""
        raise NotImplementedError

    @classmethod
    def identity(cls, params: dict[str, Any]) -> dict[str, Any]:
        """What, beyond the pipeline string, decides this stage's results: cache keys use it.

        A stage whose ``model=PATH`` can change on disk adds the model's fingerprint.
        """
        return dict(params)

    def retrieve(self, queries: Queries, k: int) -> Run:
        """The top ``k`` documents of the collection per query."""
        raise NotImplementedError

    def rescore(self, queries: Queries, candidates: Run) -> Run:
        """Score only the ``candidates`` of each query (this stage placed after ``>>``)."""
        raise PipelineError(f"{self.name} cannot re-score another stage's candidates;"
                            f" put it first in the pipeline or fuse it instead")

    def transform(self, queries: Queries, candidates: Run | None) -> Run:
        if candidates is None:
            return self.retrieve(queries, self.depth)
        return self.rescore(queries, candidates)

    def __str__(self) -> str:
        return str(Leaf(self.name, self.params))


def check_params(cls: type[Retriever], method: str, params: dict[str, Any]) -> None:
    """Fail clearly on keyword arguments ``cls.method`` does not take."""
    signature = inspect.signature(getattr(cls, method))
    if any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
        return  # the method checks its own options
    accepted = [n for n, p in signature.parameters.items()
                if p.kind == p.KEYWORD_ONLY or (p.kind == p.POSITIONAL_OR_KEYWORD
                                                and n not in ("self", "cls", "corpus",
                                                              "directory", "meta"))]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise PipelineError(f"{cls.name} does not take {', '.join(unknown)}"
                            f" (it takes: {', '.join(accepted) or 'no parameters'})")
