"""Any OpenAI-compatible HTTP endpoint: vLLM, llama.cpp's server, Ollama, hosted APIs.

Requests go to ``{base_url}/completions`` (or ``/chat/completions`` with ``chat=True``) through
httpx, at most ``concurrency`` at a time, each with a ``timeout``. Connection failures,
timeouts, 429 and 5xx answers are retried ``retries`` times with exponential back-off; any
other 4xx is the caller's mistake and fails at once. The API key is read from the environment
variable ``api_key_env`` (never from a pipeline string or a config file).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cormorant.errors import CormorantError, MissingExtraError
from cormorant.llm.base import GenerationParams, cut_at_stop

log = logging.getLogger(__name__)
DEFAULT_URL = "http://127.0.0.1:8080/v1"


class OpenAIModel:
    """A model behind an OpenAI-compatible server (``openai`` backend).

    Example:
        >>> lm = OpenAIModel("smollm2", base_url="http://127.0.0.1:8080/v1")  # doctest: +SKIP
        >>> lm.generate(["Query: cats\\nKeywords:"], GenerationParams(stop=("\\n",)))  # doctest: +SKIP
    """

    name = "openai"

    def __init__(self, model: str, base_url: str = DEFAULT_URL, chat: bool = False,
                 api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5, concurrency: int = 4) -> None:
        try:
            import httpx
        except ModuleNotFoundError as exc:
            raise MissingExtraError("the openai backend", "llm", exc) from None
        if concurrency < 1 or retries < 0 or timeout <= 0:
            raise CormorantError("openai backend: concurrency >= 1, retries >= 0 and timeout > 0"
                                 f" needed; got {concurrency}, {retries}, {timeout}")
        self.model, self.base_url, self.chat = model, base_url.rstrip("/"), chat
        self.retries, self.backoff, self.concurrency = retries, backoff, concurrency
        headers = {}
        key = os.environ.get(api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(timeout=timeout, headers=headers,
                                    limits=httpx.Limits(max_connections=concurrency))
        self._httpx = httpx

    @property
    def identity(self) -> str:
        # The server's weights cannot be fingerprinted from here: endpoint and name stand in.
        return f"openai:{self.base_url}:{self.model}:chat={self.chat}"

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        if len(prompts) <= 1:
            return [self._one(p, params) for p in prompts]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda p: self._one(p, params), prompts))

    def _body(self, prompt: str, params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_new_tokens,
                                "temperature": params.temperature, "seed": params.seed}
        if not params.greedy:
            body["top_p"] = params.top_p
        if params.stop:
            body["stop"] = list(params.stop)[:4]  # the OpenAI API takes at most four
        if self.chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body

    def _one(self, prompt: str, params: GenerationParams) -> str:
        url = f"{self.base_url}/{'chat/completions' if self.chat else 'completions'}"
        body = self._body(prompt, params)
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._client.post(url, json=body)
            except (self._httpx.TimeoutException, self._httpx.TransportError) as exc:
                if last:
                    raise CormorantError(f"{url}: no answer after {attempt + 1} tries"
                                         f" ({type(exc).__name__}: {exc})") from None
                self._sleep(attempt)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if last:
                    raise CormorantError(f"{url}: HTTP {response.status_code} after"
                                         f" {attempt + 1} tries: {response.text[:200]}")
                self._sleep(attempt)
                continue
            if response.status_code >= 400:
                raise CormorantError(f"{url}: HTTP {response.status_code}: {response.text[:200]}")
            return cut_at_stop(_text(response.json(), self.chat, url), params.stop).strip()
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int) -> None:
        # Jitter spreads the retries of concurrent requests so they do not hit a recovering
        # server at the same instant.
        time.sleep(self.backoff * (2 ** attempt) * (0.5 + random.random() / 2))

    def close(self) -> None:
        self._client.close()


def _text(payload: Any, chat: bool, url: str) -> str:
    try:
        choice = payload["choices"][0]
        return choice["message"]["content"] if chat else choice["text"]
    except (KeyError, IndexError, TypeError):
        raise CormorantError(f"{url}: not an OpenAI-style completion: {str(payload)[:200]}") from None
