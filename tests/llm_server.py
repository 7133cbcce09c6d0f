"""A real OpenAI-compatible server process for tests: cormorant.llm.server's app serving a tiny
local model, plus fault injection set at run time through ``POST /faults`` (the next N requests
answer 503; each request waits ``delay`` seconds) and ``GET /stats`` (requests, peak
concurrency, the Authorization headers seen). It listens on 127.0.0.1 only and exits by itself
after ``--lifetime`` seconds."""

from __future__ import annotations

import argparse
import os
import threading

import uvicorn
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import JSONResponse

from cormorant.llm import load_llm
from cormorant.llm.server import create_app


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--model", required=True)
    args.add_argument("--port", type=int, required=True)
    args.add_argument("--key-env", default=None)
    args.add_argument("--lifetime", type=float, default=120)
    opts = args.parse_args()
    model = load_llm(f"transformers:{opts.model}", cache=False)
    app = create_app(model, "tiny", opts.key_env)
    state = {"requests": 0, "in_flight": 0, "peak": 0, "auth": [], "fail_next": 0, "delay": 0.0}
    lock = threading.Lock()

    class Faults(BaseHTTPMiddleware):
        async def dispatch(self, request, call_next):  # noqa: ANN001, ANN201
            import asyncio

            if request.url.path == "/stats":
                return JSONResponse(state)
            if request.url.path == "/faults":  # set faults, reset the counters
                body = await request.json()
                with lock:
                    state.update(requests=0, peak=0, auth=[], fail_next=body.get("fail_next", 0),
                                 delay=body.get("delay", 0.0))
                return JSONResponse(state)
            with lock:
                state["requests"] += 1
                state["in_flight"] += 1
                state["peak"] = max(state["peak"], state["in_flight"])
                state["auth"].append(request.headers.get("authorization"))
                fail = state["fail_next"] > 0
                state["fail_next"] -= int(fail)
            try:
                await asyncio.sleep(state["delay"])
                if fail:
                    return JSONResponse({"error": "warming up"}, status_code=503)
                return await call_next(request)
            finally:
                with lock:
                    state["in_flight"] -= 1

    app.add_middleware(Faults)
    # Bounded: the process ends by itself even if the test that started it dies.
    threading.Timer(opts.lifetime, lambda: os._exit(0)).start()
    uvicorn.run(app, host="127.0.0.1", port=opts.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
