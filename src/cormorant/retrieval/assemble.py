"""Pipelines from their string form: built over a corpus, saved as an index, loaded back.

An index directory holds one sub-directory per leaf stage of its pipeline, each with its own
``meta.json`` and checksums, plus the document store, so ``rrf(bm25, dense)`` is built once and
then searched (or re-composed, ``bm25 >> dense``) without touching the corpus again.

Example:
    >>> pipe = build_pipeline("rrf(bm25, dense)", dataset.corpus)  # doctest: +SKIP
    >>> save_index("rrf(bm25, dense)", dataset.corpus, "indexes/scifact")  # doctest: +SKIP
    >>> handle = open_index("indexes/scifact")  # doctest: +SKIP
    >>> handle.pipeline.search("vitamin d", k=10)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cormorant import registry
from cormorant.errors import DataError, IndexFormatError, PipelineError
from cormorant.index.docstore import FILENAME as DOCSTORE_FILE
from cormorant.index.docstore import CorpusDocuments, DocStore
from cormorant.index.format import atomic_directory, read_meta, write_meta
from cormorant.index.sharding import SHARDED_KIND
from cormorant.pipeline import Documents, Stage, WithDocuments
from cormorant.pipeline_syntax import Call, Leaf, materialize, named, parse
from cormorant.retrieval.base import Retriever, save_leaf
from cormorant.retrieval.live import LiveIndex, take_lock
from cormorant.types import Corpus

log = logging.getLogger(__name__)


def build_pipeline(text: str, corpus: Corpus, built: dict[str, Stage] | None = None,
                   documents: Documents | None = None) -> Stage:
    """Parse ``text`` and build every named stage over ``corpus``; the pipeline reads document
    text from ``documents``, by default the corpus (written to a temporary store on first use).

    ``built`` memoises stages by their string form, so evaluating ``dense`` and
    ``rrf(bm25, dense)`` over one corpus builds ``dense`` once; pass one ``documents`` with it
    so the corpus is stored once too.
    """
    spec = parse(text)
    validate(text)
    require_documents(corpus)
    memo = {} if built is None else built

    def make(leaf: Leaf, cls: type[Stage]) -> Stage:
        key = str(leaf)
        if key not in memo:
            log.info("building %s over %s", leaf, corpus.name)
            memo[key] = cls.build(corpus, **leaf.params)  # type: ignore[attr-defined]
        return memo[key]

    return WithDocuments(materialize(spec, make), documents or CorpusDocuments(corpus))


def require_documents(corpus: Corpus) -> None:
    """Refuse an empty corpus: an index of nothing scores every query 0 and hides the mistake.

    Raises:
        DataError: the corpus holds no documents.
    """
    stream = iter(corpus)
    try:
        if next(stream, None) is None:
            raise DataError(f"the corpus {corpus.name!r} holds no documents")
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # a generator over an open file: release it now


def validate(text: str) -> None:
    """Check a pipeline's syntax, stage names and parameters without building anything.

    Raises:
        PipelineError: naming the stage and the parameter at fault.
    """
    from cormorant.pipeline import Composite

    for node in named(parse(text)):
        cls = registry.stage_class(node.name)
        takes_stages = isinstance(node, Call)
        if issubclass(cls, Composite) != takes_stages:
            usage = cls.usage if issubclass(cls, Composite) else f"{node.name}(key=value)"
            raise PipelineError(f"{node.name} is written {usage}")
        cls.declared(node.params)


def identity(text: str) -> list[dict[str, Any]]:
    """What determines each named stage's results (for cache keys): its name, every setting
    (defaults filled in, so ``bm25`` and ``bm25(k1=0.9)`` agree), and e.g. the fingerprint of
    the model a dense stage uses."""
    found = []
    for node in named(parse(text)):
        cls = registry.stage_class(node.name)
        found.append({"name": node.name, **cls.identity(cls.declared(node.params))})
    return found


def save_index(text: str, corpus: Corpus, out: str | Path, overwrite: bool = False) -> Path:
    """Build ``text`` over ``corpus`` and write it as an index directory, atomically."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise IndexFormatError(f"{out} already exists (use --overwrite to replace it)")
    pipeline = build_pipeline(text, corpus)
    # The index being replaced may be served or written to: its writer must stop first.
    lock = take_lock(out) if out.is_dir() and (out / "meta.json").is_file() else None
    try:
        _write_index(pipeline, corpus, out, overwrite)
    finally:
        if lock is not None:
            os.close(lock)
    return out


