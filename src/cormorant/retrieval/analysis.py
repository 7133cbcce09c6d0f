"""Text analysis for the in-process ``bm25``: the one place where text becomes terms, used
alike when documents are indexed and when queries are searched.

``language=en`` is bm25s's tokenizer (lower case, words of two or more letters or digits,
English stop words, a Snowball stemmer), as ``bm25`` has always analysed text.

``language=zh`` splits each text into runs of CJK characters and the rest. The rest is
analysed exactly as English is (so Latin words, numbers and codes inside Chinese text match as
they would in English text); each CJK run becomes terms by its ``segmenter``:

- ``bigram`` (the default): overlapping pairs of characters, a lone character as itself, as
  Lucene's ``CJKAnalyzer`` (Anserini's ``-language zh``) does, so ``bm25`` and ``bm25.lucene``
  index Chinese the same way. It needs no dictionary: names and terms no dictionary knows still
  match by their character pairs.
- ``jieba``: words from jieba's dictionary and HMM (rjieba, the Rust port; extra ``[zh]``).
  Fewer, longer terms: a smaller index, but a word cut differently in a query and a passage
  does not match at all.

Text is NFKC-normalised first for ``zh`` (full-width Latin letters and digits, common in
Chinese text, become ASCII), as Lucene's ``CJKWidthFilter`` does.

Example:
    >>> Analyzer("zh", stemmer=None, stopwords=None)(["杜仲泡水 BM25"])
    [['bm25', '杜仲', '仲泡', '泡水']]
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cormorant.errors import MissingExtraError, PipelineError

LANGUAGES = ("en", "zh")
SEGMENTERS = ("bigram", "jieba")

# Han (with extension A and compatibility ideographs), kana and Hangul, the scripts Lucene's
# CJKBigramFilter pairs by default; extension B and beyond are outside the BMP.
_CJK = ("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
        "\U00020000-\U0002fa1f]")
_CJK_RUN = re.compile(f"{_CJK}+")
_PAIR = re.compile(f"(?=({_CJK}{_CJK}))")  # a look-ahead, so the pairs overlap
_LONE = re.compile(f"(?<!{_CJK}){_CJK}(?!{_CJK})")


def import_bm25s() -> Any:
    """bm25s, imported without JAX unless the process already uses JAX.

    bm25s runs a JAX top-k at import when JAX is installed. On a GPU machine that starts JAX's
    GPU backend, which takes 75% of the GPU's memory at once: torch in the same process (an
    encoder, a training run mining BM25 negatives) then fails with "CUDA out of memory", and
    other processes' JAX fails to start (seen on an H200 with JAX in the image). Without JAX,
    bm25s selects the top k with numpy, which is how every number in docs/ was measured.
    """
    if _BM25S:
        return _BM25S[0]
    # One thread imports; the others wait. A module is in sys.modules from the start of its
    # import, so a second thread that took it from there got it half made ("partially
    # initialized module 'bm25s' has no attribute 'tokenize'": concurrent first searches of a
    # sharded bm25 index in the service).
    with _BM25S_IMPORT:
        if not _BM25S:
            if "jax" not in sys.modules:
                with _modules_hidden("jax"):
                    import bm25s
            else:
                import bm25s
            # bm25s sets its logger to DEBUG on import and logs every index build; keep logs
            # readable. Once: setLevel clears every logger's cache, a quarter of a ms per call.
            logging.getLogger("bm25s").setLevel(logging.WARNING)
            _BM25S.append(bm25s)
    return _BM25S[0]


_BM25S: list[Any] = []  # bm25s once fully imported
_BM25S_IMPORT = threading.Lock()


@contextmanager
def _modules_hidden(name: str) -> Iterator[None]:
    """``import name`` (and its submodules) raises ImportError inside the block."""
    sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not found"
    try:
        yield
    finally:
        del sys.modules[name]


def _stemmer(language: str) -> Any:
    import Stemmer

    try:
        return Stemmer.Stemmer(language)
    except KeyError:
        raise PipelineError(f"bm25: no stemmer for {language!r};"
                            f" known: {', '.join(Stemmer.algorithms())}") from None


def cjk_bigrams(text: str) -> list[str]:
    """The CJK terms of ``text`` as Lucene's CJKBigramFilter makes them: each run's overlapping
    character pairs, and a lone character (a run of one) as itself. Two regular expressions
    over the whole text, so no Python loop runs per character or per run.

    Example:
        >>> cjk_bigrams("中华人民, 国")
        ['中华', '华人', '人民', '国']
    """
    return _PAIR.findall(text) + _LONE.findall(text)


def _jieba_terms(cut: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
    """The CJK terms of a text as jieba's words: each CJK run cut on its own."""

    def terms(text: str) -> list[str]:
        return [word for run in _CJK_RUN.findall(text) for word in cut(run)]

    return terms


def _jieba() -> Any:
    try:
        import rjieba
    except ModuleNotFoundError as exc:
        raise MissingExtraError("bm25(language=zh, segmenter=jieba)", "zh", exc) from exc
    return rjieba


class Analyzer:
    """Turns texts into terms for one language (see the module docstring).

    Args:
        language: ``en`` or ``zh``.
        stemmer: Snowball stemmer language for the non-CJK words, or None.
        stopwords: bm25s stop-word list for the non-CJK words (``en``), or None.
        segmenter: how CJK runs become terms with ``language=zh``: ``bigram`` or ``jieba``.

    Example:
        >>> Analyzer("en", "english", "en")(["Barking dogs"])
        [['bark', 'dog']]
    """

    def __init__(self, language: str, stemmer: str | None, stopwords: str | None,
                 segmenter: str = "bigram") -> None:
        if language not in LANGUAGES:
            raise PipelineError(f"bm25: language must be one of {', '.join(LANGUAGES)},"
                                f" got {language!r}")
        if segmenter not in SEGMENTERS:
            raise PipelineError(f"bm25: segmenter must be one of {', '.join(SEGMENTERS)},"
                                f" got {segmenter!r}")
        self.language, self.segmenter = language, segmenter
        self._stemmer = _stemmer(stemmer) if stemmer else None
        self._stopwords = stopwords or []
        self._cjk_terms: Callable[[str], list[str]] | None = None  # en: no CJK step
        if language == "zh":
            self._cjk_terms = cjk_bigrams if segmenter == "bigram" else _jieba_terms(_jieba().cut)
        # PyStemmer's stemmers are not thread-safe, and the service searches from threads.
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> list[list[str]]:
        """Each text's terms."""
        cjk_terms = self._cjk_terms
        if cjk_terms is None:
            return self._words(texts)
        texts = [unicodedata.normalize("NFKC", t) for t in texts]
        # The non-CJK rest goes through the English path in one call; term order does not
        # matter to BM25, so each text's CJK terms simply follow its other words.
        words = self._words([_CJK_RUN.sub(" ", t) for t in texts])
        return [w + cjk_terms(t) for w, t in zip(words, texts, strict=True)]

    def _words(self, texts: list[str]) -> list[list[str]]:
        bm25s = import_bm25s()
        with self._lock:
            return bm25s.tokenize(texts, stopwords=self._stopwords, stemmer=self._stemmer,
                                  return_ids=False, show_progress=False)
