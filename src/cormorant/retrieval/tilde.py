"""TILDEv2's model: one learned weight per passage token, and queries that are only tokenized.

Zhuang & Zuccon (2021), "Fast Passage Re-ranking with Contextualized Exact Term Matching and
Efficient Passage Expansion". A passage goes through a BERT-style encoder; a linear layer and a
ReLU turn each token's last hidden state into one non-negative weight. A query is never
encoded: score(q, d) = sum over the query's tokens t of max weight of t in d (0 when d has no
t). Choices, following the authors' code (ielab/TILDE, ``modelingv2.py`` / ``inferencev2.py``):

- queries are tokenized without special tokens, repeated tokens kept (a token twice in the
  query counts twice), and English stop words dropped, as the authors' re-ranker does (their
  training kept them; we drop them in training too, so the model is scored as it is trained);
- a passage keeps, per token id, the largest weight of its occurrences (the paper's max
  pooling); special tokens, padding and stop words are not stored (no query has them), so a
  passage is one sparse row over the vocabulary: ``documents x vocabulary`` is a CSR matrix,
  an impact index whose search is one sparse product;
- the head is fresh (the paper's ``tok_proj``) over any encoder folder: a sentence-transformers
  folder (all-MiniLM-L6-v2) or a plain BERT one.

A checkpoint (what ``cormorant train --kind tildev2`` writes) is the encoder saved with
``save_pretrained``, its tokenizer, and ``tildev2_head.safetensors`` beside ``tildev2.json``.

Example:
    >>> model = TildeModel.load("models/tildev2-scifact")  # doctest: +SKIP
    >>> weights = model.document_matrix(["Vitamin D deficiency and depression."])  # doctest: +SKIP
    >>> (model.query_matrix(["vitamin d"]) @ weights.T).toarray()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch  # this module is imported only where a model runs (the stage imports it lazily)

from cormorant.errors import CormorantError

MARKER = "tildev2.json"
HEAD = "tildev2_head.safetensors"
DOCUMENT_MAX_LENGTH = 256  # tokens kept per passage when the model gives no shorter length


def is_tilde_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :meth:`TildeModel.save`."""
    return (Path(path) / MARKER).is_file()


def encoder_folder(path: str | Path) -> Path:
    """Where the transformer's weights are in a model folder: a sentence-transformers folder
    names its Transformer module's subfolder in ``modules.json``; a plain one is the folder."""
    root = Path(path)
    modules = root / "modules.json"
    if not modules.is_file():
        return root
    for module in json.loads(modules.read_text()):
        if module.get("type", "").endswith("Transformer"):
            return root / module.get("path", "")
    return root


def load_transformer(path: str, purpose: str) -> tuple[Any, Any]:
    """(transformer, tokenizer) of the encoder in ``path`` (a sentence-transformers or BERT
    folder, or a model name), or a one-line CormorantError naming ``purpose``.

    Example:
        >>> body, tokenizer = load_transformer("all-MiniLM-L6-v2", "tildev2")  # doctest: +SKIP
    """
    from transformers import AutoModel, AutoTokenizer

    if not Path(path).exists() and (Path(path).is_absolute() or path.startswith(".")):
        raise CormorantError(f"cannot load encoder {path!r} for {purpose}: no such folder")
    from cormorant.retrieval.encoders import quiet_transformers

    folder = encoder_folder(path)
    try:
        with quiet_transformers():
            return (AutoModel.from_pretrained(str(folder)),
                    AutoTokenizer.from_pretrained(str(folder)))
    except (OSError, ValueError) as exc:
        raise CormorantError(f"cannot load encoder {path!r} for {purpose}:"
                             f" {str(exc).splitlines()[0]}") from None


def stop_ids(tokenizer: Any) -> frozenset[int]:
    """Token ids of English stop words that are whole tokens (bm25s's list, the one ``bm25``
    drops): never query tokens, never stored."""
    from cormorant.retrieval.bm25 import import_bm25s

    words = import_bm25s().stopwords.STOPWORDS_EN
    ids = [tokenizer.convert_tokens_to_ids(w) for w in words]
    return frozenset(i for i in ids if i is not None and i != tokenizer.unk_token_id)


class QueryTokenizer:
    """Queries as token-count rows over the vocabulary: the whole query side of TILDEv2.

    Example:
        >>> tokens = QueryTokenizer.load("models/tildev2-scifact")  # doctest: +SKIP
        >>> tokens.matrix(["vitamin d and depression"]).nnz  # doctest: +SKIP
        3
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.dropped = stop_ids(tokenizer) | set(tokenizer.all_special_ids)
        # A Rust tokenizer raises "Already borrowed" when threads (the service) share it.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path) -> QueryTokenizer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(encoder_folder(path))))

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's kept token ids, in order, repeats kept."""
        with self._lock:
            found = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [[t for t in row if t not in self.dropped] for row in found]

    def matrix(self, texts: list[str]) -> Any:
        """A CSR matrix (texts x vocabulary) of token counts."""
        from scipy import sparse

        rows = self.ids(texts)
        indptr = np.cumsum([0, *(len(r) for r in rows)])
        flat = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=int(indptr[-1]))
        counts = sparse.csr_matrix((np.ones(len(flat), np.float32), flat, indptr),
                                   shape=(len(rows), self.vocab_size))
        counts.sum_duplicates()  # a repeated token counts as many times as it occurs
        return counts