def _write_index(pipeline: Stage, corpus: Corpus, out: Path, overwrite: bool) -> None:
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_index_files(tmp, str(pipeline), pipeline.leaves(), corpus)


def write_index_files(directory: Path, text: str, leaves: list[Stage], corpus: Corpus,
                      extra: dict[str, Any] | None = None) -> int:
    """Write an index of pipeline ``text`` into the empty ``directory``: the documents of
    ``corpus``, each built stage of ``leaves`` (in pipeline order) and ``meta.json`` (with
    ``extra`` recorded, kept by merges); returns how many documents it holds. Not atomic by
    itself: ``directory`` is a temporary one."""
    count = DocStore.create(directory / DOCSTORE_FILE, corpus)
    records = []
    for position, leaf in enumerate(leaves):
        assert isinstance(leaf, Retriever)
        records.append(save_leaf(directory / f"{position}-{leaf.name}", leaf))
    write_meta(directory, {"kind": "pipeline", "pipeline": text, "count": count,
                           "corpus": corpus.name, "leaves": records, **(extra or {})})
    return count


@dataclass
class IndexHandle:
    """An opened index: its pipeline (bound to the index's documents, writes included), its
    documents and writes (:class:`~cormorant.retrieval.live.LiveIndex`) and metadata."""

    path: Path
    pipeline: Stage
    docs: DocStore
    meta: dict[str, Any]
    live: LiveIndex
    opener: _LeafOpener

    def __repr__(self) -> str:
        return (f"IndexHandle({str(self.path)!r}, {str(self.pipeline)!r},"
                f" {self.live.count:,} documents of {self.meta.get('corpus')!r})")

    def stored_leaves(self) -> list[tuple[dict[str, Any], Path]]:
        """Each stored stage's record in ``meta.json`` and its folder."""
        return [(record, self.path / record["dir"]) for record in self.meta["leaves"]]

    def open_pipeline(self, text: str) -> Stage:
        """Another pipeline over the same stored stages (sharing their models and writes).

        Example:
            >>> handle.open_pipeline("bm25 % 100 >> dense").search("vitamin d")  # doctest: +SKIP
        """
        validate(text)
        return WithDocuments(materialize(parse(text), self.opener.open), self.live)

    def close(self) -> None:
        """Commit writes held in memory and release the index (and its lock, if writing)."""
        self.live.close()

    def __enter__(self) -> IndexHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


LeafHook = Callable[[int, Retriever], Stage]
"""Given a stored leaf's position in ``meta.json`` and the loaded retriever, the stage to use."""


