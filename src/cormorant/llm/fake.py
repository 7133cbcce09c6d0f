"""A deterministic stand-in model: dry runs of a pipeline with no weights, and tests."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cormorant.llm.base import GenerationParams, cut_at_stop


class EchoModel:
    """Answers each prompt with ``reply`` if given, else with its last line after the line's
    first ``:`` (a trailing empty answer label such as ``Query:`` is skipped first), so an
    instruction prompt ``"Improve: q"`` answers ``q`` and a few-shot prompt ending in
    ``"Document: text\nQuery:"`` answers ``text``.

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
            text = self.reply if self.reply is not None else _echo(prompt)
            if not params.greedy:
                digest = hashlib.sha256(f"{params.seed}\0{prompt}".encode()).hexdigest()
                text = f"{text} s{digest[:6]}"
            out.append(cut_at_stop(text, params.stop)[: params.max_new_tokens * 8])
        return out


def _echo(prompt: str) -> str:
    lines = [line for line in prompt.strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[-1].rstrip().endswith(":") and lines[-1].count(":") == 1:
        lines.pop()  # an empty answer label
    last = lines[-1] if lines else ""
    return last.split(":", 1)[-1].strip()