def max_rows(ids: np.ndarray, weights: np.ndarray, keep: np.ndarray, vocab: int) -> Any:
    """A CSR row per passage: for each kept token id, its largest weight.

    ``ids``, ``weights`` and ``keep`` are (passages x positions).
    """
    from scipy import sparse

    indptr, indices, data = [0], [], []
    for row_ids, row_weights, row_keep in zip(ids, weights, keep, strict=True):
        tokens, values = row_ids[row_keep], row_weights[row_keep]
        order = np.lexsort((-values, tokens))  # by token id, largest weight first
        tokens, values = tokens[order], values[order]
        first = np.ones(len(tokens), bool)
        first[1:] = tokens[1:] != tokens[:-1]
        indices.append(tokens[first])
        data.append(values[first])
        indptr.append(indptr[-1] + int(first.sum()))
    return sparse.csr_matrix(
        (np.concatenate(data or [np.zeros(0)]).astype(np.float32),
         np.concatenate(indices or [np.zeros(0, np.int64)]), np.array(indptr)),
        shape=(len(ids), vocab))


class TildeModel(torch.nn.Module):
    """Encoder + ``Linear(hidden, 1)`` + ReLU: one non-negative weight per passage token.

    Example:
        >>> model = TildeModel.from_encoder("all-MiniLM-L6-v2")  # a fresh head  # doctest: +SKIP
        >>> model.save("models/tildev2-untrained")  # doctest: +SKIP
    """

    def __init__(self, body: Any, tokenizer: Any, max_length: int) -> None:
        super().__init__()
        self.body = body
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.head = torch.nn.Linear(body.config.hidden_size, 1)
        self.queries = QueryTokenizer(tokenizer)

    @classmethod
    def from_encoder(cls, path: str, seed: int = 42) -> TildeModel:
        """A fresh head on the encoder in ``path`` (a sentence-transformers or BERT folder),
        initialised as BERT initialises its linear layers (normal, std 0.02; zero bias)."""
        body, tokenizer = load_transformer(path, "tildev2")
        torch.manual_seed(seed)
        model = cls(body, tokenizer, _length(body, encoder_folder(path)))
        torch.nn.init.normal_(model.head.weight, std=getattr(body.config, "initializer_range",
                                                             0.02))
        torch.nn.init.zeros_(model.head.bias)
        return model

    @classmethod
    def load(cls, path: str | Path) -> TildeModel:
        """A checkpoint written by :meth:`save`."""
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        root = Path(path)
        if not is_tilde_checkpoint(root):
            raise CormorantError(f"{path} is not a tildev2 checkpoint (no {MARKER}); train one"
                                 " with: cormorant train --kind tildev2")
        spec = json.loads((root / MARKER).read_text())
        model = cls(AutoModel.from_pretrained(str(root)), AutoTokenizer.from_pretrained(str(root)),
                    int(spec["max_length"]))
        model.head.load_state_dict(load_file(str(root / HEAD)))
        return model.eval()

    def save(self, path: str | Path) -> None:
        """Write the checkpoint into the folder ``path`` (created)."""
        from safetensors.torch import save_file

        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.body.save_pretrained(str(root))
        self.tokenizer.save_pretrained(str(root))
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()},
                  str(root / HEAD))
        (root / MARKER).write_text(json.dumps({"kind": "tildev2", "max_length": self.max_length,
                                               "hidden": self.body.config.hidden_size}))

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        """Token weights (batch x positions), >= 0."""
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return torch.relu(self.head(hidden)).squeeze(-1)

    def tokenize(self, texts: list[str], max_length: int | None = None) -> dict[str, Any]:
        return self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt",
                              max_length=max_length or self.max_length)

    def stored(self, input_ids: Any, attention_mask: Any) -> Any:
        """Which positions a passage keeps: real tokens that are neither special nor stop
        words (what :meth:`QueryTokenizer.ids` keeps of a query)."""
        dropped = torch.tensor(sorted(self.queries.dropped), device=input_ids.device)
        return attention_mask.bool() & ~torch.isin(input_ids, dropped)

    def document_matrix(self, texts: list[str], batch_size: int = 32) -> Any:
        """A CSR matrix (texts x vocabulary) of each passage's max weight per token."""
        from scipy import sparse

        parts = []
        for start in range(0, len(texts), batch_size):
            features = self.tokenize(texts[start:start + batch_size])
            with torch.inference_mode():
                weights = self(features["input_ids"], features["attention_mask"])
            keep = self.stored(features["input_ids"], features["attention_mask"])
            parts.append(max_rows(features["input_ids"].numpy(), weights.float().numpy(),
                                  keep.numpy(), self.queries.vocab_size))
        if not parts:
            return sparse.csr_matrix((0, self.queries.vocab_size), dtype=np.float32)
        return sparse.vstack(parts, format="csr")


def _length(body: Any, folder: Path) -> int:
    """Tokens per passage: the sentence-transformers folder's ``max_seq_length`` if it has one
    (all-MiniLM-L6-v2: 256), else DOCUMENT_MAX_LENGTH, never past the position table."""
    limit = int(getattr(body.config, "max_position_embeddings", DOCUMENT_MAX_LENGTH))
    config = folder / "sentence_bert_config.json"
    wanted = DOCUMENT_MAX_LENGTH
    if config.is_file():
        wanted = int(json.loads(config.read_text()).get("max_seq_length", wanted))
    return min(wanted, limit)


__all__ = ["QueryTokenizer", "TildeModel", "encoder_folder", "is_tilde_checkpoint", "max_rows",
           "stop_ids"]
