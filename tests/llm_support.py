"""Tiny language models for tests, and a real OpenAI-compatible server process around one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

WORDS = ("the a of and to in is for with on vitamin d depression cats dogs fish birds sun moon"
         " tides query document terms expansion keywords improve search").split()


def make_tiny_llm(path: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer Llama with a word-level tokenizer built here (no download)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<pad>": 1, "<s>": 2, "</s>": 3, ":": 4, "\n": 5, ".": 6, ",": 7}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>",
                                        pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=256, pad_token_id=1, bos_token_id=2,
                         eos_token_id=3)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class LLMServer:
    """``tests/llm_server.py`` on a free loopback port; stops itself after ``lifetime`` s."""

    def __init__(self, model: Path, log: Path, *, key_env: str | None = None,
                 lifetime: float = 180, env: dict | None = None) -> None:
        from tests.service.server import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.command = [sys.executable, str(Path(__file__).parent / "llm_server.py"),
                        "--model", str(model), "--port", str(self.port),
                        "--lifetime", str(lifetime)] + (["--key-env", key_env] if key_env else [])
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LLMServer:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("server not ready in 60 s")

    def faults(self, fail_next: int = 0, delay: float = 0.0) -> None:
        """Set the next requests' faults and reset the counters, once requests an earlier test
        abandoned (timeouts) have finished on the server."""
        deadline = time.monotonic() + 10
        while self.stats()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        httpx.post(f"http://127.0.0.1:{self.port}/faults", json={"fail_next": fail_next,
                                                                 "delay": delay}, timeout=5)

    def stats(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
