"""``seal``: generative retrieval with corpus n-grams as document identifiers (Bevilacqua et
al., 2022), as a pipeline stage: ``seal``, ``seal(model=DIR)``, ``rrf(dense, seal)``.

Per query: constrained beam search writes corpus n-grams; the query's own word 1-3-grams are
added; each is re-scored by teacher forcing and weighted against its corpus frequency; single
tokens get weights from the first decoding step; documents are ranked by the intersective sum
of the n-grams they hold (see :mod:`cormorant.retrieval.seal.scoring`).

The index is the suffix array of the corpus in the generator's tokens. It depends on the
tokenizer only, so an index built with the base model serves a fine-tuned one
(``seal(model=TRAINED)``) as long as the tokenizer is the same; that is checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cormorant.errors import IndexFormatError, PipelineError
from cormorant.params import BUILD, Param, Params
from cormorant.retrieval.base import Retriever
from cormorant.retrieval.seal.constrained import (
    TITLE_LENGTH,
    DecodeSettings,
    Ngram,
    decode,
    decode_titles,
)
from cormorant.retrieval.seal.generator import Generator, resolve_generator
from cormorant.retrieval.seal.scoring import (
    ScoringSettings,
    corpus_log_prob,
    ngram_weight,
    score_documents,
)
from cormorant.retrieval.seal.sharded import SHARD_TOKENS, ShardedIndex
from cormorant.types import Corpus, Queries, Run

log = logging.getLogger(__name__)
IDS_FILE = "doc_ids.json"
UNIGRAMS = 5000  # first-step tokens kept as unigram keys (the paper's top 5000)
class SealRetriever(Retriever):
    """Generative retrieval (SEAL, ``seal``): constrained beam search writes corpus n-grams,
    kept real by a suffix array of the corpus; documents are scored by the n-grams they hold.
    Needs the ``[seal]`` extra; train a generator with ``cormorant train --kind seal``; see
    docs/seal.md.

    Example:
        >>> seal = SealRetriever.build(corpus, model="/models/tiny-llama")  # doctest: +SKIP
        >>> seal.search("vitamin d and depression", k=10)  # doctest: +SKIP
    """

    name: ClassVar[str] = "seal"
    read_only_reason: ClassVar[str] = ("its suffix array is built over the whole corpus at"
                                       " once and cannot take writes; build the index again")
    PARAMS: ClassVar[Params] = Retriever.PARAMS + Params(
        Param("model", str, None, "generator: a local Hugging Face causal or seq2seq folder"
              " (default SmolLM2-135M); any with the index's tokenizer", nullable=True),
        Param("beams", int, 15, "beams of constrained decoding", low=1),
        Param("max_length", int, 10, "longest generated n-gram, in tokens", low=1),
        Param("alpha", float, 2.0, "n-gram weight exponent", positive=True),
        Param("beta", float, 0.8, "weight of n-grams absent from the query", low=0, high=1),
        Param("smoothing", float, 5.0, "corpus-frequency smoothing", positive=True),
        Param("unigrams", int, UNIGRAMS, "first-step tokens kept as unigram keys", low=0),
        Param("query_ngrams", bool, True, "also score n-grams copied from the query"),
        Param("titles", bool, False, "decode title keys as well as body n-grams"),
        Param("shard_tokens", int, SHARD_TOKENS, "tokens per suffix-array shard (memory of a"
              " build: about 9 bytes a token)", when=BUILD, low=1),
    )

    def __init__(self, generator: Generator, index: ShardedIndex, doc_ids: list[str],
                 settings: dict[str, Any], model_path: str | None = None) -> None:
        super().__init__(settings)
        self.generator, self.index, self.doc_ids = generator, index, doc_ids
        self.model_path = model_path
        self.decode = DecodeSettings(beams=settings["beams"], max_length=settings["max_length"],
                                     returned=settings["beams"])
        self.scoring = ScoringSettings(smoothing=settings["smoothing"], alpha=settings["alpha"],
                                       beta=settings["beta"])
        self.unigrams = settings["unigrams"]
        self.query_ngrams = settings["query_ngrams"]
        self.titles = settings["titles"]
        self.title_decode = DecodeSettings(beams=self.decode.beams, max_length=TITLE_LENGTH,
                                           returned=self.decode.beams)

    # ---------------------------------------------------------------------- index life
    @classmethod
    def create(cls, corpus: Corpus, settings: dict[str, Any]) -> SealRetriever:
        """Tokenize the corpus with the generator's tokenizer and suffix-sort it, in shards of
        at most ``shard_tokens`` tokens (the memory a build needs: about 9 bytes a token of
        one shard; see :mod:`cormorant.retrieval.seal.sharded`)."""
        from tqdm import tqdm

        path = resolve_generator(settings["model"])
        generator = Generator.load(path)
        doc_ids: list[str] = []

        def documents() -> Any:
            for doc in tqdm(corpus, desc="seal: tokenizing", unit="doc", total=len(corpus),
                            disable=len(corpus) < 1000):
                doc_ids.append(doc.doc_id)
                yield generator.tokenize(generator.document_text(doc.title, doc.text))

        index = ShardedIndex.build(documents(), generator.vocab_size, settings["shard_tokens"])
        return cls(generator, index, doc_ids, settings, path)

    def save(self, directory: Path) -> dict[str, Any]:
        meta = self.index.save(directory)
        (directory / IDS_FILE).write_text(json.dumps(self.doc_ids))
        return {"count": len(self.doc_ids), "suffix_array": meta,
                "tokenizer": tokenizer_fingerprint(self.generator.tokenizer),
                "generator": self.model_path}

    @classmethod
    def open(cls, directory: Path, meta: dict[str, Any], settings: dict[str, Any]) -> SealRetriever:
        path = resolve_generator(settings["model"])
        generator = Generator.load(path)
        if tokenizer_fingerprint(generator.tokenizer) != meta["tokenizer"]:
            raise PipelineError(f"index {directory.parent} was built with the tokenizer of"
                                f" {meta.get('generator')!r}; generator {path!r} tokenizes"
                                " differently (rebuild the index with that model)")
        index = ShardedIndex.load(directory, meta["suffix_array"])
        try:
            doc_ids = json.loads((directory / IDS_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{directory}: cannot read document ids ({exc})") from None
        return cls(generator, index, doc_ids, settings, path)

    @classmethod
    def identity(cls, settings: dict[str, Any]) -> dict[str, Any]:
        from cormorant.retrieval.encoders import model_fingerprint

        return {**settings, "fingerprint": model_fingerprint(resolve_generator(settings["model"]))}

    # ------------------------------------------------------------------------- search
    def retrieve(self, queries: Queries, k: int) -> Run:
        from tqdm import tqdm

        run = Run()
        for qid in tqdm(list(queries), desc="seal: decoding", unit="query",
                        disable=len(queries) < 20):
            scores = self.score_query(queries[qid])
            top = sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:k]
            run[qid] = {self.doc_ids[row]: float(score) for row, score in top}
        return run

    def rescore(self, queries: Queries, candidates: Run) -> Run:
        position = {d: i for i, d in enumerate(self.doc_ids)}
        run = Run()
        for qid, text in queries.items():
            scores = self.score_query(text)
            run[qid] = {d: scores.get(position[d], 0.0) for d in candidates.get(qid, {})
                        if d in position}
        return run

    def score_query(self, query: str) -> dict[int, float]:
        """Document rows with their SEAL scores for one query."""
        decoded = decode(self.generator, self.index, query, self.decode)
        s = dict(decoded.log_probs)
        if self.titles:
            for key, value in self.title_keys(query).items():
                s.setdefault(key, value)
        if self.query_ngrams:
            extra = [n for n in query_word_ngrams(self.generator, query)
                     if n not in s and self.index.count(n) > 0]
            s.update(self.generator.prefix_log_probs(query, extra))
        if not s:
            return {}
        ngrams = sorted(s)
        counts = np.array([self.index.count(n) for n in ngrams])
        total = self.index.total_tokens
        weights = ngram_weight(np.array([s[n] for n in ngrams]),
                               corpus_log_prob(counts, total, self.scoring.smoothing))
        generated = {n[0] for n in decoded.log_probs if len(n) == 1}
        unigrams = self.unigram_weights(decoded.first, generated)
        return score_documents(self.index, ngrams, weights.tolist(), unigrams, self.scoring)

    def keys(self, query: str) -> list[Ngram]:
        """The n-grams a query is matched by: decoded ones plus the query's own word n-grams."""
        found = set(decode(self.generator, self.index, query, self.decode).log_probs)
        if self.titles:
            found |= set(self.title_keys(query))
        if self.query_ngrams:
            found |= {n for n in query_word_ngrams(self.generator, query)
                      if self.index.count(n) > 0}
        return sorted(found)

    def title_keys(self, query: str) -> dict[Ngram, float]:
        """Whole titles the generator writes for ``query`` (title mode), with log P(n | q).

        A title key is scored as any n-gram (its corpus count, the weight formula, α) and
        matches where the document holds it: at its start, `` title @@``.
        """
        return decode_titles(self.generator, self.index, query, self.title_decode)

    def unigram_weights(self, log_probs: np.ndarray | None, generated: set[int]) -> dict[int, float]:
        """Top first-step tokens weighted like n-grams (no α); generated unigrams get 0."""
        if self.unigrams <= 0 or log_probs is None:
            return {}
        present = self.index.next_token_array(())
        present = present[present < log_probs.shape[0]]
        top = present[np.argsort(-log_probs[present], kind="stable")[:self.unigrams]]
        counts = self.index.token_counts()[top]
        weights = ngram_weight(log_probs[top], corpus_log_prob(counts, self.index.total_tokens,
                                                               self.scoring.smoothing))
        return {int(t): float(w) for t, w in zip(top, weights, strict=True)
                if w > 0 and int(t) not in generated}


def query_word_ngrams(generator: Generator, query: str, longest: int = 3) -> list[Ngram]:
    """Token ids of the query's word 1-3-grams, each with its words' first letters as written,
    lower-cased and capitalised (the corpus may hold any of them)."""
    words = [w for w in (re.sub(r"^\W+|\W+$", "", w) for w in query.split()) if w]
    found: set[Ngram] = set()
    for size in range(1, longest + 1):
        for start in range(len(words) - size + 1):
            phrase = words[start:start + size]
            for variant in (phrase, [w[0].lower() + w[1:] for w in phrase],
                            [w[0].upper() + w[1:] for w in phrase]):
                ids = tuple(generator.tokenize(" " + " ".join(variant)))
                if ids:
                    found.add(ids)
    return sorted(found)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of the tokenizer's vocabulary: equal vocabularies index a corpus identically."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return hashlib.sha256(vocab.encode()).hexdigest()[:16]
