"""Query reformulation stages: a language model (or a first ranking) rewrites the query for
the stages after it.

They are ordinary stages: each receives the flow (queries, ranking so far, document text) and
returns it with new query text, so ``genqr_ensemble >> bm25`` lets BM25 search with the
expanded queries, and every later stage sees them too (``flow.original`` keeps what was asked).

- ``genqr_ensemble`` (Dhole & Agichtein 2024): ten paraphrases of one zero-shot instruction each
  yield keywords; the query becomes ``q0 K_1 ... K_10`` (``q0`` once by default, ``repeat=``
  more). The paper's score interpolation with the original query's ranking is a fusion:
  ``0.7 * bm25 + 0.3 * (genqr_ensemble >> bm25)``.
- ``genqr_fusion(bm25)``: one retrieval per reformulation ``q0 K_i`` by the stage it is given,
  fused by RRF (k=60).
- ``feedback=prf|critic`` on both: the prompt starts with context documents, the top ``fb_docs``
  of the ranking before the stage (``prf``), or those of them the model itself judged relevant
  (``critic``): ``bm25 >> genqr_ensemble(feedback=prf) >> bm25``. The ranking is used up (the
  stage after searches the collection again). ``feedback=oracle`` takes the judged relevant
  documents of ``qrels=FILE`` instead (for analysis only).
- ``reason`` (BRIGHT): the model reasons about the query; the text is appended (or replaces it).
- ``reset``: the stages after it read the queries as they were asked.
- ``rocchio(dense)``: the query vector moves towards the mean of the top documents' vectors,
  ``alpha * q + beta * mean(d)``, and the dense stage it is given searches again.

RM3, the classic term-based baseline, is the Lucene retriever ``rm3`` (Pyserini).

Example:
    >>> from cormorant.llm.fake import EchoModel
    >>> from cormorant.retrieval.bm25 import BM25Retriever
    >>> from cormorant.types import Corpus, Document
    >>> corpus = Corpus.from_documents([Document("a", "cats purr"), Document("b", "dogs bark")])
    >>> pipe = GenQREnsemble(llm=EchoModel(reply="dogs"), n=2) >> BM25Retriever.build(corpus)
    >>> str(pipe)
    'genqr_ensemble(llm=echo, n=2) >> bm25'
    >>> list(pipe.search("barking", k=1)["0"])
    ['b']
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from cormorant.errors import PipelineError
from cormorant.llm import DEFAULT_LLM, GenerationParams, LanguageModel, load_llm, weights_fingerprint
from cormorant.params import Param, Params
from cormorant.pipeline import RRF, CombSUM, Composite, Flow, Stage, StaticStage
from cormorant.pipeline_syntax import Call, Leaf, Spec
from cormorant.retrieval.base import QueryStage
from cormorant.types import Qrels, Queries, Run

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

def keywords(text: str) -> str:
    """A model's answer as plain terms: everything but letters and digits becomes a space, as in
    the reference code (so punctuation cannot break a BM25 or Lucene query parser).

    Example:
        >>> keywords("1. Vitamin-D; (mood)")
        '1 Vitamin D mood'
    """
    return " ".join(re.sub(r"[^0-9A-Za-z]+", " ", text).split())


def read_qrels(path: str | Path) -> Qrels:
    """Judgments for ``feedback=oracle``: BEIR tsv or TREC qrels (the project's own reader)."""
    from cormorant.data.trec import read_qrels as read

    if not Path(path).is_file():
        raise PipelineError(f"qrels file {path} does not exist")
    return read(path)


LLM_OPTION = "llm_"
"""Parameters named ``llm_<option>`` go to the language-model backend (``llm_base_url=...``)."""

DECODING = Params(
    Param("llm", str, DEFAULT_LLM, "language model: <backend>:<model> (transformers:smollm2,"
          " llama-cpp:PATH, openai:NAME)"),
    Param("max_new_tokens", int, 48, "tokens generated per prompt", low=1),
    Param("temperature", float, 0.0, "sampling temperature (0: greedy)", low=0),
    Param("seed", int, 0, "sampling seed"),
)
FEEDBACK = Params(
    Param("n", int, 10, "instructions used (1-10)", low=1, high=len(INSTRUCTIONS)),
    Param("repeat", int, 1, "times the original query appears in the expanded text", low=1),
    Param("shots", int, 0, "worked examples before each prompt", low=0,
          high=len(DEMONSTRATIONS)),
    Param("feedback", str, "none", "context documents in the prompt: the ranking before the"
          " stage (prf), those the model judges relevant (critic), or judged ones (oracle)",
          choices=("none", "prf", "oracle", "critic")),
    Param("fb_docs", int, 5, "feedback documents in the prompt", low=1),
    Param("fb_words", int, 80, "words kept of each feedback document", low=1),
    Param("fb_depth", int, 10, "critic: top documents the model judges", low=1),
    Param("qrels", str, None, "oracle: judgments file", nullable=True),
    Param("repetition_penalty", float, 1.2, "decoding repetition penalty (paper: 1.2)",
          positive=True),
)


class LanguageModelStage(QueryStage):
    """A stage that prompts a language model: the model, its decoding settings, and the
    model's load deferred until the first query (a pipeline can be checked without weights).

    ``llm`` may also be a built :class:`~cormorant.llm.LanguageModel` (Python use), and the
    model can be replaced through the :attr:`llm` property (a benchmark shares one model).
    """

    PARAMS: ClassVar[Params] = DECODING

    def __init__(self, **params: Any) -> None:
        model = params.get("llm")
        if model is not None and not isinstance(model, str):
            params["llm"] = getattr(model, "name", "model")
        self.llm_options = {k[len(LLM_OPTION):]: v for k, v in params.items()
                            if k.startswith(LLM_OPTION)}
        super().__init__(**{k: v for k, v in params.items() if not k.startswith(LLM_OPTION)})
        self._model: LanguageModel | None = None if model is None or isinstance(model, str) \
            else model
        self.seconds = 0.0  # time spent in the language model, for cost per query
        self.generation = GenerationParams(max_new_tokens=self.settings["max_new_tokens"],
                                           temperature=self.settings["temperature"],
                                           seed=self.settings["seed"])

    @classmethod
    def identity(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """The options plus the model's weights fingerprint, so a model replaced at the same
        path gives new cached runs (as a dense stage's fingerprint does)."""
        weights = weights_fingerprint(settings["llm"])
        return {**settings, **({"llm_weights": weights} if weights else {})}

    @classmethod
    def declared(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """Checked settings; ``llm_<option>`` values pass to the backend as given."""
        own = {k: v for k, v in params.items() if not k.startswith(LLM_OPTION)}
        extra = {k: v for k, v in params.items() if k.startswith(LLM_OPTION)}
        return {**cls.PARAMS.resolve(own, cls.name), **extra}

    @property
    def llm(self) -> LanguageModel:
        if self._model is None:
            self._model = load_llm(self.settings["llm"], **self.llm_options)
        return self._model

    @llm.setter
    def llm(self, model: LanguageModel) -> None:
        self._model = model

    def spec(self) -> Spec:
        options = {f"{LLM_OPTION}{k}": v for k, v in self.llm_options.items()}
        return Leaf(self.name, {**self.PARAMS.shown(self.settings), **options})

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        start = time.perf_counter()
        try:
            return self.llm.generate(list(prompts), params)
        finally:
            self.seconds += time.perf_counter() - start


class GenQREnsemble(LanguageModelStage):
    """GenQREnsemble: keywords from ``n`` instruction paraphrases expand the query.

    With ``feedback=prf`` or ``critic`` the ranking before the stage supplies the context
    documents and is used up: the next stage ranks the collection again with the expanded
    queries. Otherwise the ranking passes through unchanged.

    Example:
        >>> from cormorant.llm.fake import EchoModel
        >>> stage = GenQREnsemble(llm=EchoModel(reply="sun, moon"), n=2)
        >>> stage.expand({"q": "tides"})["q"]
        'tides sun moon sun moon'
    """

    name: ClassVar[str] = "genqr_ensemble"
    usage: ClassVar[str] = "genqr_ensemble >> bm25"
    PARAMS: ClassVar[Params] = DECODING + FEEDBACK

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        s = self.settings
        if s["feedback"] == "oracle" and not s["qrels"]:
            raise PipelineError(f"{self.name}: feedback=oracle needs qrels=FILE")
        self.n, self.repeat, self.shots = s["n"], s["repeat"], s["shots"]
        self.feedback, self.fb_docs = s["feedback"], s["fb_docs"]
        self.fb_words, self.fb_depth = s["fb_words"], s["fb_depth"]
        self.qrels = read_qrels(s["qrels"]) if s["qrels"] else None
        self.instructions = INSTRUCTIONS[:self.n]
        # critic only: the last search's judgements, query id -> document id -> said relevant.
        # Kept so an evaluation can measure the critic against the qrels.
        self.verdicts: dict[str, dict[str, bool]] = {}
        # The paper decodes with a repetition penalty of 1.2 [P]; small models loop without it.
        self.generation = self.generation.with_(repetition_penalty=s["repetition_penalty"])

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

    def reformulations(self, queries: Queries,
                       contexts: Mapping[str, str] | None = None) -> dict[str, list[str]]:
        """Per query, ``q0 K_i`` for each instruction ``i`` (GenQRFusion's queries)."""
        sets = self.keyword_sets(queries, contexts)
        return {q: [" ".join([text] * self.repeat + ([k] if k else [])) for k in sets[q]]
                for q, text in queries.items()}

    # -- feedback --------------------------------------------------------------------------
    def contexts(self, flow: Flow) -> tuple[dict[str, str], Flow]:
        """Feedback text per query, and the flow with the ranking used up (prf, critic)."""
        if self.feedback == "none":
            return {}, flow
        if self.feedback == "oracle":
            assert self.qrels is not None
            ids = {q: [d for d, rel in sorted(self.qrels.get(q, {}).items(),
                                              key=lambda x: (-x[1], x[0])) if rel > 0][:self.fb_docs]
                   for q in flow.queries}
        else:
            first = flow.ranking(self)
            depth = self.fb_depth if self.feedback == "critic" else self.fb_docs
            ids = {q: [d for d, _ in first.ranked(q)[:depth]] for q in flow.queries}
            flow = flow.with_run(None)
        texts = {d: " ".join(t.split()[:self.fb_words])
                 for d, t in flow.texts((d for docs in ids.values() for d in docs), self).items()}
        if self.feedback == "critic":
            ids = self.critic(flow.queries, ids, texts)
        return {q: " ".join(texts[d] for d in docs if d in texts) for q, docs in ids.items()
                if docs}, flow

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

    def transform(self, flow: Flow) -> Flow:
        contexts, flow = self.contexts(flow)
        return flow.with_queries(self.expand(flow.queries, contexts))


class GenQRFusion(Composite):
    """GenQRFusion: the stage it is given searches once per reformulation ``q0 K_i``; the
    rankings are fused.

    Args (besides :class:`GenQREnsemble`'s):
        fusion: ``rrf`` (k=``rrf_k``, ranks from 1) or ``combsum`` (raw scores summed).
        include_original: add the original query's ranking to the fusion.

    Example:
        >>> from cormorant.llm.fake import EchoModel
        >>> stage = GenQRFusion([StaticStage(Run())], llm=EchoModel(reply="sun"), n=3)
        >>> stage.expander.reformulations({"q": "tides"})["q"]
        ['tides sun', 'tides sun', 'tides sun']
    """

    name: ClassVar[str] = "genqr_fusion"
    arity: ClassVar[int | None] = 1
    usage: ClassVar[str] = "genqr_fusion(bm25, n=10)"
    FUSION = Params(
        Param("fusion", str, "rrf", "how the rankings are fused", choices=("rrf", "combsum")),
        Param("rrf_k", int, 60, "RRF rank offset", low=0),
        Param("include_original", bool, False, "fuse the original query's ranking too"),
    )
    PARAMS: ClassVar[Params] = GenQREnsemble.PARAMS + FUSION

    def __init__(self, stages: list[Stage], **params: Any) -> None:
        own = {k: params.pop(k) for k in list(params) if k in self.FUSION}
        self.expander = GenQREnsemble(**params)
        super().__init__(stages, **own)
        self.settings = {**self.settings, **self.expander.settings}

    @classmethod
    def declared(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        own = {k: v for k, v in params.items() if k in cls.FUSION}
        rest = {k: v for k, v in params.items() if k not in cls.FUSION}
        return {**GenQREnsemble.declared(rest), **cls.FUSION.resolve(own, cls.name)}

    @classmethod
    def identity(cls, settings: dict[str, Any]) -> dict[str, Any]:
        return GenQREnsemble.identity(settings)

    def spec(self) -> Spec:
        options = {f"{LLM_OPTION}{k}": v for k, v in self.expander.llm_options.items()}
        return Call(self.name, [s.spec() for s in self.stages],
                    {**self.PARAMS.shown(self.settings), **options})

    def transform(self, flow: Flow) -> Flow:
        contexts, flow = self.expander.contexts(flow)
        variants = self.expander.reformulations(flow.queries, contexts)
        child = self.stages[0]
        inputs = [flow.with_queries({q: variants[q][i] for q in flow.queries}).with_k(None)
                  for i in range(self.expander.n)]
        if self.settings["include_original"]:
            inputs.append(flow.with_k(None))
        stages: list[Stage] = [StaticStage(child.transform(f).ranking(child)) for f in inputs]
        fuser = RRF(stages, k=self.settings["rrf_k"]) if self.settings["fusion"] == "rrf" \
            else CombSUM(stages)
        return flow.with_run(fuser.rank(flow.queries))


class ReasonExpansion(LanguageModelStage):
    """Reasoning expansion (BRIGHT): the model reasons about the query and its text is appended
    (``mode=append``) or replaces the query (``mode=replace``, BRIGHT's own setting).

    A failed or empty generation keeps the original query, as BRIGHT's ``reason.py`` does.

    Example:
        >>> from cormorant.llm.fake import EchoModel
        >>> ReasonExpansion(llm=EchoModel(reply="it is about tides")).rewrite({"q": "moon"})["q"]
        'moon it is about tides'
    """

    name: ClassVar[str] = "reason"
    usage: ClassVar[str] = "reason >> bm25"
    PARAMS: ClassVar[Params] = DECODING + Params(
        Param("mode", str, "append", "append the reasoning to the query or replace it",
              choices=("append", "replace")),
        Param("max_new_tokens", int, 128, "tokens generated per query", low=1),
        Param("top_p", float, 1.0, "nucleus sampling mass", positive=True, high=1),
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.generation = self.generation.with_(top_p=self.settings["top_p"])
        self.mode = self.settings["mode"]

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

    def transform(self, flow: Flow) -> Flow:
        return flow.with_queries(self.rewrite(flow.queries))


class ResetQueries(QueryStage):
    """Gives the stages after it the queries as they were asked (``reset``), as PyTerrier's
    ``rewrite.reset()``: ``genqr_ensemble >> bm25 % 100 >> reset >> rerank(model=CE)`` lets
    the cross-encoder read the user's query rather than the expanded one.

    Example:
        >>> from cormorant.pipeline import Flow
        >>> flow = Flow.start({"q": "moon"}).with_queries({"q": "moon tides"})
        >>> ResetQueries().transform(flow).queries
        {'q': 'moon'}
    """

    name: ClassVar[str] = "reset"
    usage: ClassVar[str] = "genqr_ensemble >> bm25 >> reset >> rerank(model=DIR)"

    def transform(self, flow: Flow) -> Flow:
        return flow.with_queries(flow.original)


@runtime_checkable
class VectorSearch(Protocol):
    """What Rocchio needs of the stage it moves query vectors for (``dense`` has it)."""

    depth: int

    def encode_queries(self, queries: Queries) -> np.ndarray: ...

    def document_vectors(self, doc_ids: list[str]) -> np.ndarray: ...

    def search_vectors(self, qids: list[str], vectors: np.ndarray, k: int) -> Run: ...

    def score_candidates(self, qids: list[str], query_vectors: np.ndarray,
                         candidates: Run) -> Run: ...


class Rocchio(Composite):
    """Rocchio pseudo-relevance feedback on dense vectors: ``rocchio(dense)``.

    The query vector becomes ``alpha * q + beta * mean(top fb_docs document vectors)`` and the
    dense stage searches again with it (or re-scores the ranking before, if there is one).

    Example:
        >>> pipe = build_pipeline("rocchio(dense, beta=0.5)", corpus)  # doctest: +SKIP
    """

    name: ClassVar[str] = "rocchio"
    arity: ClassVar[int | None] = 1
    usage: ClassVar[str] = "rocchio(dense)"
    PARAMS: ClassVar[Params] = Params(
        Param("alpha", float, 1.0, "weight of the original query vector"),
        Param("beta", float, 0.75, "weight of the feedback documents' mean vector"),
        Param("fb_docs", int, 5, "feedback documents", low=1),
    )

    def __init__(self, stages: list[Stage], **params: Any) -> None:
        super().__init__(stages, **params)
        if not isinstance(self.stages[0], VectorSearch):
            raise PipelineError(f"rocchio moves dense query vectors: it takes a dense stage,"
                                f" rocchio(dense), not {self.stages[0]}")

    def transform(self, flow: Flow) -> Flow:
        dense = self.stages[0]
        assert isinstance(dense, VectorSearch)
        qids = list(flow.queries)
        vectors = dense.encode_queries(flow.queries)
        first = dense.search_vectors(qids, vectors, self.settings["fb_docs"])
        moved = np.empty_like(vectors)
        for i, qid in enumerate(qids):
            top = list(first.get(qid, {}))
            centroid = dense.document_vectors(top).mean(axis=0) if top else 0.0
            moved[i] = self.settings["alpha"] * vectors[i] + self.settings["beta"] * centroid
        if flow.run is not None:
            return flow.with_run(dense.score_candidates(qids, moved, flow.run))
        return flow.with_run(dense.search_vectors(qids, moved, flow.depth(dense.depth)))


def language_model_stages(stage: Stage) -> list[LanguageModelStage]:
    """The stages of ``stage`` that prompt a language model (a benchmark gives them one
    shared model through their ``llm`` property)."""
    found: list[LanguageModelStage] = []
    for node in stage.walk():
        if isinstance(node, LanguageModelStage):
            found.append(node)
        elif isinstance(node, GenQRFusion):
            found.append(node.expander)
    return found


__all__ = ["INSTRUCTIONS", "GenQREnsemble", "GenQRFusion", "LanguageModelStage",
           "ReasonExpansion", "ResetQueries", "Rocchio", "VectorSearch", "keywords", "language_model_stages"]