def open_index(path: str | Path, pipeline: str | None = None, verify: bool = True,
               wrap: LeafHook | None = None, write: bool = False) -> IndexHandle:
    """Open an index directory, optionally re-composing its stages with another pipeline string.

    ``pipeline`` may re-arrange the stored stages, add stages that hold no index (``rerank``,
    query rewriters) or set query-time options (``bm25.lucene(rm3=true)``); a stage the index
    does not hold, or one whose settings would need a rebuild (another encoder), is an error.
    Searches see every write made so far, committed or still in the write log.

    ``write`` takes the index's write lock and loads every stored stage, so that
    ``handle.live.add(...)``, ``delete``, ``commit`` and ``merge`` reach all of them; close the
    handle (or use ``with``) to commit and release it. ``wrap`` replaces each loaded leaf as
    searches see it (the service serialises stages that are not thread-safe).

    Example:
        >>> with open_index("indexes/scifact", write=True) as handle:  # doctest: +SKIP
        ...     handle.live.add([Document("new-1", "Cormorants dive for fish.")])
        ...     handle.pipeline.search("diving birds", k=3)

    Raises:
        IndexFormatError: not an index, or damaged. IndexLocked: ``write`` and another
        process writes to it.
    """
    path = Path(path)
    meta = read_meta(path, verify=verify)
    if meta.get("kind") == SHARDED_KIND:
        from cormorant.retrieval.shard_index import open_sharded

        return open_sharded(path, meta, pipeline, verify, wrap, write)  # type: ignore[return-value]
    if meta.get("kind") != "pipeline":
        raise IndexFormatError(f"{path} is a {meta.get('kind')} index part, not a whole index;"
                               f" open its parent directory")
    check_index_meta(path, meta)
    text = pipeline or meta["pipeline"]
    spec = parse(text)
    validate(text)
    docs = DocStore(path / DOCSTORE_FILE)
    opener = _LeafOpener(path, meta["leaves"], verify, wrap)
    stage = materialize(spec, opener.open)
    if write:
        opener.load_all()
    live = LiveIndex(path, meta, docs, opener.owners, write)
    try:
        live.open(verify)
    except BaseException:
        live.close()
        raise
    return IndexHandle(path, WithDocuments(stage, live), docs, meta, live, opener)


_LEAF_FIELDS = {"name": str, "kind": str, "dir": str, "params": dict}


def check_index_meta(path: Path, meta: dict[str, Any]) -> None:
    """Check the shape of a whole index's ``meta.json``: a hand edit can keep it valid JSON
    (and the checksums cover the other files, not it), so each field is checked by type.

    Raises:
        IndexFormatError: naming the field that is missing or of the wrong type.
    """
    where = path / "meta.json"
    if not isinstance(meta.get("pipeline"), str):
        raise IndexFormatError(f"{where}: 'pipeline' must be a pipeline string")
    count = meta.get("count", 0)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise IndexFormatError(f"{where}: 'count' must be a whole number")
    leaves = meta.get("leaves")
    if not isinstance(leaves, list) or not all(isinstance(r, dict) for r in leaves):
        raise IndexFormatError(f"{where}: 'leaves' must be a list of stage records")
    for position, record in enumerate(leaves):
        for key, kind in _LEAF_FIELDS.items():
            if key != "params" and not isinstance(record.get(key), kind):
                raise IndexFormatError(f"{where}: leaves[{position}].{key} must be a"
                                       f" {kind.__name__}")
        folder = record["dir"]
        if folder in ("", ".", "..") or "/" in folder or "\\" in folder \
                or not (path / folder).is_dir():
            raise IndexFormatError(f"{where}: leaves[{position}].dir {folder[:80]!r} is not a"
                                   " folder of this index")


