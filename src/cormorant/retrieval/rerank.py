"""Cross-encoder re-ranking: ``bm25 % 100 >> rerank(model=PATH)``.

A cross-encoder reads query and document together and outputs one relevance logit. It is too
slow to rank a collection, so this stage only re-scores another stage's candidates. Train one
with ``cormorant train --kind cross-encoder`` (none can be downloaded on machines without a
model hub).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cormorant.errors import CormorantError
from cormorant.params import QUERY, Param, Params
from cormorant.pipeline import Flow
from cormorant.retrieval.backends import BACKENDS, QUANTIZATIONS, Runtime, accelerate
from cormorant.retrieval.base import QueryStage
from cormorant.retrieval.encoders import model_fingerprint
from cormorant.retrieval.windows import (
    aggregate_scores,
    rescore_query_windows,
    splitter_of,
    window_params,
)
from cormorant.types import Document, Queries, Run

log = logging.getLogger(__name__)


class CrossEncoderScorer:
    """A sentence-transformers ``CrossEncoder`` that returns raw logits for (query, text) pairs.

    Raw logits, not sigmoid probabilities: Margin-MSE distillation needs unsquashed margins.

    Example:
        >>> scorer = CrossEncoderScorer("models/scifact-ce")  # doctest: +SKIP
        >>> scorer.score([("vitamin d depression", "Vitamin D levels and mood ...")])  # doctest: +SKIP
        array([4.18], dtype=float32)
    """

    def __init__(self, model: str, batch_size: int = 32, max_length: int | None = None,
                 show_progress: bool = False, runtime: Runtime | None = None) -> None:
        self.path = str(model)
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._model = load_cross_encoder(self.path, max_length)
        self.fingerprint = model_fingerprint(self.path)
        self.runtime = runtime or Runtime()
        accelerate(self._model, self.runtime, self.fingerprint)

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (what ``passages`` counts windows in)."""
        return self._model.tokenizer

    @property
    def max_length(self) -> int:
        """Tokens of a (query, document) pair the model reads."""
        found = getattr(self._model, "max_seq_length", None)
        return int(found or self._model.tokenizer.model_max_length)

    special_tokens = 0
    """A document window's own budget holds no special tokens: they belong to the pair."""

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        import torch

        logits = self._model.predict(pairs, batch_size=self.batch_size, convert_to_numpy=True,
                                     activation_fn=torch.nn.Identity(),
                                     show_progress_bar=self.show_progress)
        return np.asarray(logits, dtype=np.float32).reshape(len(pairs))

    def score_run(self, queries: Queries, run: Run, texts: Mapping[str, str]) -> Run:
        """Re-score every (query, candidate) of ``run``; candidates without text are dropped."""
        keys = [(q, d) for q in run if q in queries for d in run[q] if d in texts]
        scores = self.score([(queries[q], texts[d]) for q, d in keys])
        out = Run({q: {} for q in run})
        for (q, d), s in zip(keys, scores.tolist(), strict=True):
            out[q][d] = s
        return out


def load_cross_encoder(path: str, max_length: int | None = None) -> Any:
    local = Path(path).exists()  # local_files_only: no hub lookup, and no HF_HUB_OFFLINE
    from sentence_transformers import CrossEncoder

    try:
        return CrossEncoder(path, max_length=max_length, local_files_only=local)
    except (OSError, ValueError) as exc:
        where = "local path" if local else "name (no such local path, and no hub reachable?)"
        raise CormorantError(f"cannot load cross-encoder {path!r} as a {where}:"
                             f" {str(exc).splitlines()[0]}") from None


class RerankStage(QueryStage):
    """Re-scores the ranking before it with a cross-encoder (``rerank``), reading each
    candidate's text from the flow's documents. It holds no index.

    Example:
        >>> pipe = build_pipeline("dense % 50 >> rerank(model=models/ce)", corpus)  # doctest: +SKIP
    """

    name: ClassVar[str] = "rerank"
    usage: ClassVar[str] = "bm25 % 100 >> rerank(model=DIR)"
    PARAMS: ClassVar[Params] = Params(
        Param("model", str, None, "cross-encoder folder (train one: cormorant train --kind"
              " cross-encoder)", required=True),
        Param("batch_size", int, 32, "pairs per batch", low=1),
        Param("max_length", int, None, "tokens per (query, document) pair (default: the"
              " model's)", nullable=True, low=1),
        Param("backend", str, "torch", "runs the cross-encoder: torch, onnx or openvino",
              choices=BACKENDS),
        Param("quantize", str, "none", "cross-encoder precision on onnx/openvino: none, int8"
              " or int8-static", choices=QUANTIZATIONS),
    ) + window_params(passages_when=QUERY)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.scorer = CrossEncoderScorer(self.settings["model"], self.settings["batch_size"],
                                         self.settings["max_length"],
                                         runtime=Runtime(self.settings["backend"],
                                                         self.settings["quantize"]))
        self.splitter = splitter_of(self.scorer, self.settings["passages"], self.name)
        self.query_splitter = splitter_of(self.scorer, self.settings["query_passages"],
                                          self.name, "query_passages", queries=True)

    @classmethod
    def identity(cls, settings: dict[str, Any]) -> dict[str, Any]:
        return {**settings, "fingerprint": model_fingerprint(str(settings["model"]))}

    def transform(self, flow: Flow) -> Flow:
        run = flow.ranking(self)
        if self.splitter is None and self.query_splitter is None:
            texts = flow.texts((d for docs in run.values() for d in docs), self)
            return flow.with_run(self.scorer.score_run(flow.queries, run, texts))
        records = flow.records((d for docs in run.values() for d in docs), self)

        def rescore(queries: Queries, candidates: Run) -> Run:
            return self.score_windows(queries, candidates, records)

        if self.query_splitter is None:
            return flow.with_run(rescore(flow.queries, run))
        return flow.with_run(rescore_query_windows(self.query_splitter, flow.queries, run,
                                                   self.settings["query_aggregate"], rescore))

    def score_windows(self, queries: Queries, run: Run, records: Mapping[str, Document]
                      ) -> Run:
        """Each candidate scored from its windows (``passages``), title before each, their
        scores aggregated (``aggregate``: MaxP, FirstP, SumP as Dai & Callan 2019); without
        ``passages`` a candidate is one text, read up to ``max_length``."""
        windows = {d: (self.splitter.split(doc.text, doc.title) if self.splitter is not None
                       else [doc.contents]) for d, doc in records.items()}
        keys = [(q, d, w) for q in run if q in queries for d in run[q] if d in windows
                for w in windows[d]]
        scores = self.scorer.score([(queries[q], w) for q, d, w in keys]).tolist()
        out = Run({q: {} for q in run})
        by_query: dict[str, list[tuple[str, float]]] = {}
        for (q, d, _), score in zip(keys, scores, strict=True):
            by_query.setdefault(q, []).append((d, score))
        for q, pairs in by_query.items():
            out[q] = aggregate_scores(pairs, self.settings["aggregate"])
        return out
