"""A deterministic stand-in model: dry runs of a pipeline with no weights, and tests."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cormorant.llm.base import GenerationParams, cut_at_stop


class EchoModel:
    """Answers each prompt with the words after its last ``:``, or with ``reply`` if given.

    For sampled decoding it appends a word derived from the seed, so different seeds give
    different texts, as a real sampler would. Registered as the ``echo`` backend.

    Example:
        >>> EchoModel().generate(["Improve the query: vitamin d"], GenerationParams())
        ['vitamin d']
    """

    name = "echo"

    def __init__(self, model: str | None = None, reply: str | None = None) -> None:
        self.reply = reply if reply is not None else model
        self.calls: list[list[str]] = []

    @property
    def identity(self) -> str:
        return f"echo:{self.reply}"

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        self.calls.append(list(prompts))
        out = []
        for prompt in prompts:
            text = self.reply if self.reply is not None else prompt.rsplit(":", 1)[-1].strip()
            if not params.greedy:
                digest = hashlib.sha256(f"{params.seed}\0{prompt}".encode()).hexdigest()
                text = f"{text} s{digest[:6]}"
            out.append(cut_at_stop(text, params.stop)[: params.max_new_tokens * 8])
        return out
