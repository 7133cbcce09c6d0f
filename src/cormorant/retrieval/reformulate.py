"""Query reformulation stages: a language model (or the first ranking) rewrites the query
before the retriever after it runs.

A reformulator sits in front of any stage: ``genqr_ensemble >> bm25`` expands each query with
keywords and lets BM25 search with the expanded text. It wraps *the stage that follows it*,
which is also the stage its post-retrieval variants take feedback documents from.

- ``genqr_ensemble`` (Dhole & Agichtein 2024): ten paraphrases of one zero-shot instruction each
  yield keywords; the query becomes ``q0 K_1 ... K_10`` (``q0`` once by default, ``repeat=``
  more). ``beta=`` adds score interpolation with the original query's ranking.
- ``genqr_fusion``: one retrieval per reformulation ``q0 K_i``, fused by RRF (k=60).
- ``feedback=prf|oracle|critic`` on both: the prompt starts with context documents, the top
  ``fb_docs`` of a first retrieval (``prf``), the judged relevant documents of ``qrels=FILE``
  (``oracle``, for analysis only), or the first retrieval's documents the model itself judged
  relevant (``critic``).
- ``reason`` (BRIGHT): the model reasons about the query; the text is appended (or replaces it).
- ``rocchio`` (before ``dense``): the query vector moves towards the mean of the top documents'
  vectors, ``alpha * q + beta * mean(d)``.

RM3, the classic term-based baseline, is the Lucene retriever ``rm3`` (Pyserini).

Example:
    >>> from cormorant.llm.fake import EchoModel
    >>> from cormorant.retrieval.bm25 import BM25Retriever
    >>> from cormorant.types import Corpus, Document
    >>> corpus = Corpus.from_documents([Document("a", "cats purr"), Document("b", "dogs bark")])
    >>> pipe = GenQREnsemble(llm=EchoModel(reply="dogs"), n=2) >> BM25Retriever.build(corpus)
    >>> list(pipe.search("barking", k=1)["0"])
    ['b']
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cormorant.errors import PipelineError
from cormorant.llm import DEFAULT_LLM, GenerationParams, LanguageModel, load_llm, weights_fingerprint
from cormorant.pipeline import RRF, CombSUM, Cutoff, Scaled, Stage, StaticStage
from cormorant.pipeline_syntax import Leaf
from cormorant.types import Corpus, Qrels, Queries, Run

log = logging.getLogger(__name__)

# GenQREnsemble's ten paraphrases of FlanQR's instruction, in the paper's order (PAPERS.md §3).
INSTRUCTIONS: tuple[str, ...] = (
    "Improve the search effectiveness by suggesting expansion terms for the query",
    "Recommend expansion terms for the query to improve search results",
    "Improve the search effectiveness by suggesting useful expansion terms for the query",
    "Maximize search utility by suggesting relevant expansion phrases for the query",
    "Enhance search efficiency by proposing valuable terms to expand the query",
    "Elevate search performance by recommending relevant expansion phrases for the query",
    "Boost the search accuracy by providing helpful expansion terms to enrich the query",
    "Increase the search efficacy by offering beneficial expansion keywords for the query",
    "Optimize search results by suggesting meaningful expansion terms to enhance the query",
    "Enhance search outcomes by recommending beneficial expansion terms to supplement the query",
)

# Worked examples for small models (``shots=N``): a 135M model given only the instruction tends
# to continue the query instead of listing terms. Written for this project, not from a paper.
DEMONSTRATIONS: tuple[tuple[str, str], ...] = (
    ("does vitamin d supplementation reduce depression",
     "vitamin d, cholecalciferol, serum 25-hydroxyvitamin d, depressive symptoms, mood,"
     " randomized trial, supplementation dose"),
    ("how do bees navigate",
     "honeybee navigation, sun compass, waggle dance, polarized light, landmarks, foraging"),
    ("causes of high blood pressure in young adults",
     "hypertension, obesity, salt intake, sodium, kidney disease, genetics, blood pressure"),
)

CRITIC_PROMPT = ("Query: {query}\nDocument: {document}\n"
                 "Is the document relevant to the query? Answer yes or no.\nAnswer:")

# BRIGHT's reasoning prompt asks for three things (PAPERS.md §5, Part 2); worded here anew.
REASON_PROMPT = ("{query}\n\nInstructions:\n"
                 "1. Identify the essential problem behind the question.\n"
                 "2. Think step by step about what information would help to answer it.\n"
                 "3. Draft an answer.\n\nAnswer:\n")

DocumentLookup = Callable[[list[str]], dict[str, str]]
"""Document ids -> their texts (ids not found are left out)."""


def keywords(text: str) -> str:
    """A model's answer as plain terms: everything but letters and digits becomes a space, as in
    the reference code (so punctuation cannot break a BM25 or Lucene query parser).

    Example:
        >>> keywords("1. Vitamin-D; (mood)")
        '1 Vitamin D mood'
    """
    return " ".join(re.sub(r"[^0-9A-Za-z]+", " ", text).split())


class Reformulator(Stage):
    """A stage that changes queries for the stage after it (``reformulator >> stage``).

    Subclasses implement :meth:`feed`. They hold no index, so :meth:`leaves` is empty and an
    index directory stores only the stages after them.
    """

    name: ClassVar[str] = "reformulator"

    def __init__(self, params: Mapping[str, Any] | None = None,
                 documents: DocumentLookup | None = None) -> None:
        self.params = {k: v for k, v in (params or {}).items() if v is not None}
        self.documents = documents
        self.seconds = 0.0  # time spent in the language model, for cost per query

    @classmethod
    def build(cls, corpus: Corpus, **params: Any) -> Reformulator:
        """The stage over ``corpus``: its documents are the feedback texts."""
        return cls._make(params, corpus_lookup(corpus))

    @classmethod
    def _make(cls, params: dict[str, Any], documents: DocumentLookup) -> Reformulator:
        try:
            return cls(**params, documents=documents)
        except TypeError as exc:
            raise PipelineError(f"{cls.name}: {exc}") from None

    @classmethod
    def load(cls, docs: Any, **params: Any) -> Reformulator:
        """The stage over an opened index: ``docs`` is its :class:`DocStore`."""
        def lookup(ids: list[str]) -> dict[str, str]:
            return {d: doc.contents for d, doc in docs.get_many(ids).items()}
        return cls._make(params, lookup)

    @classmethod
    def identity(cls, params: dict[str, Any]) -> dict[str, Any]:
        return dict(params)

    def transform(self, queries: Queries, candidates: Run | None) -> Run:
        raise PipelineError(f"{self.name} rewrites queries and ranks nothing itself; put a"
                            f" retriever after it: {self.name} >> bm25")

    def leaves(self) -> list[Stage]:
        return []

    def __str__(self) -> str:
        return str(Leaf(self.name, {k: v for k, v in self.params.items()
                                    if isinstance(v, str | int | float | bool)}))


def corpus_lookup(corpus: Corpus) -> DocumentLookup:
    """Texts of ``corpus`` by id, read into memory on first use (feedback needs random access)."""
    texts: dict[str, str] = {}

    def lookup(ids: list[str]) -> dict[str, str]:
        if not texts:
            texts.update((d.doc_id, d.contents) for d in corpus)
        return {d: texts[d] for d in ids if d in texts}
    return lookup


def read_qrels(path: str | Path) -> Qrels:
    """Judgments for ``feedback=oracle``: BEIR tsv or TREC qrels (the project's own reader)."""
    from cormorant.data.trec import read_qrels as read

    if not Path(path).is_file():
        raise PipelineError(f"qrels file {path} does not exist")
    return read(path)


class _LLMStage(Reformulator):
    """Shared by the language-model stages: the model, its decoding settings, and the model's
    load deferred until the first query (a pipeline can be validated without weights)."""

    def __init__(self, llm: str | LanguageModel = DEFAULT_LLM, max_new_tokens: int = 48,
                 temperature: float = 0.0, seed: int = 0, params: Mapping[str, Any] | None = None,
                 documents: DocumentLookup | None = None, llm_options: Mapping[str, Any] | None = None
                 ) -> None:
        shown = {"llm": llm if isinstance(llm, str) else getattr(llm, "name", "model"),
                 **(params or {}), **{f"llm_{k}": v for k, v in (llm_options or {}).items()}}
        super().__init__(shown, documents)
        self._llm_spec, self._llm = llm, None
        self.llm_options = dict(llm_options or {})
        self.generation = GenerationParams(max_new_tokens=max_new_tokens,
                                           temperature=temperature, seed=seed)

    @classmethod
    def identity(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The options plus the model's weights fingerprint, so a model replaced at the same
        path gives new cached runs (as a dense stage's fingerprint does)."""
        spec = params.get("llm", DEFAULT_LLM)
        weights = weights_fingerprint(spec) if isinstance(spec, str) else None
        return {**params, **({"llm_weights": weights} if weights else {})}

    @property
    def llm(self) -> LanguageModel:
        if self._llm is None:
            self._llm = load_llm(self._llm_spec, **self.llm_options)
        return self._llm

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        start = time.perf_counter()
        try:
            return self.llm.generate(list(prompts), params)
        finally:
            self.seconds += time.perf_counter() - start


def _llm_options(options: dict[str, Any]) -> dict[str, Any]:
    """``llm_base_url=...`` in a pipeline string -> ``base_url=...`` for the backend."""
    unknown = [k for k in options if not k.startswith("llm_")]
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}")
    return {k[4:]: v for k, v in options.items()}


class GenQREnsemble(_LLMStage):
    """GenQREnsemble: keywords from ``n`` instruction paraphrases expand the query.

    Args:
        llm: ``<backend>:<model>`` (default ``transformers:smollm2``) or a built model.
        n: how many of the ten instructions to use (1-10).
        repeat: how often the original query appears in the expanded text (paper: once).
        beta: if set, the final score is ``(1 - beta) * original + beta * expanded`` over the
            two rankings (PAPERS.md: the reference code's ``beta=.05`` rows).
        shots: worked examples prepended to each prompt (0: the paper's zero-shot prompt).
        max_new_tokens, temperature, repetition_penalty, seed: decoding (greedy by default).
        feedback: ``none``, ``prf``, ``oracle`` (needs ``qrels``) or ``critic``.
        fb_docs: feedback documents in the prompt (paper: 5); fb_words: words kept of each.
        fb_depth: ``critic`` only: how many top documents the model judges.
        **llm_options: ``llm_<option>`` goes to the backend (``llm_base_url=...``).

    Example:
        >>> from cormorant.llm.fake import EchoModel
        >>> stage = GenQREnsemble(llm=EchoModel(reply="sun, moon"), n=2)
        >>> stage.expand({"q": "tides"})["q"]
        'tides sun moon sun moon'
    """

    name: ClassVar[str] = "genqr_ensemble"

    def __init__(self, llm: str | LanguageModel = DEFAULT_LLM, *, n: int = 10, repeat: int = 1,
                 beta: float | None = None, shots: int = 0, feedback: str = "none",
                 fb_docs: int = 5, fb_words: int = 80, fb_depth: int = 10,
                 qrels: str | None = None, max_new_tokens: int = 48, temperature: float = 0.0,
                 repetition_penalty: float = 1.2, seed: int = 0,
                 documents: DocumentLookup | None = None,
                 **llm_options: Any) -> None:
        if not 1 <= n <= len(INSTRUCTIONS):
            raise PipelineError(f"{self.name}: n must be 1-{len(INSTRUCTIONS)}, got {n}")
        if repeat < 1 or not 0 <= shots <= len(DEMONSTRATIONS) or fb_docs < 1:
            raise PipelineError(f"{self.name}: repeat >= 1, shots 0-{len(DEMONSTRATIONS)} and"
                                f" fb_docs >= 1 needed; got {repeat}, {shots}, {fb_docs}")
        if beta is not None and not 0 <= beta <= 1:
            raise PipelineError(f"{self.name}: beta must be in [0, 1], got {beta}")
        if feedback not in ("none", "prf", "oracle", "critic"):
            raise PipelineError(f"{self.name}: feedback must be none, prf, oracle or critic,"
                                f" got {feedback!r}")
        if feedback == "oracle" and not qrels:
            raise PipelineError(f"{self.name}: feedback=oracle needs qrels=FILE")
        shown = {"n": n, "repeat": repeat, "beta": beta, "shots": shots, "feedback": feedback,
                 "fb_docs": fb_docs, "fb_words": fb_words, "fb_depth": fb_depth, "qrels": qrels,
                 "max_new_tokens": max_new_tokens, "temperature": temperature,
                 "repetition_penalty": repetition_penalty, "seed": seed}
        defaults = {"n": 10, "repeat": 1, "shots": 0, "feedback": "none", "fb_docs": 5,
                    "fb_words": 80, "fb_depth": 10, "max_new_tokens": 48, "temperature": 0.0,
                    "repetition_penalty": 1.2, "seed": 0}
        super().__init__(llm, max_new_tokens, temperature, seed,
                         {k: v for k, v in shown.items() if defaults.get(k, None) != v},
                         documents, _llm_options(llm_options))
        self.n, self.repeat, self.beta, self.shots = n, repeat, beta, shots
        self.feedback, self.fb_docs, self.fb_words, self.fb_depth = (feedback, fb_docs, fb_words,
                                                                     fb_depth)
        self.qrels = read_qrels(qrels) if qrels else None
        self.instructions = INSTRUCTIONS[:n]
        # critic only: the last search's judgements, query id -> document id -> said relevant.
        # Kept so an evaluation can measure the critic against the qrels.
        self.verdicts: dict[str, dict[str, bool]] = {}
        # The paper decodes with a repetition penalty of 1.2 [P]; small models loop without it.
        self.generation = self.generation.with_(repetition_penalty=repetition_penalty)

    # -- prompts ---------------------------------------------------------------------------
    def prompt(self, instruction: str, query: str, context: str | None = None) -> str:
        """One prompt: the paper's ``"{I}: {q}"``, prefixed with context for feedback."""
        text = f"{instruction}: {query}"
        if context:
            # Context before the instruction: the paper found the prefix beat the suffix.
            text = f"Based on the given context information: {context}, {text}"
        if not self.shots:
            return text
        shots = "".join(f"{instruction}: {q}\nExpansion terms: {k}\n\n"
                        for q, k in DEMONSTRATIONS[:self.shots])
        return f"{shots}{text}\nExpansion terms:"

    def decoding(self) -> GenerationParams:
        # Few-shot answers are one line; stopping there saves most of the generation time.
        return self.generation.with_(stop=("\n",)) if self.shots else self.generation

    def keyword_sets(self, queries: Queries,
                     contexts: Mapping[str, str] | None = None) -> dict[str, list[str]]:
        """Per query, the keywords each instruction produced (instruction order)."""
        qids = list(queries)
        # Bind each instruction explicitly per prompt: the reference code's late-bound lambdas
        # made every branch use the last instruction (PAPERS.md, "Mistakes").
        prompts = [self.prompt(instruction, queries[q], (contexts or {}).get(q))
                   for q in qids for instruction in self.instructions]
        texts = self.generate(prompts, self.decoding())
        return {q: [keywords(t) for t in texts[i * self.n:(i + 1) * self.n]]
                for i, q in enumerate(qids)}

    def expand(self, queries: Queries, contexts: Mapping[str, str] | None = None) -> Queries:
        """``q0`` (``repeat`` times) followed by every instruction's keywords, in order."""
        sets = self.keyword_sets(queries, contexts)
        return {q: " ".join([text] * self.repeat + [k for k in sets[q] if k])
                for q, text in queries.items()}

    # -- feedback --------------------------------------------------------------------------
    def contexts(self, second: Stage, queries: Queries, candidates: Run | None
                 ) -> tuple[dict[str, str], Run | None]:
        """Feedback text per query, and the first ranking when one was made."""
        if self.feedback == "none":
            return {}, None
        if self.feedback == "oracle":
            assert self.qrels is not None
            ids = {q: [d for d, rel in sorted(self.qrels.get(q, {}).items(),
                                              key=lambda x: (-x[1], x[0])) if rel > 0][:self.fb_docs]
                   for q in queries}
            first = None
        else:
            first = second.transform(queries, candidates)
            depth = self.fb_depth if self.feedback == "critic" else self.fb_docs
            ids = {q: [d for d, _ in first.ranked(q)[:depth]] if q in first else []
                   for q in queries}
        texts = self._texts([d for docs in ids.values() for d in docs])
        if self.feedback == "critic":
            ids = self.critic(queries, ids, texts)
        return {q: " ".join(texts[d] for d in docs if d in texts) for q, docs in ids.items()
                if docs}, first

    def _texts(self, ids: list[str]) -> dict[str, str]:
        if self.documents is None:
            raise PipelineError(f"{self.name}(feedback={self.feedback}) needs the documents'"
                                " texts; build it over a corpus or an index")
        found = self.documents(list(dict.fromkeys(ids)))
        return {d: " ".join(t.split()[:self.fb_words]) for d, t in found.items()}

    def critic(self, queries: Queries, ids: dict[str, list[str]],
               texts: dict[str, str]) -> dict[str, list[str]]:
        """Keep the feedback documents the model calls relevant (at most ``fb_docs``).

        Every judgement is also recorded in :attr:`verdicts` (replaced on each call).
        """
        pairs = [(q, d) for q, docs in ids.items() for d in docs if d in texts]
        prompts = [CRITIC_PROMPT.format(query=queries[q], document=texts[d]) for q, d in pairs]
        answers = self.generate(prompts, self.generation.with_(max_new_tokens=3, stop=("\n",)))
        kept: dict[str, list[str]] = {q: [] for q in ids}
        self.verdicts = {q: {} for q in ids}
        for (q, d), answer in zip(pairs, answers, strict=True):
            relevant = answer.strip().lower().startswith("yes")
            self.verdicts[q][d] = relevant
            if relevant and len(kept[q]) < self.fb_docs:
                kept[q].append(d)
        return kept

    # -- search ----------------------------------------------------------------------------
    def feed(self, second: Stage, queries: Queries, candidates: Run | None) -> Run:
        contexts, first = self.contexts(second, queries, candidates)
        expanded = second.transform(self.expand(queries, contexts), candidates)
        if self.beta is None:
            return expanded
        original = first if first is not None else second.transform(queries, candidates)
        return CombSUM([Scaled(StaticStage(original), 1 - self.beta),
                        Scaled(StaticStage(expanded), self.beta)]).transform(queries, None)


class GenQRFusion(GenQREnsemble):
    """GenQRFusion: one retrieval per reformulation ``q0 K_i``, fused.

    Args:
        fusion: ``rrf`` (k=60, ranks from 1) or ``combsum`` (raw scores summed).
        include_original: add a run of the original query to the fusion.
        (other arguments as :class:`GenQREnsemble`; ``beta`` is not used)

    Example:
        >>> from cormorant.llm.fake import EchoModel
        >>> stage = GenQRFusion(llm=EchoModel(reply="sun"), n=3)
        >>> stage.reformulations({"q": "tides"})["q"]
        ['tides sun', 'tides sun', 'tides sun']
    """

    name: ClassVar[str] = "genqr_fusion"

    def __init__(self, llm: str | LanguageModel = DEFAULT_LLM, *, fusion: str = "rrf",
                 rrf_k: int = 60, include_original: bool = False, **options: Any) -> None:
        if fusion not in ("rrf", "combsum"):
            raise PipelineError(f"genqr_fusion: fusion must be rrf or combsum, got {fusion!r}")
        if options.get("beta") is not None:
            raise PipelineError("genqr_fusion fuses rankings; beta applies to genqr_ensemble")
        super().__init__(llm, **options)
        extra = {"fusion": fusion if fusion != "rrf" else None,
                 "rrf_k": rrf_k if rrf_k != 60 else None,
                 "include_original": include_original or None}
        self.params.update({k: v for k, v in extra.items() if v is not None})
        self.fusion, self.rrf_k, self.include_original = fusion, rrf_k, include_original

    def reformulations(self, queries: Queries,
                       contexts: Mapping[str, str] | None = None) -> dict[str, list[str]]:
        """Per query, ``q0 K_i`` for each instruction ``i``."""
        sets = self.keyword_sets(queries, contexts)
        return {q: [" ".join([text] * self.repeat + ([k] if k else [])) for k in sets[q]]
                for q, text in queries.items()}

    def feed(self, second: Stage, queries: Queries, candidates: Run | None) -> Run:
        contexts, first = self.contexts(second, queries, candidates)
        variants = self.reformulations(queries, contexts)
        runs = [second.transform({q: variants[q][i] for q in queries}, candidates)
                for i in range(self.n)]
        if self.include_original:
            runs.append(first if first is not None else second.transform(queries, candidates))
        stages: list[Stage] = [StaticStage(r) for r in runs]
        fuser = RRF(stages, k=self.rrf_k) if self.fusion == "rrf" else CombSUM(stages)
        return fuser.transform(queries, None)


class ReasonExpansion(_LLMStage):
    """Reasoning expansion (BRIGHT): the model reasons about the query and its text is appended
    (``mode=append``) or replaces the query (``mode=replace``, BRIGHT's own setting).

    A failed or empty generation keeps the original query, as BRIGHT's ``reason.py`` does.

    Example:
        >>> from cormorant.llm.fake import EchoModel
        >>> ReasonExpansion(llm=EchoModel(reply="it is about tides")).rewrite({"q": "moon"})["q"]
        'moon it is about tides'
    """

    name: ClassVar[str] = "reason"

    def __init__(self, llm: str | LanguageModel = DEFAULT_LLM, *, mode: str = "append",
                 max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0, documents: DocumentLookup | None = None,
                 **llm_options: Any) -> None:
        if mode not in ("append", "replace"):
            raise PipelineError(f"reason: mode must be append or replace, got {mode!r}")
        shown = {"mode": None if mode == "append" else mode,
                 "max_new_tokens": None if max_new_tokens == 128 else max_new_tokens,
                 "temperature": temperature or None, "seed": seed or None}
        super().__init__(llm, max_new_tokens, temperature, seed, shown, documents,
                         _llm_options(llm_options))
        self.generation = self.generation.with_(top_p=top_p)
        self.mode = mode

    def rewrite(self, queries: Queries) -> Queries:
        qids = list(queries)
        # BRIGHT flattens newlines in the post before prompting.
        prompts = [REASON_PROMPT.format(query=" ".join(queries[q].split())) for q in qids]
        try:
            texts = self.generate(prompts, self.generation)
        except Exception as exc:  # noqa: BLE001 - a failed model call keeps the original queries
            log.warning("reason: generation failed (%s); keeping the original queries", exc)
            texts = [""] * len(qids)
        out = {}
        for q, text in zip(qids, texts, strict=True):
            text = " ".join(text.split())
            if not text:
                out[q] = queries[q]
            else:
                out[q] = text if self.mode == "replace" else f"{queries[q]} {text}"
        return out

    def feed(self, second: Stage, queries: Queries, candidates: Run | None) -> Run:
        return second.transform(self.rewrite(queries), candidates)


class Rocchio(Reformulator):
    """Rocchio pseudo-relevance feedback on dense vectors, in front of ``dense``.

    The query vector becomes ``alpha * q + beta * mean(top fb_docs document vectors)`` and the
    index is searched again (or the candidates re-scored) with it.

    Example:
        >>> pipe = Rocchio(beta=0.5) >> dense  # doctest: +SKIP
    """

    name: ClassVar[str] = "rocchio"

    def __init__(self, *, alpha: float = 1.0, beta: float = 0.75, fb_docs: int = 5,
                 documents: DocumentLookup | None = None) -> None:
        if fb_docs < 1:
            raise PipelineError(f"rocchio: fb_docs must be at least 1, got {fb_docs}")
        shown = {"alpha": alpha, "beta": beta, "fb_docs": fb_docs}
        defaults = {"alpha": 1.0, "beta": 0.75, "fb_docs": 5}
        super().__init__({k: v for k, v in shown.items() if defaults[k] != v}, documents)
        self.alpha, self.beta, self.fb_docs = float(alpha), float(beta), fb_docs

    def feed(self, second: Stage, queries: Queries, candidates: Run | None) -> Run:
        from cormorant.retrieval.dense import DenseRetriever

        dense, k = second, None
        if isinstance(dense, Cutoff):
            dense, k = dense.stage, dense.k
        if not isinstance(dense, DenseRetriever):
            raise PipelineError(f"rocchio moves dense query vectors; it must come right before a"
                                f" dense stage, not {second}")
        qids = list(queries)
        vectors = dense.query_encoder.encode_queries([queries[q] for q in qids])
        _, rows = dense.index.search(vectors, self.fb_docs)
        moved = np.empty_like(vectors)
        for i, row in enumerate(rows):
            row = row[row >= 0]
            centroid = dense._reconstruct(row.tolist()).mean(axis=0) if len(row) else 0.0
            moved[i] = self.alpha * vectors[i] + self.beta * centroid
        if candidates is not None:
            run = dense.score_candidates(qids, moved, candidates)
        else:
            scores, found = dense.index.search(moved, dense.depth)
            run = Run.from_arrays(qids, scores, found, dense.index.ids)
        return run.topk(k) if k else run


def reformulator_names() -> list[str]:
    """The registered reformulation stages."""
    from cormorant import registry

    return registry.names("cormorant.reformulators")


__all__ = ["INSTRUCTIONS", "GenQREnsemble", "GenQRFusion", "ReasonExpansion", "Reformulator",
           "Rocchio", "keywords", "reformulator_names"]
