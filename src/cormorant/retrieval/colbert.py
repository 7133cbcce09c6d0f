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

A PyLate checkpoint (a sentence-transformers folder: the transformer at the root, a bias-free
``Dense`` module holding ``linear.weight``, ``config_sentence_transformers.json`` naming the
``[Q] ``/``[D] `` prefixes, the lengths and the skiplist) is read into the same conventions:
PyLate also puts the prefix token after [CLS], pads queries with [MASK] and skips punctuation
in documents only, so one encoder serves both layouts. ``cormorant train --kind
late-interaction`` writes the Stanford layout (:meth:`ColBERTEncoder.save`).
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import numpy as np

from cormorant.errors import CormorantError
from cormorant.retrieval.encoders import model_fingerprint, quiet_transformers

PROJECTION = "linear.weight"
PYLATE_SETTINGS = "config_sentence_transformers.json"
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
    """True for a local folder whose weights carry ColBERT's ``linear`` projection (Stanford
    layout) or that PyLate wrote (:func:`is_pylate_checkpoint`)."""
    root = Path(path)
    if is_pylate_checkpoint(root):
        return True
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


def is_pylate_checkpoint(root: Path) -> bool:
    """True for a sentence-transformers folder with PyLate's query/document prefixes."""
    settings = root / PYLATE_SETTINGS
    if not (root / "modules.json").is_file() or not settings.is_file():
        return False
    try:
        return "query_prefix" in json.loads(settings.read_text())
    except ValueError:
        return False


