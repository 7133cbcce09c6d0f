"""ASGI middleware: body-size limit, request ids, one structured log line and metrics per request.

Written as plain ASGI (not Starlette's BaseHTTPMiddleware) so that a refused body is refused
before the application reads any of it, and streaming stays cheap.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from cormorant.service.metrics import Metrics

access_log = logging.getLogger("cormorant.service.access")
Scope = dict[str, Any]


class RequestLimits:
    """Answers 413 to bodies over ``max_bytes`` (declared or streamed), before the app runs."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await _reply(send, 400, "invalid Content-Length header")
                return
            if too_big:
                await _reply(send, 413, f"request body over the {self.max_bytes:,}-byte limit")
                return
        # Read the whole body first (it is small by construction), counting as it streams.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _reply(send, 413, f"request body over the {self.max_bytes:,}-byte limit")
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the disconnect, as ASGI expects

        await self.app(scope, replay, send)


class AccessLog:
    """Gives each request an id (``X-Request-ID``), logs one JSON line when it ends, and
    counts it in the metrics under its route template (never the raw path)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        size = 0

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"x-request-id", request_id.encode("latin-1"))]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(scope["method"], route, status, seconds)
            state = scope.get("state") or {}
            access_log.info(json.dumps({
                "ts": round(time.time(), 3), "request_id": request_id, "method": scope["method"],
                "path": scope["path"], "route": route, "status": status,
                "ms": round(seconds * 1000, 2), "bytes": size,
                "client": (scope.get("client") or ["-"])[0], "key": state.get("key_name"),
                "index": state.get("index"), "queries": state.get("queries"),
            }, ensure_ascii=True, separators=(",", ":")))


async def _reply(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
