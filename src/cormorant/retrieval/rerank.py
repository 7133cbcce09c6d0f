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

from cormorant.errors import CormorantError, PipelineError
from cormorant.pipeline import DEFAULT_DEPTH
from cormorant.retrieval.base import Retriever
from cormorant.retrieval.encoders import model_fingerprint
from cormorant.types import Corpus, Queries, Run

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
                 show_progress: bool = False) -> None:
        self.path = str(model)
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._model = load_cross_encoder(self.path, max_length)
        self.fingerprint = model_fingerprint(self.path)

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


class RerankStage(Retriever):
    """Re-scores the candidates of the stage before it with a cross-encoder (``rerank``).

    Example:
        >>> pipe = build_pipeline("dense % 50 >> rerank(model=models/ce)", corpus)  # doctest: +SKIP
    """

    name: ClassVar[str] = "rerank"

    def __init__(self, scorer: CrossEncoderScorer, texts: Mapping[str, str],
                 params: dict[str, Any], depth: int = DEFAULT_DEPTH) -> None:
        super().__init__(params, depth)
        self.scorer, self.texts = scorer, texts

    @classmethod
    def build(cls, corpus: Corpus, *, model: str | None = None, batch_size: int = 32,
              max_length: int | None = None, depth: int = DEFAULT_DEPTH) -> RerankStage:
        texts = {d.doc_id: d.contents for d in corpus}
        return cls(_scorer(model, batch_size, max_length), texts,
                   _params(model, max_length), depth)

    @classmethod
    def identity(cls, params: dict[str, Any]) -> dict[str, Any]:
        return {**params, "fingerprint": model_fingerprint(str(params.get("model")))}

    def retrieve(self, queries: Queries, k: int) -> Run:
        raise PipelineError("rerank re-scores candidates; put a retriever before it,"
                            " e.g. 'bm25 % 100 >> rerank(model=PATH)'")

    def rescore(self, queries: Queries, candidates: Run) -> Run:
        return self.scorer.score_run(queries, candidates, self.texts)

    def save(self, directory: Path) -> dict[str, Any]:
        return {"model": self.scorer.path, "fingerprint": self.scorer.fingerprint}

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], *, model: str | None = None,
             batch_size: int = 32, max_length: int | None = None,
             depth: int = DEFAULT_DEPTH) -> RerankStage:
        from cormorant.index.docstore import FILENAME, DocStore

        scorer = _scorer(model or meta["model"], batch_size, max_length)
        if scorer.fingerprint != meta.get("fingerprint"):
            log.warning("cross-encoder %s differs from the one this index was built with",
                        scorer.path)
        return cls(scorer, _StoreTexts(DocStore(directory.parent / FILENAME)),
                   _params(scorer.path, max_length), depth)


class _StoreTexts(Mapping[str, str]):
    """Document contents read on demand from an index's document store."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def __getitem__(self, doc_id: str) -> str:
        doc = self.store.get(doc_id)
        if doc is None:
            raise KeyError(doc_id)
        return doc.contents

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self.store.get(doc_id) is not None

    def __iter__(self):  # noqa: ANN204
        raise TypeError("document store texts are looked up by id, not iterated")

    def __len__(self) -> int:
        return len(self.store)


def _scorer(model: str | None, batch_size: int, max_length: int | None) -> CrossEncoderScorer:
    if not model:
        raise PipelineError("rerank needs model=PATH (a cross-encoder; train one with"
                            " 'cormorant train --kind cross-encoder')")
    return CrossEncoderScorer(str(model), batch_size=batch_size, max_length=max_length)


def _params(model: str | None, max_length: int | None) -> dict[str, Any]:
    return {k: v for k, v in {"model": model, "max_length": max_length}.items() if v is not None}
