"""Sharded indexes: each shard built from its own documents, written as one ordinary index per
shard, opened as one.

Building: no stage is built over the whole corpus. What the shards must share is learnt once
here (:meth:`SegmentedRetriever.learn_shared`: IVF centroids and PQ codebooks trained on a
seeded sample of the cached vectors; MUVERA's FDE settings and seed and the encoder come from
the build settings). Then one task per shard (:class:`~cormorant.retrieval.distributed.Runner`
``tasks``: a Ray task, or in process one after another) builds each stored stage from the
shard's documents with them (:meth:`SegmentedRetriever.create_part`: the shard's rows of the
embedding cache, nothing encoded again) and writes it as an ordinary index of the shard's
documents. BM25's collection statistics are not stored: the router adds every shard's up at
query time (:mod:`cormorant.retrieval.sharded`), which stays exact after writes. A stage that
cannot build a shard alone (``tildev2``, ``dense(cache=false)``) is built whole and split.

Opening gives a :class:`ShardedHandle`, the same API as an
:class:`~cormorant.retrieval.assemble.IndexHandle`: ``pipeline``, ``open_pipeline``, ``live``
(writes routed to the shard that owns each id), ``meta``, ``close``.

Example:
    >>> save_sharded_index("rrf(bm25, dense)", corpus, "indexes/scifact-4", shards=4)  # doctest: +SKIP
    >>> open_index("indexes/scifact-4").pipeline.search("vitamin d")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cormorant import cache, registry
from cormorant.errors import IndexFormatError, PipelineError, ReadOnlyIndex
from cormorant.index.format import atomic_directory, read_meta, write_meta
from cormorant.index.sharding import (
    ROUTING_RULE,
    SHARDED_KIND,
    SHARDING_VERSION,
    check_manifest,
    check_shard_count,
    shard_dir,
    shard_identity,
    shard_of,
    shared_record,
)
from cormorant.pipeline import Stage, WithDocuments
from cormorant.pipeline_syntax import Leaf, materialize, named, parse
from cormorant.retrieval.assemble import (
    LeafHook,
    build_pipeline,
    open_index,
    require_documents,
    validate,
    write_index_files,
)
from cormorant.retrieval.distributed import InProcess, Runner, prefill_embeddings
from cormorant.retrieval.fanout import fan_out
from cormorant.retrieval.live import WriteResult, take_lock
from cormorant.retrieval.multivector import SharedQueries
from cormorant.retrieval.segmented import SegmentedRetriever
from cormorant.retrieval.sharded import sharded_stage
from cormorant.types import Corpus, Document


def save_sharded_index(text: str, corpus: Corpus, out: str | Path, shards: int,
                       overwrite: bool = False, runner: Runner | None = None) -> Path:
    """Build ``text`` over ``corpus`` as ``shards`` shards, each built from its own documents
    by one task, and write them atomically.

    With a ``runner`` (:mod:`cormorant.retrieval.distributed`: a Ray cluster, or threads),
    dense stages' corpus embeddings and token stages' token vectors are encoded by it into
    the cache first, and the shard tasks run on it; without, everything runs here, one shard
    after another (so the build holds about one shard in memory, not the whole index).

    Raises:
        PipelineError: a stage that cannot be split (``bm25.lucene``, ``seal``).
        IndexFormatError: ``out`` exists (without ``overwrite``), a bad shard count, or a
            shard that would hold no document.
    """
    out = Path(out)
    check_shard_count(shards)
    if out.exists() and not overwrite:
        raise IndexFormatError(f"{out} already exists (use --overwrite to replace it)")
    validate(text)
    stored = stored_stages(text)
    for leaf, cls, _ in stored:
        if not issubclass(cls, SegmentedRetriever):
            raise PipelineError(f"{leaf.name} cannot be sharded (its index is not made of"
                                " segments); shardable: bm25, dense, chamfer, muvera")
    require_documents(corpus)
    check_shard_sizes(corpus, shards)
    if runner is not None:
        prefill_embeddings(text, corpus, runner)
    locks = _lock_existing(out)
    try:
        with atomic_directory(out, overwrite=overwrite) as tmp:
            uid = uuid.uuid4().hex
            work = runner or InProcess()
            if all(cls.builds_parts(settings) for _, cls, settings in stored):
                parts = _build_shards(tmp, uid, shards, text, stored, corpus, work)
            else:
                parts = _split_shards(tmp, uid, shards, text, corpus, work)
            shared = [_leaf_record(tmp / shard_dir(0), p) for p in range(len(stored))]
            for number in range(1, shards):  # built apart: check they agree now, not at open
                folder = tmp / shard_dir(number)
                _check_shared(folder, read_meta(folder, verify=False), shared)
            write_meta(tmp, {"kind": SHARDED_KIND, "sharding": SHARDING_VERSION,
                             "routing": ROUTING_RULE, "pipeline": text, "shards": shards, "uid": uid,
                             "count": sum(p["count"] for p in parts), "corpus": corpus.name,
                             "parts": parts, "shared": shared})
    finally:
        for fd in locks:
            os.close(fd)
    return out


StoredStage = tuple[Leaf, type[Stage], dict[str, Any]]
"""A stored stage of a pipeline: its leaf, class and build settings (every parameter)."""


def stored_stages(text: str) -> list[StoredStage]:
    """The stages of pipeline ``text`` that hold an index, left to right (what each shard
    stores, in the order a built pipeline's ``leaves()`` lists them)."""
    found = []
    for node in named(parse(text)):
        cls = registry.stage_class(node.name)
        if isinstance(node, Leaf) and cls.stores_index:
            found.append((node, cls, cls.PARAMS.resolve(node.params, cls.name)))  # type: ignore[attr-defined]
    return found


def check_shard_sizes(corpus: Corpus, shards: int) -> list[int]:
    """How many documents of ``corpus`` each shard holds (one pass over the ids).

    Raises:
        IndexFormatError: a shard would hold no document.
    """
    sizes = [0] * shards
    for doc in corpus:
        sizes[shard_of(doc.doc_id, shards)] += 1
    for number, size in enumerate(sizes):
        if not size:
            raise IndexFormatError(f"shard {number} of {shards} would hold no document; use"
                                   " fewer shards for this collection")
    return sizes


def _build_shards(tmp: Path, uid: str, shards: int, text: str, stored: list[StoredStage],
                  corpus: Corpus, runner: Runner) -> list[dict[str, Any]]:
    """Every shard built by its own task from its own documents, with what the stages must
    share learnt here once (IVF centroids, PQ codebooks: trained empty indexes)."""
    learnt: dict[str, Any] = {}  # a stage named twice is learnt once
    for leaf, cls, settings in stored:
        if str(leaf) not in learnt:
            learnt[str(leaf)] = cls.learn_shared(corpus, settings)  # type: ignore[attr-defined]
    shared = tuple(learnt[str(leaf)] for leaf, _, _ in stored)
    return runner.tasks(shard_task, [ShardTask(str(tmp), uid, number, shards, text, corpus,
                                               shared, str(cache.root()))
                                     for number in range(shards)])


@dataclass(frozen=True)
class ShardTask:
    """What one shard task needs; it pickles (a Ray task's argument): the corpus as its
    source (a file is read again there, so it must be on a file system every host shares,
    as must ``out`` and the embedding cache), the shared parts as FAISS's bytes."""

    out: str
    uid: str
    number: int
    shards: int
    text: str
    corpus: Corpus
    shared: tuple[Any, ...]
    """Per stored stage, what :meth:`SegmentedRetriever.learn_shared` learnt."""
    cache: str
    """The embedding cache the driver filled."""


def shard_task(task: ShardTask) -> dict[str, Any]:
    """Build and write one shard from its own documents: a Ray task's body (also runs in
    process, the same code, so a shard's files are byte for byte the same either way). Each
    stored stage is built by ``create_part`` from the shard's rows of the embedding cache
    (nothing is encoded) with the shared parts, and written as an ordinary index.

    Example:
        >>> shard_task(ShardTask("idx", uid, 0, 4, "bm25", corpus, (None,), "/cache"))  # doctest: +SKIP
        {'dir': 'shard-000', 'count': 1290}
    """
    # The shard's ids, hashed once: every stage and the document store ask again and again.
    own = {d.doc_id for d in task.corpus if shard_of(d.doc_id, task.shards) == task.number}
    mine = own.__contains__
    made: dict[str, Stage] = {}
    with cache.rooted(task.cache):
        for (leaf, cls, settings), shared in zip(stored_stages(task.text), task.shared,
                                                 strict=True):
            if str(leaf) not in made:
                piece = cls.create_part(task.corpus, settings, mine, shared)  # type: ignore[attr-defined]
                if piece is None:
                    raise IndexFormatError(f"shard {task.number} of {task.shards} would hold"
                                           " no document; use fewer shards for this collection")
                made[str(leaf)] = piece
    pieces = [made[str(leaf)] for leaf, _, _ in stored_stages(task.text)]
    return _write_shard(Path(task.out), task.uid, task.number, task.shards, task.text, pieces,
                        task.corpus.filtered(mine))


# -- stages built whole, then split --------------------------------------------------------

STAGED = ".whole"
"""The folder, inside the sharded index being built, that holds the whole built index while
remote tasks split it (removed before the index is committed): only for a stage that cannot
build a shard on its own (``tildev2``, ``dense(cache=false)``)."""


def _split_shards(tmp: Path, uid: str, shards: int, text: str, corpus: Corpus,
                  runner: Runner) -> list[dict[str, Any]]:
    """Every shard's folder, split from the whole pipeline built here, one task each. In
    process the tasks split the built stages held in memory; on a cluster (``runner.remote``)
    a built stage holds FAISS and SQLite handles that do not pickle, so the whole index is
    written once where every task can read it, and each task opens it and splits it by the
    same :func:`_split_shard`."""
    leaves = build_pipeline(text, corpus).leaves()
    numbers = list(range(shards))
    if not runner.remote:
        return runner.map(
            lambda number: _split_shard(tmp, uid, number, shards, text, leaves, corpus), numbers)
    staged = tmp / STAGED
    staged.mkdir()
    write_index_files(staged, text, leaves, corpus)
    try:
        return runner.tasks(split_task, [SplitTask(str(staged), str(tmp), uid, number, shards,
                                                   text) for number in numbers])
    finally:
        shutil.rmtree(staged)


@dataclass(frozen=True)
class SplitTask:
    """What one remote split task needs (plain strings and numbers, so it pickles)."""

    staged: str
    out: str
    uid: str
    number: int
    shards: int
    text: str


def split_task(task: SplitTask) -> dict[str, Any]:
    """Write one shard of the whole index staged at ``task.staged``: a Ray task's body (also
    runs in process). The staged index's stored stages are loaded and split exactly as the
    in-memory ones would be, its documents in the order they were written, so the shard's
    files are byte for byte those an in-process build writes.

    Example:
        >>> split_task(SplitTask("idx/.whole", "idx", uid, 0, 4, "tildev2"))  # doctest: +SKIP
        {'dir': 'shard-000', 'count': 1290}
    """
    handle = open_index(task.staged, verify=False)  # written a moment ago by this build
    try:
        handle.opener.load_all()
        leaves = [handle.live.owners[p] for p in range(len(handle.meta["leaves"]))]
        corpus = Corpus(handle.docs.documents, name=handle.meta["corpus"])
        return _split_shard(Path(task.out), task.uid, task.number, task.shards, task.text,
                            leaves, corpus)  # type: ignore[arg-type]
    finally:
        handle.close()


def _split_shard(tmp: Path, uid: str, number: int, shards: int, text: str,
                 leaves: list[Stage], corpus: Corpus) -> dict[str, Any]:
    def mine(doc_id: str) -> bool:
        return shard_of(doc_id, shards) == number

    pieces = [leaf.part(mine) for leaf in leaves]  # type: ignore[attr-defined]
    if any(p is None for p in pieces):
        raise IndexFormatError(f"shard {number} of {shards} would hold no document; use fewer"
                               " shards for this collection")
    return _write_shard(tmp, uid, number, shards, text, pieces,  # type: ignore[arg-type]
                        corpus.filtered(mine))


def _write_shard(tmp: Path, uid: str, number: int, shards: int, text: str,
                 pieces: list[Stage], own: Corpus) -> dict[str, Any]:
    """Shard ``number``'s folder: its documents ``own`` and its copy of each stored stage."""
    folder = tmp / shard_dir(number)
    folder.mkdir()
    count = write_index_files(folder, text, pieces, own,
                              {"shard": shard_identity(uid, number, shards)})
    return {"dir": folder.name, "count": count}


def _leaf_record(shard: Path, position: int) -> dict[str, Any]:
    record = read_meta(shard, verify=False)["leaves"][position]
    return {"name": record["name"], **shared_record(read_meta(shard / record["dir"],
                                                              verify=False))}


def _lock_existing(out: Path) -> list[int]:
    """The write locks of the index ``out`` replaces (each shard's, or its own): a server
    writing to it must stop first."""
    if not (out / "meta.json").is_file():
        return []
    meta = read_meta(out, verify=False)
    folders = [out / p["dir"] for p in meta.get("parts", [])] \
        if meta.get("kind") == SHARDED_KIND else [out]
    locks: list[int] = []
    try:
        for folder in folders:
            if folder.is_dir():
                locks.append(take_lock(folder))
    except BaseException:
        for fd in locks:
            os.close(fd)
        raise
    return locks


# -- opening -------------------------------------------------------------------------------


def open_sharded(path: Path, meta: dict[str, Any], pipeline: str | None, verify: bool,
                 wrap: LeafHook | None, write: bool) -> ShardedHandle:
    """Open a sharded index (``open_index`` calls this for one); see
    :func:`cormorant.retrieval.assemble.open_index` for the arguments.

    Raises:
        IndexFormatError: a damaged manifest or shard, or shards that disagree on what they
            must share (build settings, encoder, FDE seed).
    """
    text = pipeline or meta["pipeline"]
    validate(text)
    folders = shard_folders(path, meta)
    handle = ShardedHandle(path, meta)
    try:
        for folder, leaves in folders:
            # Every stored stage, loaded before the shard replays its writes.
            handle.shards.append(open_index(folder, leaves, verify, wrap, write))
        handle.pipeline = handle.open_pipeline(text)
    except BaseException:
        handle.close(commit=False)
        raise
    return handle


def shard_folders(path: Path, meta: dict[str, Any]) -> list[tuple[Path, str]]:
    """Each shard's folder and the pipeline naming all its stored stages (what a shard is
    opened with, here or in a Ray Serve replica), after checking that the shards belong to
    this sharded index and were built alike.

    Raises:
        IndexFormatError: a damaged manifest, a shard of another sharded index, or shards
            that disagree on what they must share (build settings, encoder, FDE seed).
    """
    parts = check_manifest(path, meta)
    found = []
    for number, part in enumerate(parts):
        folder = path / part["dir"]
        shard_meta = read_meta(folder, verify=False)
        if shard_meta.get("shard") != shard_identity(meta["uid"], number, len(parts)):
            raise IndexFormatError(f"{folder} is not shard {number} of this sharded index"
                                   " (copied from another one?): rebuild it")
        _check_shared(folder, shard_meta, meta["shared"])
        found.append((folder, _leaves_text(shard_meta)))
    return found


def _check_shared(folder: Path, shard_meta: dict[str, Any],
                  shared: list[dict[str, Any]]) -> None:
    leaves = shard_meta.get("leaves")
    if not isinstance(leaves, list) or len(leaves) != len(shared):
        raise IndexFormatError(f"{folder} does not hold the stages the sharded index names")
    for record, expected in zip(leaves, shared, strict=True):
        found = {"name": record.get("name"),
                 **shared_record(read_meta(folder / str(record.get("dir")), verify=False))}
        if found != expected:
            raise IndexFormatError(f"{folder}: its {record.get('name')} stage was built"
                                   " otherwise than the other shards' (settings, encoder or"
                                   " FDE seed): rebuild the sharded index")


def _leaves_text(shard_meta: dict[str, Any]) -> str:
    """A pipeline naming every stored stage of a shard, each with its build settings."""
    leaves = []
    for record in shard_meta["leaves"]:
        cls = registry.stage_class(record["name"])
        leaves.append(str(Leaf(record["name"], cls.PARAMS.shown(record.get("params") or {}))))
    return leaves[0] if len(leaves) == 1 else f"rrf({', '.join(leaves)})"


class ShardClient(Protocol):
    """How the router reaches one shard (see :class:`ShardedHandle`)."""

    @property
    def opener(self) -> Any:
        """Has ``open(leaf, cls)``: the shard's copy of a stored stage."""

    @property
    def live(self) -> Any:
        """The shard's writes and documents (a :class:`LiveIndex` or the same methods)."""

    def stored_leaves(self) -> list[tuple[dict[str, Any], Path]]:
        """Each stored stage's record and folder."""


@dataclass
class ShardedHandle:
    """An opened sharded index: the API of :class:`~cormorant.retrieval.assemble.IndexHandle`
    over one shard client per shard (``shards``).

    A shard client is what the router reaches a shard through: ``opener.open(leaf, cls)``
    (the shard's copy of a stored stage), ``live`` (its writes and documents) and
    ``stored_leaves()``. An opened :class:`IndexHandle` is the in-process client;
    :class:`cormorant.service.shard_client.ServeShard` reaches a shard served by Ray Serve
    replicas. The router and the write routing below are the same code for both.
    """

    path: Path
    meta: dict[str, Any]
    shards: list[ShardClient] = field(default_factory=list)
    pipeline: Stage | None = None

    @property
    def live(self) -> ShardedLive:
        return ShardedLive(self.shards)

    def __repr__(self) -> str:
        return (f"ShardedHandle({str(self.path)!r}, {str(self.pipeline)!r},"
                f" {len(self.shards)} shards, {self.live.count:,} documents of"
                f" {self.meta.get('corpus')!r})")

    def stored_leaves(self) -> list[tuple[dict[str, Any], Path]]:
        """Each stored stage's record and folder in the first shard (every shard holds the
        same stages, built alike)."""
        return self.shards[0].stored_leaves()

    def open_pipeline(self, text: str) -> Stage:
        """Another pipeline over the same stored stages: each stored stage is searched on
        every shard and merged; the other stages run once.

        Example:
            >>> handle.open_pipeline("bm25 % 100 >> dense").search("vitamin d")  # doctest: +SKIP
        """
        validate(text)
        made: dict[str, Stage] = {}

        def open_leaf(leaf: Leaf, cls: type[Stage]) -> Stage:
            if not cls.stores_index:
                key = str(leaf)
                if key not in made:  # a re-ranker's model loaded once, not once per shard
                    made[key] = cls.load(None, None, **leaf.params)  # type: ignore[attr-defined]
                return made[key]
            return sharded_stage(share_queries([shard.opener.open(leaf, cls)
                                                for shard in self.shards]))

        return WithDocuments(materialize(parse(text), open_leaf), self.live)

    def close(self, commit: bool = True) -> None:
        """Commit writes held in memory and release every shard."""
        for shard in self.shards:
            shard.live.close(commit=commit)

    def __enter__(self) -> ShardedHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def share_queries(parts: list[Stage]) -> list[Stage]:
    """``parts`` (one stored stage's copy in every shard), those that encode queries into
    token matrices (``chamfer``, ``muvera``) given one
    :class:`~cormorant.retrieval.multivector.SharedQueries`, so a search encodes its queries
    once, not once per shard. (``dense`` needs none: the router encodes its queries once.)
    A stage behind a wrapper that holds it as ``inner`` (the server's one-search-at-a-time
    lock) gets it too; a remote shard's part (Ray Serve) has no such slot and encodes its own."""
    owners = [_unwrapped(p) for p in parts]
    if len(parts) > 1 and all("shared_queries" in dir(o) for o in owners):
        shared = SharedQueries(uses=len(parts))
        for owner in owners:
            owner.shared_queries = shared  # type: ignore[attr-defined]
    return parts


def _unwrapped(stage: Any) -> Any:
    while "inner" in getattr(stage, "__dict__", {}):
        stage = stage.__dict__["inner"]
    return stage


@dataclass
class ShardedLive:
    """The writes and documents of a sharded index: each id goes to the shard that owns it.

    A write is atomic and durable per shard (each has its own write log and lock); a batch
    that spans shards is acknowledged once every shard has logged its share, and a crash in
    between leaves the shards that logged it with their share (replayed when reopened) and the
    others without: write the batch again, a put is idempotent.
    """

    shards: list[ShardClient]

    def _split(self, doc_ids: list[str]) -> list[list[str]]:
        groups: list[list[str]] = [[] for _ in self.shards]
        for doc_id in doc_ids:
            groups[shard_of(doc_id, len(self.shards))].append(doc_id)
        return groups

    @property
    def count(self) -> int:
        return sum(s.live.count for s in self.shards)

    @property
    def version(self) -> int:
        """Writes applied, over every shard (grows with each write)."""
        return sum(s.live.version for s in self.shards)

    @property
    def read_only_reason(self) -> str | None:
        return next((s.live.read_only_reason for s in self.shards
                     if s.live.read_only_reason is not None), None)

    @read_only_reason.setter
    def read_only_reason(self, reason: str | None) -> None:
        for shard in self.shards:  # a read-only mount: every shard is
            shard.live.read_only_reason = reason

    @property
    def writable(self) -> bool:
        return self.read_only_reason is None

    @property
    def owners(self) -> dict[tuple[int, int], Any]:
        """(shard, stored stage position) -> the loaded stage holding its segments."""
        return {(n, p): o for n, s in enumerate(self.shards) for p, o in s.live.owners.items()}

    def get(self, doc_id: str) -> Document | None:
        return self.shards[shard_of(doc_id, len(self.shards))].live.get(doc_id)

    def get_many(self, doc_ids: list[str]) -> dict[str, Document]:
        # Every owning shard asked at once: a search's hits' text is one round, not S.
        asked = [(s, g) for s, g in zip(self.shards, self._split(doc_ids), strict=True) if g]
        found: dict[str, Document] = {}
        for part in fan_out([lambda s=s, g=g: s.live.get_many(g) for s, g in asked]):
            found.update(part)
        return found

    def documents(self) -> Iterator[Document]:
        for shard in self.shards:
            yield from shard.live.documents()

    def add(self, documents: list[Document]) -> WriteResult:
        """Add (or replace) ``documents``, each in the shard that owns its id."""
        if self.read_only_reason is not None:
            raise ReadOnlyIndex(self.read_only_reason)
        groups: list[list[Document]] = [[] for _ in self.shards]
        for doc in documents:
            groups[shard_of(doc.doc_id, len(self.shards))].append(doc)
        changed: list[str] = []
        for shard, group in zip(self.shards, groups, strict=True):
            if group:
                changed.extend(shard.live.add(group).changed)
        return WriteResult(self.version, changed, [])

    def delete(self, doc_ids: list[str]) -> WriteResult:
        """Delete ``doc_ids`` from the shards that own them; ids held nowhere are reported."""
        if self.read_only_reason is not None:
            raise ReadOnlyIndex(self.read_only_reason)
        changed: list[str] = []
        missing: list[str] = []
        for shard, group in zip(self.shards, self._split(doc_ids), strict=True):
            if group:
                result = shard.live.delete(group)
                changed.extend(result.changed)
                missing.extend(result.not_found)
        return WriteResult(self.version, changed, missing)

    def commit(self) -> None:
        for shard in self.shards:
            shard.live.commit()

    def merge(self, retrain: bool | None = None) -> None:
        """Merge every shard, each keeping the codebooks the shards share.

        Raises:
            IndexFormatError: ``retrain``: shards that each learnt their own codebooks would
                no longer share them; build the sharded index again instead.
        """
        if retrain:
            raise IndexFormatError("the shards of a sharded index share their IVF centroids"
                                   " and PQ codebooks; retraining one shard's would break"
                                   " that: build the index again (cormorant index build"
                                   " --shards N) to learn them anew")
        for shard in self.shards:
            shard.live.merge(retrain=False)

    def close(self, commit: bool = True) -> None:
        for shard in self.shards:
            shard.live.close(commit=commit)
