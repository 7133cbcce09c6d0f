"""ColBERT checkpoints as token encoders: the BERT body, its linear projection, its conventions.

A ColBERT checkpoint (the Hugging Face format of stanford-futuredata/ColBERT, e.g.
colbertv2.0) is a BERT folder whose weights also hold ``linear.weight`` (dim x hidden, no
bias), optionally with ``artifact.metadata`` carrying the settings it was trained with. Its
encoding conventions, which a faithful reader must follow:

- queries: ``[CLS] [Q] tokens ... [SEP]`` padded to ``query_maxlen`` with ``[MASK]`` (query
  augmentation); every position is kept, masks included, because the masks learn to act as
  soft query expansion;
- documents: ``[CLS] [D] tokens ... [SEP]`` truncated to ``doc_maxlen``; padding and
  punctuation tokens are dropped (the skiplist), the markers kept;
- the markers ``[Q]``/``[D]`` are the vocabulary's ``[unused0]``/``[unused1]``;
- every kept vector is projected by ``linear`` and L2-normalised.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cormorant.errors import CormorantError
from cormorant.retrieval.encoders import model_fingerprint

PROJECTION = "linear.weight"
DEFAULTS = {"query_maxlen": 32, "doc_maxlen": 180, "query_token_id": "[unused0]",
            "doc_token_id": "[unused1]", "attend_to_mask_tokens": False, "mask_punctuation": True}


def _weight_files(root: Path) -> list[Path]:
    return [p for name in ("model.safetensors", "pytorch_model.bin") if (p := root / name).is_file()]


def _state_dict(root: Path) -> dict[str, Any]:
    files = _weight_files(root)
    if not files:
        return {}
    if files[0].suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(files[0]))
    import torch

    return torch.load(files[0], map_location="cpu", weights_only=True)


def is_colbert_checkpoint(path: str) -> bool:
    """True for a local folder whose weights carry ColBERT's ``linear`` projection."""
    root = Path(path)
    if not root.is_dir() or not (root / "config.json").is_file():
        return False
    if (root / "artifact.metadata").is_file():
        return True
    files = _weight_files(root)
    if not files:
        return False
    if files[0].suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(files[0]), framework="pt") as handle:
            return PROJECTION in handle.keys()  # noqa: SIM118 (safe_open has no __contains__)
    return PROJECTION in _state_dict(root)


class ColBERTEncoder:
    """Token vectors of a ColBERT checkpoint (a ``MultiVectorEncoder``).

    Example:
        >>> encoder = ColBERTEncoder("checkpoints/colbertv2.0")  # doctest: +SKIP
        >>> encoder.encode_queries(["vitamin d"])[0].shape  # doctest: +SKIP
        (32, 128)
    """

    def __init__(self, path: str, batch_size: int = 32, device: str | None = None,
                 doc_maxlen: int | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        root = Path(path)
        state = _state_dict(root)
        if PROJECTION not in state:
            raise CormorantError(f"{path}: not a ColBERT checkpoint (no {PROJECTION} in its weights)")
        self.name, self.path, self.batch_size = path, path, batch_size
        self.config = {**DEFAULTS, **_metadata(root)}
        if doc_maxlen is not None:
            self.config["doc_maxlen"] = doc_maxlen
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        with _quiet_transformers():  # it would report linear.weight as an unexpected key
            bert = AutoModel.from_pretrained(path, local_files_only=True)
        self.bert = bert.to(self.device).eval()
        weight = state[PROJECTION].float()
        self.linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.linear.weight.data.copy_(weight)
        self.linear.to(self.device).eval()
        self.dim = int(weight.shape[0])
        self.fingerprint = model_fingerprint(path)
        vocab = self.tokenizer.get_vocab()
        self._markers = {"query": vocab[self.config["query_token_id"]],
                         "document": vocab[self.config["doc_token_id"]]}
        self._skip = {vocab[c] for c in string.punctuation if c in vocab} \
            if self.config["mask_punctuation"] else set()

    @property
    def settings(self) -> dict[str, Any]:
        """What determines the vectors: recorded in index metadata and cache keys."""
        return {"model": self.name, "fingerprint": self.fingerprint, "dim": self.dim,
                "kind": "colbert", "query_maxlen": self.config["query_maxlen"],
                "doc_maxlen": self.config["doc_maxlen"]}

    @property
    def max_length(self) -> int:
        """Tokens a document keeps, special tokens and the [D] marker included."""
        return int(self.config["doc_maxlen"])

    @property
    def query_max_length(self) -> int:
        return int(self.config["query_maxlen"])

    @property
    def special_tokens(self) -> int:
        """Tokens added to every text: the tokenizer's own and the [Q]/[D] marker (which
        stands where the ". " prefix was tokenized)."""
        return int(self.tokenizer.num_special_tokens_to_add()) + 1

    def encode_queries(self, texts: list[str]) -> list[np.ndarray]:
        return self._encode(texts, "query")

    def encode_documents(self, texts: list[str]) -> list[np.ndarray]:
        return self._encode(texts, "document")

    def _encode(self, texts: list[str], side: str) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch_size):
            out.extend(self._batch(texts[start:start + self.batch_size], side))
        return out

    def _batch(self, texts: list[str], side: str) -> list[np.ndarray]:
        import torch

        ids, mask = self._tokenize(texts, side)
        with torch.inference_mode():
            hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            vectors = torch.nn.functional.normalize(self.linear(hidden).float(), dim=-1)
        if side == "query":  # query augmentation: every position, [MASK]s included
            return [row.cpu().numpy() for row in vectors]
        keep = mask.bool()
        if self._skip:
            keep &= ~torch.isin(ids, torch.tensor(sorted(self._skip), device=ids.device))
        return [row[k].cpu().numpy() for row, k in zip(vectors, keep, strict=True)]

    def _tokenize(self, texts: list[str], side: str) -> tuple[Any, Any]:
        """ColBERT's input: a placeholder after [CLS] becomes the [Q]/[D] marker."""
        import torch

        query = side == "query"
        limit = self.config["query_maxlen" if query else "doc_maxlen"]
        batch = self.tokenizer([". " + t for t in texts], padding="max_length" if query
                               else "longest", truncation=True, max_length=limit,
                               return_tensors="pt")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        ids[:, 1] = self._markers[side]
        if query:
            ids[ids == self.tokenizer.pad_token_id] = self.tokenizer.mask_token_id
            if self.config["attend_to_mask_tokens"]:
                mask = torch.ones_like(mask)
        return ids.to(self.device), mask.to(self.device)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _metadata(root: Path) -> dict[str, Any]:
    """The checkpoint's own settings (``artifact.metadata``), where it has them."""
    file = root / "artifact.metadata"
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except ValueError as exc:
        raise CormorantError(f"{file}: not JSON ({exc})") from None
    return {k: data[k] for k in DEFAULTS if k in data}
