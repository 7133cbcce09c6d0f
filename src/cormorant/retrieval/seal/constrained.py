"""Constrained beam search: the generator may only write n-grams that occur in the corpus.

:class:`CorpusConstraint` is a Hugging Face ``LogitsProcessor``. At every step it looks at what
each beam has generated so far (a corpus n-gram, by induction), asks the suffix array which
tokens follow it somewhere in the corpus, and sets every other logit to −∞. The first step may
start anywhere: any token of the corpus. A beam whose n-gram has no continuation (it reaches a
document's end) may only end.

The paper keeps every candidate of every step, not only the final beams (short n-grams are
often the best keys), so the processor also records each beam's prefix as it goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cormorant.retrieval.seal.generator import Generator
from cormorant.retrieval.seal.substring import SubstringIndex

Ngram = tuple[int, ...]


def _logits_processor_base() -> type:
    from transformers import LogitsProcessor

    return LogitsProcessor


@dataclass
class DecodeSettings:
    """Beam search over corpus n-grams: the paper decodes 15 beams of up to 10 tokens."""

    beams: int = 15
    max_length: int = 10
    returned: int = 15  # final beams returned by generate (all step candidates are kept too)


class CorpusConstraint(_logits_processor_base()):  # type: ignore[misc]
    """Masks every next token that would make a beam's n-gram absent from the corpus.

    ``prefix_length`` is where generated tokens start in ``input_ids`` (the padded prompt for a
    causal model, 1 for a seq2seq decoder after its start token). ``seen[row // beams]`` collects
    every non-empty n-gram a beam of that query held at some step.

    Example:
        >>> constraint = CorpusConstraint(index, prefix_length=12, eos_token_id=2)  # doctest: +SKIP
        >>> model.generate(..., logits_processor=LogitsProcessorList([constraint]))  # doctest: +SKIP
    """

    def __init__(self, index: SubstringIndex, prefix_length: int, eos_token_id: int,
                 beams: int = 1, queries: int = 1) -> None:
        self.index, self.prefix_length = index, prefix_length
        self.eos_token_id, self.beams = eos_token_id, beams
        self.seen: list[set[Ngram]] = [set() for _ in range(queries)]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        mask = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(input_ids.tolist()):
            generated = _strip(ids[self.prefix_length:], self.eos_token_id)
            if generated:
                self.seen[min(row // self.beams, len(self.seen) - 1)].add(tuple(generated))
            allowed = [t for t in self.index.next_tokens(generated) if t < scores.shape[-1]]
            if allowed:
                mask[row, allowed] = 0.0
            else:
                mask[row, self.eos_token_id] = 0.0  # nothing follows in the corpus: stop here
        return scores + mask


def _strip(ids: list[int], eos: int) -> list[int]:
    """Generated ids up to the first end token (a finished beam is padded after it)."""
    return ids[:ids.index(eos)] if eos in ids else ids


def generate_ngrams(generator: Generator, index: SubstringIndex, queries: Sequence[str],
                    settings: DecodeSettings | None = None) -> list[list[Ngram]]:
    """Constrained beam search per query; every n-gram it returns occurs in the corpus.

    Example:
        >>> generate_ngrams(gen, index, ["vitamin d and depression"])  # doctest: +SKIP
        [[(29873,), (29873, 422), ...]]
    """
    import torch
    from transformers import LogitsProcessorList

    settings = settings or DecodeSettings()
    results: list[list[Ngram]] = []
    for query in queries:  # one at a time: prompts differ in length, and memory stays flat
        prompt = torch.tensor([generator.prompt_ids(query)])
        prefix = 1 if generator.seq2seq else prompt.shape[1]
        constraint = CorpusConstraint(index, prefix, generator.eos_token_id, settings.beams)
        kwargs: dict[str, Any] = {}
        if not generator.seq2seq:
            kwargs["attention_mask"] = torch.ones_like(prompt)
        with torch.inference_mode():
            out = generator.model.generate(
                input_ids=prompt, num_beams=settings.beams, do_sample=False,
                num_return_sequences=min(settings.returned, settings.beams),
                max_new_tokens=settings.max_length, early_stopping=False,
                logits_processor=LogitsProcessorList([constraint]),
                eos_token_id=generator.eos_token_id, pad_token_id=generator.tokenizer.pad_token_id,
                length_penalty=0.0, **kwargs)
        found = set(constraint.seen[0])
        for row in out.tolist():
            ngram = tuple(_strip(row[prefix:], generator.eos_token_id))
            if ngram:
                found.add(ngram)
        # Every beam prefix was allowed by the index, so each occurs; the check is cheap insurance
        # against a model whose generate() bypasses processors on some path.
        results.append(sorted(n for n in found if index.count(n) > 0))
    return results