class _LeafOpener:
    """Opens each named stage of a pipeline from an index directory's stored leaves. The first
    copy loaded of a stored leaf owns its segments; later copies (other query-time settings)
    share them."""

    def __init__(self, path: Path, stored: list[dict[str, Any]], verify: bool,
                 wrap: LeafHook | None) -> None:
        self.path, self.stored, self.verify, self.wrap = path, stored, verify, wrap
        self.loaded: dict[tuple[int, str], Stage] = {}
        self.owners: dict[int, Retriever] = {}
        self.used: set[int] = set()

    def open(self, leaf: Leaf, cls: type[Stage]) -> Stage:
        if not cls.stores_index:  # made from its parameters alone
            key = (-1, str(leaf))
            if key not in self.loaded:
                self.loaded[key] = cls.load(None, None, **leaf.params)  # type: ignore[attr-defined]
            return self.loaded[key]
        assert issubclass(cls, Retriever)
        index = self.choose(cls, leaf.params)
        return self._stage(index, cls, leaf.params)

    def _stage(self, index: int, cls: type[Retriever], params: dict[str, Any]) -> Stage:
        key = (index, json.dumps(params, sort_keys=True, default=str))
        if key in self.loaded:
            return self.loaded[key]
        sub = self.path / self.stored[index]["dir"]
        retriever = _load_leaf(cls, sub, read_meta(sub, verify=self.verify), params)
        if index in self.owners:
            retriever.share(self.owners[index])
        else:
            self.owners[index] = retriever
        stage: Stage = retriever if self.wrap is None else self.wrap(index, retriever)
        self.loaded[key] = stage
        return stage

    def load_all(self) -> None:
        """Load every stored leaf not loaded yet (a writer must reach all of them)."""
        for index, record in enumerate(self.stored):
            if index not in self.owners:
                cls = registry.stage_class(record["name"])
                assert issubclass(cls, Retriever)
                self._stage(index, cls, {})

    def choose(self, cls: type[Retriever], params: dict[str, Any]) -> int:
        """The stored leaf ``cls`` reads: one built with the build-time ``params`` asked for if
        there is one (``dense`` and ``dense(index=hnsw)`` in one index), and among those one
        not used yet (a stored stage may serve twice: ``bm25 >> bm25(depth=10)``)."""
        fits = [i for i, rec in enumerate(self.stored) if rec["kind"] == cls.reads()]
        fits = [i for i in fits if cls.PARAMS.fits(self.stored[i].get("params") or {}, params)
                ] or fits
        choices = [i for i in fits if i not in self.used] or fits
        if not choices:
            have = ", ".join(rec["name"] for rec in self.stored)
            raise PipelineError(f"index {self.path} holds {have}; it has no {cls.reads()} stage"
                                f" (build one with: cormorant index build --pipeline ...)")
        self.used.add(choices[0])
        return choices[0]


def check_index_fits(handle: IndexHandle, corpus_name: str, judged: set[str]) -> None:
    """Refuse to score an index against a dataset it was not built from: one whose recorded
    corpus has another name, or that lacks documents the dataset judges. Either way every
    measure would read 0 (or near it) with nothing to say why.

    Raises:
        IndexFormatError: naming the corpus recorded and the judged documents missing, and
            how to go on anyway.
    """
    recorded = handle.meta.get("corpus")
    override = " (--allow-mismatch scores it anyway)"
    if recorded and recorded != corpus_name:
        raise IndexFormatError(f"{handle.path} was built from corpus {recorded!r}, not"
                               f" {corpus_name!r}{override}")
    ids = sorted(judged)
    missing = len(ids) - len(handle.live.get_many(ids)) if ids else 0
    # A few missing documents happen with the right index (some collections judge documents
    # their corpus lacks: `cormorant data info` reports them); most missing means another one.
    if missing * 2 > len(ids):
        raise IndexFormatError(f"{handle.path} lacks {missing:,} of the {len(ids):,} documents"
                               f" judged in {corpus_name}: is it an index of another"
                               f" collection?{override}")
    if missing:
        log.warning("%s lacks %s of the %s documents judged in %s", handle.path,
                    f"{missing:,}", f"{len(ids):,}", corpus_name)
def _load_leaf(cls: type[Retriever], sub: Path, meta: dict[str, Any],
               params: dict[str, Any]) -> Stage:
    """Load one stored stage; a leaf ``meta.json`` that lost a key or holds a wrong type
    (hand-edited: no checksum covers it) is an IndexFormatError naming it."""
    try:
        return cls.load(sub, meta, **params)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise IndexFormatError(f"{sub / 'meta.json'} does not hold what a {cls.name} stage"
                               f" stores ({type(exc).__name__}: {str(exc)[:80]}); rebuild the"
                               " index") from None
