"""Constrained beam search: the generator may only write n-grams that occur in the corpus.

:class:`CorpusConstraint` is a Hugging Face ``LogitsProcessor``. At every step it looks at what
each beam has generated so far (a corpus n-gram, by induction), asks the suffix array which
tokens follow it somewhere in the corpus, and sets every other logit to −∞. The first step may
start anywhere: any token of the corpus. A beam whose n-gram has no continuation (it reaches a
document's end) may only end.

The paper keeps every candidate of every step, not only the final beams (short n-grams are
often the best keys), so the processor also records each beam's prefix as it goes.

Title mode (:func:`decode_titles`, the paper's title keys): the first step may only write a
token that opens a document, each later one only what follows the beam's prefix *at a document
start*, and a beam that has written the `` @@`` closing a title may only end. So every title
key is the whole title of at least one document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cormorant.retrieval.seal.generator import Generator
from cormorant.retrieval.seal.substring import NgramIndex

Ngram = tuple[int, ...]
TITLE_LENGTH = 15  # the paper's longest title key, in tokens


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
    causal model, 1 for a seq2seq decoder after its start token). Beam search hands processors
    log-probabilities, so while masking the processor also records, for free, what SEAL would
    otherwise compute by teacher forcing: ``log_probs[n]``, the summed log-probability of every
    n-gram a beam held or could be extended to (the top ``2 × beams`` children, the only ones
    beam search can keep), and ``first``, the log-probabilities of the first token.

    Example:
        >>> constraint = CorpusConstraint(index, prefix_length=12, eos_token_id=2)  # doctest: +SKIP
        >>> model.generate(..., logits_processor=LogitsProcessorList([constraint]))  # doctest: +SKIP
    """

    def __init__(self, index: NgramIndex, prefix_length: int, eos_token_id: int,
                 beams: int = 1, title_end: Ngram | None = None) -> None:
        self.index, self.prefix_length = index, prefix_length
        self.eos_token_id, self.beams = eos_token_id, beams
        # Title mode: beams open a document and stop once they have written its title's end.
        self.title_end = title_end
        self.seen: set[Ngram] = set()
        self.log_probs: dict[Ngram, float] = {(): 0.0}
        self.first: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        mask = torch.full_like(scores, float("-inf"))
        prefixes = [tuple(_strip(ids[self.prefix_length:], self.eos_token_id))
                    for ids in input_ids.tolist()]
        for row, generated in enumerate(prefixes):
            if generated:
                self.seen.add(generated)
            allowed = self._allowed(generated)
            allowed = allowed[allowed < scores.shape[-1]]
            if allowed.size:
                mask[row, torch.from_numpy(allowed)] = 0.0
            else:
                mask[row, self.eos_token_id] = 0.0  # nothing follows in the corpus: stop here
        if self.first is None and not any(prefixes):
            self.first = scores[0].double().numpy().copy()
        masked = scores + mask
        self._record(prefixes, masked)
        return masked

    def _allowed(self, generated: Ngram) -> np.ndarray:
        if self.title_end is None:
            return self.index.next_token_array(generated)
        if is_title(generated, self.title_end):
            return np.zeros(0, dtype=np.int64)  # the title is whole: only the end token
        return self.index.next_tokens_at_start(generated)

    def _record(self, prefixes: list[Ngram], masked: Any) -> None:
        import torch

        top = torch.topk(masked, min(2 * self.beams, masked.shape[-1]), dim=-1)
        for row, generated in enumerate(prefixes):
            base = self.log_probs.get(generated)
            if base is None:
                continue  # a finished beam's padding
            for value, token in zip(top.values[row].tolist(), top.indices[row].tolist(),
                                    strict=True):
                if value != float("-inf") and token != self.eos_token_id:
                    self.log_probs.setdefault(generated + (token,), base + value)


def is_title(ngram: Ngram, end: Ngram) -> bool:
    """A title key: at least one token before the end marker, and the marker last."""
    return len(ngram) > len(end) and ngram[-len(end):] == end


def _strip(ids: list[int], eos: int) -> list[int]:
    """Generated ids up to the first end token (a finished beam is padded after it)."""
    return ids[:ids.index(eos)] if eos in ids else ids


@dataclass
class Decoded:
    """A query's decoded n-grams with s(n) = log P(n | q), and the first-token log-probs."""

    log_probs: dict[Ngram, float]
    first: Any


def generate_ngrams(generator: Generator, index: NgramIndex, queries: Sequence[str],
                    settings: DecodeSettings | None = None) -> list[list[Ngram]]:
    """Constrained beam search per query; every n-gram it returns occurs in the corpus.

    Example:
        >>> generate_ngrams(gen, index, ["vitamin d and depression"])  # doctest: +SKIP
        [[(29873,), (29873, 422), ...]]
    """
    return [sorted(decode(generator, index, query, settings).log_probs) for query in queries]


def decode(generator: Generator, index: NgramIndex, query: str,
           settings: DecodeSettings | None = None) -> Decoded:
    """Constrained beam search for one query: every n-gram of every step, scored."""
    settings = settings or DecodeSettings()
    constraint, found = _beam_search(generator, index, generator.prompt_ids(query), settings)
    # Each kept n-gram was allowed by the index at every step, so it occurs; the count check is
    # cheap insurance against a generate() path that skips processors.
    scores = {n: constraint.log_probs[n] for n in found
              if n in constraint.log_probs and index.count(n) > 0}
    return Decoded(scores, constraint.first)


def decode_titles(generator: Generator, index: NgramIndex, query: str,
                  settings: DecodeSettings | None = None) -> dict[Ngram, float]:
    """Title keys (the paper's title mode): whole titles, `` title @@``, each the opening of
    some document, with s(n) = log P(n | q) under the title prompt.

    Example:
        >>> decode_titles(gen, index, "vitamin d and depression")  # doctest: +SKIP
        {(10954, 422, 3394, 48): -1.7, ...}
    """
    settings = settings or DecodeSettings(max_length=TITLE_LENGTH)
    end = generator.title_end
    constraint, _ = _beam_search(generator, index, generator.prompt_ids(query, titles=True),
                                 settings, title_end=end)
    # Every beam child that closes a title counts, not only the finished beams (each finished
    # beam was recorded as a child on its way).
    return {n: value for n, value in constraint.log_probs.items()
            if is_title(n, end) and index.count(n) > 0}


def _beam_search(generator: Generator, index: NgramIndex, prompt_ids: list[int],
                 settings: DecodeSettings, title_end: Ngram | None = None
                 ) -> tuple[CorpusConstraint, set[Ngram]]:
    """Run ``generate`` under the constraint; the constraint (what it recorded) and every
    n-gram a beam held."""
    import torch
    from transformers import LogitsProcessorList

    prompt = torch.tensor([prompt_ids])
    prefix = 1 if generator.seq2seq else prompt.shape[1]
    constraint = CorpusConstraint(index, prefix, generator.eos_token_id, settings.beams,
                                  title_end)
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
    found = set(constraint.seen)
    for row in out.tolist():
        ngram = tuple(_strip(row[prefix:], generator.eos_token_id))
        if ngram:
            found.add(ngram)
    return constraint, found
