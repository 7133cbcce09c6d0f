"""In-process GGUF generation through llama-cpp-python (extra ``[llm-cpp]``; it compiles from
source on machines without a prebuilt wheel: ``make llama-cpp`` builds it once and caches the
wheel)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cormorant.errors import CormorantError, MissingExtraError
from cormorant.llm.base import GenerationParams, cut_at_stop
from cormorant.llm.hf import DEFAULT_MODEL, file_digest, smollm2_gguf


class LlamaCppModel:
    """A GGUF model run by llama.cpp in this process (``llama-cpp`` backend).

    Example:
        >>> lm = LlamaCppModel("smollm2")  # doctest: +SKIP
        >>> lm.generate(["Query: cats\\nKeywords:"], GenerationParams(stop=("\\n",)))  # doctest: +SKIP
    """

    name = "llama-cpp"

    def __init__(self, model: str = DEFAULT_MODEL, n_ctx: int = 2048, threads: int | None = None,
                 chat: bool = False) -> None:
        try:
            from llama_cpp import Llama
        except ModuleNotFoundError as exc:
            raise MissingExtraError("the llama-cpp backend", "llm-cpp", exc) from None
        path = smollm2_gguf() if model in ("", DEFAULT_MODEL) else Path(model)
        if not path.is_file():
            raise CormorantError(f"llama-cpp needs a .gguf file; {path} does not exist")
        self.path, self.chat = path, chat
        self._llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, verbose=False)
        self._identity = f"gguf:{file_digest(path)}:chat={chat}"

    @property
    def identity(self) -> str:
        return self._identity

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        return [self._one(p, params) for p in prompts]

    def _one(self, prompt: str, params: GenerationParams) -> str:
        options = {"max_tokens": params.max_new_tokens, "stop": list(params.stop) or None,
                   "repeat_penalty": params.repetition_penalty, "seed": params.seed,
                   "temperature": params.temperature, "top_p": params.top_p,
                   "top_k": params.top_k if not params.greedy else 1}
        if self.chat:
            out = self._llm.create_chat_completion([{"role": "user", "content": prompt}], **options)
            text = out["choices"][0]["message"]["content"] or ""
        else:
            text = self._llm.create_completion(prompt, **options)["choices"][0]["text"]
        return cut_at_stop(text, params.stop).strip()