class ColBERTEncoder:
    """Token vectors of a ColBERT checkpoint (a ``MultiVectorEncoder``).

    The pieces are public because training scores with them (``cormorant train --kind
    late-interaction``): :meth:`tokenize`, :meth:`vectors` and :meth:`kept` are exactly what
    search encodes with, so a trained model is scored in training as ``chamfer`` scores it.

    Example:
        >>> encoder = ColBERTEncoder("checkpoints/colbertv2.0")  # doctest: +SKIP
        >>> encoder.encode_queries(["vitamin d"])[0].shape  # doctest: +SKIP
        (32, 128)
    """

    def __init__(self, path: str, batch_size: int = 32, device: str | None = None,
                 doc_maxlen: int | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        from cormorant.retrieval.tilde import encoder_folder

        weight, config = read_checkpoint(Path(path))
        folder = str(encoder_folder(path))  # a PyLate folder names its transformer's
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        with quiet_transformers():  # it would report linear.weight as an unexpected key
            bert = AutoModel.from_pretrained(folder, local_files_only=True)
        if doc_maxlen is not None:
            config["doc_maxlen"] = doc_maxlen
        self.assemble(path, tokenizer, bert, weight, config, batch_size, device)

    @classmethod
    def from_parts(cls, name: str, tokenizer: Any, bert: Any, weight: Any,
                   config: dict[str, Any], device: str | None = None) -> ColBERTEncoder:
        """An encoder from a tokenizer, a transformer and a projection (dim x hidden) that no
        folder holds yet: how training starts from a plain encoder.

        Example:
            >>> encoder = ColBERTEncoder.from_parts("start", tokenizer, bert, torch.zeros(128, 384),
            ...                                     dict(DEFAULTS))  # doctest: +SKIP
        """
        encoder = cls.__new__(cls)
        encoder.assemble(name, tokenizer, bert, weight, {**DEFAULTS, **config}, 32, device)
        return encoder

    def assemble(self, name: str, tokenizer: Any, bert: Any, weight: Any,
                 config: dict[str, Any], batch_size: int, device: str | None) -> None:
        """Set the encoder up from its parts (both constructors end here)."""
        import torch

        self.name, self.path, self.batch_size = name, name, batch_size
        self.config = config
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = tokenizer
        self.bert = bert.to(self.device).eval()
        weight = weight.float()
        self.linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.linear.weight.data.copy_(weight)
        self.linear.to(self.device).eval()
        self.dim = int(weight.shape[0])
        self.fingerprint = model_fingerprint(name) if Path(name).is_dir() else name
        vocab = self.tokenizer.get_vocab()
        self._markers = {"query": marker_id(vocab, config["query_token_id"], name),
                         "document": marker_id(vocab, config["doc_token_id"], name)}
        skipped = config.get("skiplist") or list(string.punctuation)
        self._skip = sorted({vocab[c] for c in skipped if c in vocab}) \
            if self.config["mask_punctuation"] else []

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

        ids, mask = self.tokenize(texts, side)
        with torch.inference_mode():
            vectors = self.vectors(ids, mask)
        keep = self.kept(ids, mask, side)
        return [row[k].cpu().numpy() for row, k in zip(vectors, keep, strict=True)]

    def vectors(self, ids: Any, mask: Any) -> Any:
        """Every position's projected, L2-normalised vector: (texts x positions x dim). Runs
        under the caller's grad mode (training needs the gradient)."""
        import torch

        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        return torch.nn.functional.normalize(self.linear(hidden).float(), dim=-1)

    def kept(self, ids: Any, mask: Any, side: str) -> Any:
        """Which positions are scored (texts x positions, bool): every position of a query,
        its [MASK]s included (query augmentation); a document's attended positions minus
        the skiplist's punctuation."""
        import torch

        if side == "query":
            return torch.ones_like(ids, dtype=torch.bool)
        keep = mask.bool()
        if self._skip:
            keep &= ~torch.isin(ids, torch.tensor(self._skip, device=ids.device))
        return keep

    def tokenize(self, texts: list[str], side: str) -> tuple[Any, Any]:
        """ColBERT's input (ids, attention mask): a placeholder after [CLS] becomes the
        [Q]/[D] marker; queries are padded to ``query_maxlen`` with [MASK], documents cut to
        ``doc_maxlen``."""
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

    def save(self, path: str | Path) -> None:
        """Write a Stanford-layout checkpoint into the folder ``path`` (created): the
        transformer's config and tokenizer, one ``model.safetensors`` holding its weights
        under its own prefix (``bert.``) beside ``linear.weight``, and ``artifact.metadata``
        with the lengths and markers. :class:`ColBERTEncoder` reads it back.

        Example:
            >>> encoder.save("models/colbert-scifact")  # doctest: +SKIP
        """
        from safetensors.torch import save_file

        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.bert.config.save_pretrained(str(root))
        self.tokenizer.save_pretrained(str(root))
        prefix = self.bert.base_model_prefix or "bert"
        state = {f"{prefix}.{k}": v.detach().cpu().contiguous()
                 for k, v in self.bert.state_dict().items()}
        state[PROJECTION] = self.linear.weight.detach().cpu().contiguous()
        save_file(state, str(root / "model.safetensors"))
        metadata = {k: self.config[k] for k in DEFAULTS}
        (root / "artifact.metadata").write_text(json.dumps({**metadata, "dim": self.dim},
                                                            indent=2))


def marker_id(vocab: dict[str, int], marker: str, name: str) -> int:
    """The token id of a marker: as named (PyLate adds its prefix "[Q] ", trailing space
    included, as one token) or stripped ("[Q]"), or a one-line error.

    Example:
        >>> marker_id({"[Q] ": 7}, "[Q] ", "model")
        7
    """
    for candidate in (marker, marker.strip()):
        if candidate in vocab:
            return vocab[candidate]
    raise CormorantError(f"{name}: the marker {marker!r} is not in the tokenizer's vocabulary")


def read_checkpoint(root: Path) -> tuple[Any, dict[str, Any]]:
    """The projection weight (dim x hidden) and the settings of a Stanford or PyLate
    checkpoint, or a one-line error."""
    if is_pylate_checkpoint(root):
        return _pylate(root)
    state = _state_dict(root)
    if PROJECTION not in state:
        raise CormorantError(f"{root}: not a ColBERT checkpoint (no {PROJECTION} in its weights)")
    return state[PROJECTION], {**DEFAULTS, **_metadata(root)}


def _pylate(root: Path) -> tuple[Any, dict[str, Any]]:
    """A PyLate folder's projection (its bias-free Dense module) and settings."""
    modules = json.loads((root / "modules.json").read_text())
    dense = [m for m in modules if m.get("type", "").endswith("Dense")]
    if len(dense) != 1:
        raise CormorantError(f"{root}: a PyLate checkpoint needs exactly one Dense module in"
                             f" modules.json, found {len(dense)}")
    state = _state_dict(root / dense[0]["path"])
    if PROJECTION not in state or "linear.bias" in state:
        raise CormorantError(f"{root / dense[0]['path']}: expected a bias-free {PROJECTION}"
                             " (PyLate's projection)")
    raw = json.loads((root / PYLATE_SETTINGS).read_text())
    if raw.get("do_query_expansion", True) is False:
        raise CormorantError(f"{root}: do_query_expansion false is not supported (queries are"
                             " always padded with [MASK])")
    config = {**DEFAULTS,
              "query_token_id": str(raw["query_prefix"]),
              "doc_token_id": str(raw.get("document_prefix", "[D] ")),
              "query_maxlen": int(raw.get("query_length", DEFAULTS["query_maxlen"])),
              "doc_maxlen": int(raw.get("document_length", DEFAULTS["doc_maxlen"])),
              "attend_to_mask_tokens": bool(raw.get("attend_to_expansion_tokens", False))}
    if raw.get("skiplist_words"):
        config["skiplist"] = list(raw["skiplist_words"])
    return state[PROJECTION], config


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
