"""The one protocol every language-model backend implements, and its decoding settings.

A backend turns prompts into texts: ``generate(prompts, params) -> texts``. Backends are
registered under the entry-point group ``cormorant.llms`` and chosen by a spec string
``"<backend>:<model>"`` (see :func:`cormorant.llm.load_llm`).

Example:
    >>> params = GenerationParams(max_new_tokens=16, stop=("\\n",))
    >>> params.greedy
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from cormorant.errors import CormorantError


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings. ``temperature == 0`` means greedy decoding (deterministic).

    Sampled decoding is made repeatable by ``seed``: every prompt is sampled with its own
    generator seeded from ``seed`` (and, where the backend allows, the prompt), so a prompt's
    text does not depend on which other prompts shared its batch.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise CormorantError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise CormorantError("temperature must be >= 0, top_p in (0, 1], top_k >= 0;"
                                 f" got {self.temperature}, {self.top_p}, {self.top_k}")
        # A list from YAML/JSON would make the dataclass unhashable and its key unstable.
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def with_(self, **changes: Any) -> GenerationParams:
        """A copy with ``changes`` applied: ``params.with_(seed=3)``."""
        return replace(self, **changes)

    def key(self) -> dict[str, Any]:
        """What decides the output, for cache keys. Sampling knobs are dropped when greedy:
        they change nothing then, and keeping them would split the cache."""
        values = asdict(self)
        values["stop"] = list(self.stop)
        if self.greedy:
            for name in ("top_p", "top_k", "seed"):
                values.pop(name)
        return values


@runtime_checkable
class LanguageModel(Protocol):
    """A text generator.

    ``identity`` names the model for cache keys: a content fingerprint for local weights, the
    endpoint and model name for a server.
    """

    name: str

    @property
    def identity(self) -> str: ...

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[str]: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first stop string (the stop string itself dropped).

    Example:
        >>> cut_at_stop("cats dogs\\nQuery: x", ["\\n"])
        'cats dogs'
    """
    end = len(text)
    for s in stop:
        if s and (i := text.find(s)) >= 0:
            end = min(end, i)
    return text[:end]
