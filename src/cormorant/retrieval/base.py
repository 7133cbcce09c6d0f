"""The leaf stage that holds an index: a retriever over a corpus."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any, ClassVar

from cormorant.errors import PipelineError, ReadOnlyIndex
from cormorant.index.format import write_meta
from cormorant.params import Param, Params
from cormorant.pipeline import DEFAULT_DEPTH, Flow, Stage
from cormorant.types import Corpus, Document, Queries, Run

DEPTH = Param("depth", int, DEFAULT_DEPTH,
              "documents per query when this stage ranks the whole collection", low=1)


class Retriever(Stage):
    """A stage that ranks a whole collection (and, where it can, re-scores candidates).

    Subclasses declare ``PARAMS`` (``Retriever.PARAMS`` + their own), implement
    :meth:`create` (index a corpus), :meth:`open` (read what :meth:`save` wrote),
    :meth:`retrieve` and, if they can, :meth:`rescore`, and register under
    ``cormorant.retrievers``. Callers use :meth:`build` and :meth:`load`, which check the
    parameters against the declaration first.

    Example:
        >>> from cormorant.retrieval.bm25 import BM25Retriever
        >>> from cormorant.types import Corpus, Document
        >>> corpus = Corpus.from_documents([Document("a", "cats purr"), Document("b", "dogs bark")])
        >>> str(BM25Retriever.build(corpus, k1=1.2, depth=1000))
        'bm25(k1=1.2)'
    """

    name: ClassVar[str] = "retriever"
    stores_index: ClassVar[bool] = True
    PARAMS: ClassVar[Params] = Params(DEPTH)
    index_kind: ClassVar[str | None] = None
    """The on-disk index this stage reads, when it shares another stage's (rm3 reads Lucene's)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = dict(settings)

    @property
    def depth(self) -> int:
        return int(self.settings["depth"])

    @classmethod
    def reads(cls) -> str:
        return cls.index_kind or cls.name

    @classmethod
    def build(cls, corpus: Corpus, **params: Any) -> Retriever:
        """Index ``corpus`` with ``params`` (see ``PARAMS``) and return a ready retriever."""
        return cls.create(corpus, cls.PARAMS.resolve(params, cls.name))

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], **params: Any) -> Retriever:
        """Open what :meth:`save` wrote; ``params`` may change query-time settings only."""
        settings = cls.PARAMS.reopen(meta.get("params", {}), params, cls.name,
                                     str(directory.parent))
        return cls.open(directory, meta, settings)

    @classmethod
    def create(cls, corpus: Corpus, settings: dict[str, Any]) -> Retriever:
        """Index ``corpus``; ``settings`` holds every declared parameter, checked."""
        raise NotImplementedError

    @classmethod
    def open(cls, directory: Path, meta: dict[str, Any], settings: dict[str, Any]) -> Retriever:
        """Read the index in ``directory``; ``settings`` as stored, query-time ones applied."""
        raise NotImplementedError

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the index files into ``directory``; return what ``meta.json`` should record
        beside the settings."""
        raise NotImplementedError

    def retrieve(self, queries: Queries, k: int) -> Run:
        """The top ``k`` documents of the collection per query."""
        raise NotImplementedError

    def rescore(self, queries: Queries, candidates: Run) -> Run:
        """Score only the ``candidates`` of each query (this stage placed after ``>>``)."""
        raise PipelineError(f"{self.name} cannot re-score another stage's candidates;"
                            f" put it first in the pipeline or fuse it instead")

    def transform(self, flow: Flow) -> Flow:
        if flow.run is None:
            return flow.with_run(self.retrieve(flow.queries, flow.depth(self.depth)))
        return flow.with_run(self.rescore(flow.queries, flow.run))

    # -- sharding (see cormorant.retrieval.sharded) -------------------------------------

    def statistics(self, queries: Queries) -> Any | None:
        """What this stage's scores for ``queries`` take from the whole collection, counted
        over its own documents: a sharded index's router adds every shard's up (``+``) and
        hands the sum to :meth:`with_statistics`. None (the default): a document's score
        depends on that document alone (dense, chamfer), and shards need nothing shared."""
        return None

    def with_statistics(self, statistics: Any) -> Retriever:
        """This stage scoring with ``statistics`` (summed over every shard) in place of its
        own: a light copy sharing the index, so concurrent searches do not interfere."""
        return self

    # -- writes (see cormorant.retrieval.segmented; a kind that cannot take them says why) --

    writable: ClassVar[bool] = False
    thread_safe: ClassVar[bool] = False
    """Whether concurrent searches may run in one loaded copy (the service serialises the
    others)."""
    read_only_reason: ClassVar[str] = "this stage's index cannot take writes; build it again"
    durable_writes: ClassVar[bool] = False
    """Whether :meth:`publish` makes each write durable in the stage's own files (Lucene
    commits it): a reader finds the writes there and does not replay the log through the stage
    (nor could it: those files are the writer's)."""

    def prepare_write(self, added: list[Document], removed: Collection[str]) -> Any:
        """Do the costly part of a write (analyse, encode, index) without showing it to
        searches; :meth:`publish` shows it. A failure here changes nothing."""
        raise ReadOnlyIndex(f"{self.name}: {self.read_only_reason}")

    def publish(self, prepared: Any) -> None:
        """Show what :meth:`prepare_write` made to searches, at once."""
        raise ReadOnlyIndex(f"{self.name}: {self.read_only_reason}")

    def share(self, owner: Retriever) -> None:
        """Search what ``owner`` (another loaded copy of the same stored stage) holds, writes
        included."""

    def commit_segments(self, folder: Path, generation: int) -> dict[str, Any]:
        """Write what is held only in memory under ``folder``; returns what
        :meth:`restore_segments` needs to read it back."""
        return {}

    def restore_segments(self, folder: Path, record: dict[str, Any], verify: bool) -> None:
        """Read back what :meth:`commit_segments` wrote."""

    def referenced_files(self) -> set[str]:
        """Names under the commit folder still in use (others are removed after a commit)."""
        return set()

    def compact(self, retrain: bool | None = None) -> None:
        """Hold every live document in one segment, deletions dropped (a merge, before
        :meth:`save` writes it as the stage's own files)."""

    def ready_for_writes(self) -> None:
        """Build what the first write would otherwise build (a writer opening the index calls
        it), so that write costs what any other does."""

    def snapshot(self) -> Any:
        """What searches read now, to :meth:`publish` again if a merge fails."""
        return None

    def reopen(self, directory: Path) -> None:
        """Read the stage's own files again from ``directory``, which a merge just wrote."""


def save_leaf(directory: Path, leaf: Retriever) -> dict[str, Any]:
    """Write ``leaf`` into ``directory`` (created) with its ``meta.json``; returns the record
    the whole index's ``meta.json`` keeps for it."""
    directory.mkdir()
    leaf_meta = leaf.save(directory)
    write_meta(directory, {"kind": leaf.reads(), "params": leaf.settings, **leaf_meta})
    return {"name": leaf.name, "kind": leaf.reads(), "params": leaf.settings,
            "dir": directory.name}


class QueryStage(Stage):
    """A stage that holds no index (a re-ranker, a query rewriter): made from its parameters
    alone, the same way over a corpus or over an opened index.

    Subclasses declare ``PARAMS`` and take them as keyword arguments.
    """

    def __init__(self, **params: Any) -> None:
        self.settings = self.PARAMS.resolve(params, self.name)

    @classmethod
    def build(cls, corpus: Corpus | None = None, **params: Any) -> QueryStage:
        """The stage; ``corpus`` is not read (document text comes with each query's flow)."""
        return cls(**params)

    @classmethod
    def load(cls, directory: Path | None = None, meta: dict[str, Any] | None = None,
             **params: Any) -> QueryStage:
        return cls(**params)
