"""A small OpenAI-compatible server for any cormorant language model (extra ``[service]``).

It speaks ``/v1/completions``, ``/v1/chat/completions`` and ``/v1/models``, so one process can
hold a model that several evaluations share through the ``openai`` backend, and the tests can
check that backend against a real server process. Requests are answered one generation at a
time (a model is not safe to call from several threads at once).

Example:
    python -m cormorant.llm.server --llm transformers:smollm2 --port 8080
    # then: genqr_ensemble(llm=openai:smollm2, llm_base_url=http://127.0.0.1:8080/v1) >> bm25
"""


import argparse
import os
import secrets
import threading
import time
from typing import Any

from cormorant.llm.base import GenerationParams, LanguageModel


def create_app(model: LanguageModel, name: str, api_key_env: str | None = None) -> Any:
    """A FastAPI app serving ``model`` under the model name ``name``.

    With ``api_key_env`` set, every request needs ``Authorization: Bearer <key>`` where the
    key is that environment variable's value.
    """
    from fastapi import FastAPI, HTTPException, Request

    app = FastAPI(title="cormorant language model", docs_url=None, redoc_url=None)
    lock = threading.Lock()
    key = os.environ.get(api_key_env) if api_key_env else None

    def check(request: Request) -> None:
        if key and request.headers.get("authorization") != f"Bearer {key}":
            raise HTTPException(401, "invalid or missing API key")

    def params(body: dict[str, Any]) -> GenerationParams:
        stop = body.get("stop") or ()
        try:
            return GenerationParams(max_new_tokens=int(body.get("max_tokens") or 16),
                                    temperature=float(body.get("temperature") or 0.0),
                                    top_p=float(body.get("top_p") or 1.0),
                                    seed=int(body.get("seed") or 0),
                                    stop=(stop,) if isinstance(stop, str) else tuple(stop))
        except (TypeError, ValueError, Exception) as exc:
            raise HTTPException(400, f"bad generation settings: {exc}") from None

    def run(prompts: list[str], settings: GenerationParams) -> list[str]:
        with lock:
            return model.generate(prompts, settings)

    def answer(kind: str, texts: list[str], chat: bool) -> dict[str, Any]:
        choices = [{"index": i, "finish_reason": "stop",
                    **({"message": {"role": "assistant", "content": t}} if chat else {"text": t})}
                   for i, t in enumerate(texts)]
        return {"id": f"cmpl-{secrets.token_hex(8)}", "object": kind, "created": int(time.time()),
                "model": name, "choices": choices}

    @app.get("/v1/models")
    def models(request: Request) -> dict[str, Any]:
        check(request)
        return {"object": "list", "data": [{"id": name, "object": "model"}]}

    @app.post("/v1/completions")
    def completions(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        check(request)
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise HTTPException(400, "prompt must be a string or a list of strings")
        return answer("text_completion", run(prompts, params(body)), chat=False)

    @app.post("/v1/chat/completions")
    def chat(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        check(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPException(400, "messages must be a non-empty list")
        return answer("chat.completion", run([chat_prompt(model, messages)], params(body)),
                      chat=True)

    return app


def chat_prompt(model: LanguageModel, messages: list[dict[str, Any]]) -> str:
    """The model's own chat template if it has one, else ``role: content`` lines."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages]
    return "\n".join(lines) + "\nassistant:"


def main(argv: list[str] | None = None) -> None:
    from cormorant.llm import load_llm

    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--llm", default="transformers:smollm2", help="<backend>:<model>")
    args.add_argument("--name", default=None, help="model name clients send (default: --llm)")
    args.add_argument("--host", default="127.0.0.1")
    args.add_argument("--port", type=int, default=8080)
    args.add_argument("--api-key-env", default=None, help="require the key in this variable")
    opts = args.parse_args(argv)
    import uvicorn

    model = load_llm(opts.llm, cache=False)
    uvicorn.run(create_app(model, opts.name or opts.llm, opts.api_key_env), host=opts.host,
                port=opts.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
