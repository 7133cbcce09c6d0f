"""BM25 in process with bm25s: the embedded default, no Java needed.

Defaults follow Pyserini's BEIR regressions (Lucene's BM25 variant, k1=0.9, b=0.4, title and
text as one field), with English stop words and the Snowball English stemmer.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cormorant.errors import IndexFormatError, PipelineError
from cormorant.params import BUILD, Param, Params
from cormorant.retrieval.base import Retriever
from cormorant.types import Corpus, Queries, Run, top_rows

log = logging.getLogger(__name__)


def import_bm25s() -> Any:
    """bm25s, imported without JAX unless the process already uses JAX.

    bm25s runs a JAX top-k at import when JAX is installed. On a GPU machine that starts JAX's
    GPU backend, which takes 75% of the GPU's memory at once: torch in the same process (an
    encoder, a training run mining BM25 negatives) then fails with "CUDA out of memory", and
    other processes' JAX fails to start (seen on an H200 with JAX in the image). Without JAX,
    bm25s selects the top k with numpy, which is how every number in docs/ was measured.
    """
    if "bm25s" not in sys.modules and "jax" not in sys.modules:
        with _modules_hidden("jax"):
            import bm25s
    else:
        import bm25s

    # bm25s sets its logger to DEBUG on import and logs every index build; keep logs readable.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


@contextmanager
def _modules_hidden(name: str) -> Iterator[None]:
    """``import name`` (and its submodules) raises ImportError inside the block."""
    sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not found"
    try:
        yield
    finally:
        del sys.modules[name]


IDS_FILE = "doc_ids.json"


def _stemmer(language: str) -> Any:
    import Stemmer

    try:
        return Stemmer.Stemmer(language)
    except KeyError:
        raise PipelineError(f"bm25: no stemmer for {language!r};"
                            f" known: {', '.join(Stemmer.algorithms())}") from None


def make_tokenizer(stemmer: str | None, stopwords: str | None) -> Any:
    import_bm25s()
    import bm25s.tokenization

    stem = _stemmer(stemmer) if stemmer else None
    return bm25s.tokenization.Tokenizer(stemmer=stem, stopwords=stopwords or [])


class BM25Retriever(Retriever):
    """BM25 in process with bm25s (``bm25``): Lucene's BM25 variant, Snowball stemming, English
    stop words, Pyserini's BEIR settings.

    Example:
        >>> from cormorant.types import Corpus, Document
        >>> corpus = Corpus.from_documents([Document("a", "cats purr"), Document("b", "dogs bark")])
        >>> bm25 = BM25Retriever.build(corpus)
        >>> list(bm25.search("barking dogs", k=1)["0"])
        ['b']
    """

    name: ClassVar[str] = "bm25"
    PARAMS: ClassVar[Params] = Retriever.PARAMS + Params(
        Param("k1", float, 0.9, "term-frequency saturation (Pyserini's BEIR setting)",
              when=BUILD, low=0),
        Param("b", float, 0.4, "document-length normalisation", when=BUILD, low=0, high=1),
        Param("method", str, "lucene", "BM25 variant (bm25s)", when=BUILD,
              choices=("lucene", "robertson", "atire", "bm25l", "bm25+")),
        Param("stemmer", str, "english", "Snowball stemmer language; none for no stemming",
              when=BUILD, nullable=True),
        Param("stopwords", str, "en", "stop-word list (bm25s); none to keep every word",
              when=BUILD, nullable=True),
    )

    def __init__(self, model: Any, doc_ids: list[str], settings: dict[str, Any]) -> None:
        super().__init__(settings)
        self._model, self.doc_ids = model, doc_ids
        stem = settings["stemmer"]
        self._stemmer = _stemmer(stem) if stem else None

    @classmethod
    def create(cls, corpus: Corpus, settings: dict[str, Any]) -> BM25Retriever:
        tokenizer = analyzer(settings)
        doc_ids: list[str] = []

        def contents() -> Iterator[str]:
            for doc in corpus:
                doc_ids.append(doc.doc_id)
                yield doc.contents

        # Token ids, not texts, are held in memory: the corpus itself streams.
        token_ids = list(tokenizer.streaming_tokenize(contents()))
        model = index_tokens(tokenizer, token_ids, settings, show_progress=len(doc_ids) > 50_000)
        return cls(model, doc_ids, settings)

    def _query_tokens(self, texts: list[str]) -> list[list[str]]:
        """Each query's terms that occur in the corpus, analysed the way documents were."""
        bm25s = import_bm25s()

        tokens = bm25s.tokenize(texts, stopwords=self.settings["stopwords"] or [],
                                stemmer=self._stemmer, return_ids=False, show_progress=False)
        known = self._model.vocab_dict
        return [[t for t in query if t in known] for query in tokens]

    def retrieve(self, queries: Queries, k: int) -> Run:
        qids = list(queries)
        tokens = self._query_tokens([queries[q] for q in qids])
        run = Run()
        k = min(k, len(self.doc_ids))
        for qid, query_tokens in zip(qids, tokens, strict=True):
            if not query_tokens:
                run[qid] = {}  # no query term occurs in the corpus: nothing matches
                continue
            scores = self._model.get_scores(query_tokens)
            top = _top_positive(scores, k, self.doc_ids)
            run[qid] = {self.doc_ids[i]: float(scores[i]) for i in top}
        return run

    def rescore(self, queries: Queries, candidates: Run) -> Run:
        position = {d: i for i, d in enumerate(self.doc_ids)}
        run = Run()
        for qid, text in queries.items():
            docs = [d for d in candidates.get(qid, {}) if d in position]
            tokens = self._query_tokens([text])[0]
            scores = self._model.get_scores(tokens) if tokens else np.zeros(len(self.doc_ids))
            run[qid] = {d: float(scores[position[d]]) for d in docs}
        return run

    def save(self, directory: Path) -> dict[str, Any]:
        self._model.save(str(directory), show_progress=False)
        (directory / IDS_FILE).write_text(json.dumps(self.doc_ids))
        return {"count": len(self.doc_ids), "settings": self.analysis()}

    def analysis(self) -> dict[str, Any]:
        """The build-time settings: what a tokenizer and a fresh index over more documents
        need to score the way this one does."""
        return {name: self.settings[name] for name in ("k1", "b", "method", "stemmer", "stopwords")}

    @classmethod
    def open(cls, directory: Path, meta: dict[str, Any], settings: dict[str, Any]) -> BM25Retriever:
        bm25s = import_bm25s()
        try:
            model = bm25s.BM25.load(str(directory), show_progress=False, verbosity=0)
            doc_ids = json.loads((directory / IDS_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{directory}: cannot read the BM25 index ({exc})") from None
        return cls(model, doc_ids, settings)

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], **params: Any) -> BM25Retriever:
        # Indexes written before the settings were declared keep them under "settings".
        if "settings" in meta:
            meta = {**meta, "params": {**meta["settings"], **meta.get("params", {})}}
        return super().load(directory, meta, **params)  # type: ignore[return-value]


def analyzer(settings: dict[str, Any]) -> Any:
    """The bm25s tokenizer for ``settings`` (stemmer, stop words), as documents were analysed."""
    return make_tokenizer(settings["stemmer"], settings["stopwords"])


def index_tokens(tokenizer: Any, token_ids: list[list[int]], settings: dict[str, Any],
                 show_progress: bool = False) -> Any:
    """A bm25s model over documents given as ``tokenizer``'s token ids."""
    bm25s = import_bm25s()
    model = bm25s.BM25(k1=settings["k1"], b=settings["b"], method=settings["method"])
    model.index(tokenizer.to_tokenized_tuple(token_ids), show_progress=show_progress)
    return model


def _top_positive(scores: np.ndarray, k: int, doc_ids: list[str]) -> np.ndarray:
    """Indices of the ``k`` highest scores that are above zero, best first; ties at the cut
    as trec_eval orders them (:func:`cormorant.types.top_rows`)."""
    top = top_rows(scores, k, doc_ids)
    return top[scores[top] > 0]
