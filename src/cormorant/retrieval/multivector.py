"""Token-level (multi-vector, ColBERT-style) encoders.

A ``MultiVectorEncoder`` returns one matrix per text: a row per token, L2-normalised, with
padding and the tokenizer's special tokens ([CLS], [SEP], ...) removed. Any Hugging Face
encoder saved as a sentence-transformers folder works (all-MiniLM-L6-v2's token embeddings by
default); ColBERT checkpoints, with their linear projection and their query/document
conventions, through :class:`~cormorant.retrieval.colbert.ColBERTEncoder`.
:func:`load_token_encoder` picks the right one for a path.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cormorant.errors import CormorantError
from cormorant.retrieval.backends import Runtime
from cormorant.retrieval.encoders import (
    DEFAULT_MODEL,
    TokenizedModel,
    model_fingerprint,
    resolve_model,
)


@runtime_checkable
class MultiVectorEncoder(Protocol):
    """Embeds each text as a (tokens x dim) float32 matrix.

    ``settings`` (JSON-able) and ``fingerprint`` say what determines the vectors: indexes and
    token caches record them.
    """

    dim: int
    fingerprint: str

    @property
    def settings(self) -> dict[str, Any]: ...

    def encode_queries(self, texts: list[str]) -> list[np.ndarray]: ...

    def encode_documents(self, texts: list[str]) -> list[np.ndarray]: ...


class TokenEncoder(TokenizedModel):
    """Token vectors of a transformer encoder, batched, on CUDA when torch has it.

    Example:
        >>> encoder = TokenEncoder()  # all-MiniLM-L6-v2 token embeddings  # doctest: +SKIP
        >>> [m.shape for m in encoder.encode_queries(["vitamin d"])]  # doctest: +SKIP
        [(3, 384)]
    """

    def __init__(self, model: str | None = None, batch_size: int = 32,
                 max_length: int | None = None, device: str | None = None,
                 runtime: Runtime | None = None) -> None:
        from cormorant.retrieval.backends import accelerate
        from cormorant.retrieval.encoders import load_sentence_transformer

        self.name = model or DEFAULT_MODEL
        self.path = resolve_model(model)
        self.batch_size = batch_size
        self._model = load_sentence_transformer(self.path, device)
        if max_length is not None:
            self._model.max_seq_length = max_length
        dimension = getattr(self._model, "get_embedding_dimension", None) \
            or self._model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.fingerprint = model_fingerprint(self.path)
        self.runtime = runtime or Runtime()
        accelerate(self._model, self.runtime, self.fingerprint)
        self._special = sorted(set(self._model.tokenizer.all_special_ids))

    @property
    def settings(self) -> dict[str, Any]:
        """What determines the vectors: recorded in index metadata and cache keys."""
        return {"model": self.name, "fingerprint": self.fingerprint, "dim": self.dim,
                "max_length": self._model.max_seq_length, "kind": "tokens",
                **self.runtime.settings}

    def encode_queries(self, texts: list[str]) -> list[np.ndarray]:
        return self._encode(texts)

    def encode_documents(self, texts: list[str]) -> list[np.ndarray]:
        return self._encode(texts)

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        import torch

        out: list[np.ndarray] = []
        special = torch.tensor(self._special, device=self._model.device)
        for start in range(0, len(texts), self.batch_size):
            features = self._model.preprocess(texts[start:start + self.batch_size])
            features = {k: v.to(self._model.device) if hasattr(v, "to") else v
                        for k, v in features.items()}
            with torch.inference_mode():
                tokens = self._model.forward(features)["token_embeddings"]
            keep = features["attention_mask"].bool() & ~torch.isin(features["input_ids"], special)
            tokens = torch.nn.functional.normalize(tokens.float(), dim=-1)
            for row, mask in zip(tokens, keep, strict=True):
                out.append(row[mask].cpu().numpy().astype(np.float32))
        return out


def load_token_encoder(model: str | None = None, batch_size: int = 32,
                       max_length: int | None = None, device: str | None = None,
                       runtime: Runtime | None = None) -> Any:
    """The token encoder for ``model``: a ColBERT checkpoint's own, else :class:`TokenEncoder`.

    Example:
        >>> load_token_encoder().settings["kind"]  # doctest: +SKIP
        'tokens'
    """
    from cormorant.retrieval.colbert import ColBERTEncoder, is_colbert_checkpoint

    path = resolve_model(model)
    if is_colbert_checkpoint(path):
        if runtime is not None and runtime != Runtime():
            raise CormorantError("ColBERT checkpoints run on backend=torch only")
        return ColBERTEncoder(path, batch_size=batch_size, device=device, doc_maxlen=max_length)
    return TokenEncoder(model, batch_size=batch_size, max_length=max_length, device=device,
                        runtime=runtime)



class SharedQueries:
    """Query token matrices handed from one shard to the next: the shards of a sharded
    ``chamfer``/``muvera`` stage each hold their own copy of the same encoder, and each is
    asked to encode the same batch of queries; with one ``SharedQueries`` between them (set by
    the sharded index when it opens the stage), the first encodes it and the other
    ``uses - 1`` take its matrices.

    Keyed by the encoder's ``settings`` (its model fingerprint among them) and the batch's
    texts in order, so a hit is a batch encoded exactly as asked (the same texts padded
    together): the matrices encoding again would give, bit for bit. An entry is dropped once
    every shard has taken it, so the next search of the same queries encodes them again
    (timings stay honest); at most ``batches`` entries wait at once. Thread-safe.

    Example:
        >>> shared = SharedQueries(uses=2)
        >>> first = shared.encode(encoder, ["vitamin d"])  # shard 0 encodes  # doctest: +SKIP
        >>> shared.encode(encoder, ["vitamin d"]) is first  # shard 1 takes it  # doctest: +SKIP
        True
    """

    def __init__(self, uses: int, batches: int = 8) -> None:
        self.uses, self.batches = uses, batches
        self.waiting: OrderedDict[tuple[str, tuple[str, ...]], list[Any]] = OrderedDict()
        self.lock = threading.Lock()

    def encode(self, encoder: MultiVectorEncoder, texts: list[str]) -> list[np.ndarray]:
        """``encoder.encode_queries(texts)``, or the matrices another shard encoded for the
        same call. They are shared between shards: read them, never write into them."""
        key = (json.dumps(encoder.settings, sort_keys=True, default=str), tuple(texts))
        with self.lock:
            entry = self.waiting.get(key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self.waiting[key]
                return entry[0]  # type: ignore[no-any-return]
        matrices = encoder.encode_queries(texts)  # outside the lock: shards may run in parallel
        if self.uses > 1:
            with self.lock:
                self.waiting[key] = [matrices, self.uses - 1]
                while len(self.waiting) > self.batches:  # a search that failed half-way
                    self.waiting.popitem(last=False)
        return matrices
