"""The app factory: ``create_app(settings)`` builds the FastAPI application.

Start it with the CLI (``cormorant serve --index NAME=PATH``) or with uvicorn directly::

    CORMORANT_SERVICE_CONFIG=service.yaml uvicorn --factory cormorant.service:create_app

Example:
    >>> from cormorant.service import create_app, load_settings
    >>> app = create_app(load_settings(None, open_reads=True))
    >>> app.title
    'Cormorant'
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import Match, Route

import cormorant
from cormorant.service.middleware import AccessLog, RequestLimits
from cormorant.service.routes import router, v1
from cormorant.service.settings import ServiceSettings, load_settings
from cormorant.service.state import IndexOpener, SearchTimeout, ServiceState

log = logging.getLogger(__name__)


def create_app(settings: ServiceSettings | None = None,
               opener: IndexOpener | None = None) -> FastAPI:
    """Build the service for ``settings`` (default: from the environment and the YAML file
    named by ``CORMORANT_SERVICE_CONFIG``). Indexes load once the server starts, each opened
    by ``opener`` (default :meth:`ServedIndex.open`; on Ray Serve, one that reaches the shard
    deployments).

    Raises:
        CormorantError: an index path is not an index, or a pipeline names an unknown stage.
    """
    settings = settings or load_settings()
    warn_if_closed(settings)
    state = ServiceState(settings, opener)
    _configure_access_log(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start_loading()
        yield
        state.close()  # after uvicorn has let in-flight requests finish

    app = FastAPI(title="Cormorant", version=getattr(cormorant, "__version__", "0"),
                  description="Search dense and BM25 indexes; add, replace and delete documents"
                              " live.", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = state
    _add_docs_pages(app)
    app.include_router(router)
    app.include_router(v1)
    _document_limits(app, settings)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(SearchTimeout, _timed_out)
    app.add_exception_handler(Exception, _internal_error)
    # The last added runs first: log every request, including those refused for size.
    app.add_middleware(RequestLimits, max_bytes=settings.limits.max_body_bytes)
    app.add_middleware(AllowHeader, routes=[*router.routes, *v1.routes])
    app.add_middleware(AccessLog, metrics=state.metrics)
    return app


DOCS_ASSETS = "/docs-assets"


def _add_docs_pages(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their scripts served from the installed
    ``fastapi-offline`` package, not a CDN: the pages work on a machine with no network. Like
    ``/openapi.json`` they need no key."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(docs_assets())), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title="Cormorant API",
                                   swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title="Cormorant API",
                              redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
                              with_google_fonts=False)


def docs_assets() -> Path:
    """The folder holding Swagger UI's and ReDoc's scripts (package ``fastapi-offline``).

    Raises:
        MissingExtraError: the [service] extra (which brings it) is not installed.
    """
    try:
        import fastapi_offline
    except ModuleNotFoundError as exc:
        from cormorant.errors import MissingExtraError

        raise MissingExtraError("the service's /docs pages", "service", exc) from None
    return Path(fastapi_offline.__file__).parent / "static"
def _document_limits(app: FastAPI, settings: ServiceSettings) -> None:
    """Serve an OpenAPI document that states the configured limits (see service.openapi)."""
    from fastapi.openapi.utils import get_openapi

    from cormorant.service.openapi import describe_limits

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            app.openapi_schema = describe_limits(schema, settings.limits)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class AllowHeader:
    """On a 405, ``Allow`` lists every method the path takes: routes that share a path (PUT
    and DELETE of documents) each know only their own, and the first one answers."""

    def __init__(self, app: Any, routes: list[Any]) -> None:
        self.app, self.routes = app, routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_allow(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                methods = sorted({m for route in self.routes
                                  if isinstance(route, Route | APIRoute)
                                  and route.matches(scope)[0] != Match.NONE
                                  for m in (route.methods or ())})
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers,
                                                  (b"allow", ", ".join(methods).encode())]}
            await send(message)

        await self.app(scope, receive, send_allow)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """400 for a body that is not JSON, 422 for JSON of the wrong shape: one readable line."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse({"detail": "the request body is not valid JSON"}, status_code=400)
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return JSONResponse({"detail": "; ".join(parts) + more}, status_code=422)


async def _timed_out(request: Request, exc: Exception) -> JSONResponse:
    """504 for any call that ran past the limit: the search, or fetching the hits' text."""
    limit = request.app.state.service.settings.request_timeout_s
    return JSONResponse({"detail": f"the search took longer than the {limit:g} s limit"},
                        status_code=504)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug, not the caller's fault: log the traceback here, tell the caller nothing of it.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def warn_if_closed(settings: ServiceSettings) -> None:
    """Say at start-up when no key is configured and reads are closed: every request would be
    refused (401) and nothing else would tell the operator why."""
    if not settings.api_keys and not settings.open_reads:
        log.warning("no API keys are configured and reads are closed: every request will be"
                    " refused with 401. Give --open-reads (or open_reads: true) to allow"
                    " searches without a key, or add api_keys to the --config file.")


def _configure_access_log(level: str) -> None:
    """Request lines go to stdout as bare JSON, one per line, unless logging is configured."""
    access = logging.getLogger("cormorant.service.access")
    if not access.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.propagate = False
    access.setLevel(logging.INFO if level in ("debug", "info") else logging.WARNING)
