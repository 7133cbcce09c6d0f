"""The HTTP routes: ``/v1`` search, indexes and documents; health, readiness and metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from cormorant.errors import CormorantError, ReadOnlyIndex
from cormorant.service.auth import HEADER, allowed, presented_key
from cormorant.service.limiter import retry_after
from cormorant.service.metrics import CONTENT_TYPE
from cormorant.service.schemas import (
    DeleteDocuments,
    DocumentBody,
    Health,
    Hit,
    IndexInfo,
    IndexList,
    Problem,
    PutDocuments,
    QueryResult,
    SearchRequest,
    SearchResponse,
    Timing,
    WriteResponse,
)
from cormorant.service.served import ServedIndex
from cormorant.service.settings import Limits, Scope
from cormorant.service.state import ServiceState
from cormorant.types import Document

api_key_header = APIKeyHeader(name=HEADER, auto_error=False, description="An API key.")
bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token.")
NO_KEY = "missing or invalid API key"
NO_SCOPE = "this API key is not allowed to do that"
IndexName = Annotated[str, Path(description="The index name, as configured.", max_length=64)]


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                               "schema": {"type": "string"}}}


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error answers a route declares: each a Problem, ``{"detail": "..."}`` (422 included:
    the app answers validation errors in that shape too, not FastAPI's list)."""
    return {code: {"model": Problem, **({"headers": RETRY_AFTER} if code in (429, 503) else {})}
            for code in codes}


class SearchCancelled(Exception):
    """The request timed out; the search stopped between two chunks of queries."""


# Queries searched per step of a batch: a search that times out stops after the step it is in,
# instead of running every query of the batch for nobody.
CANCEL_STEP = 8


@asynccontextmanager
async def admitted(request: Request) -> AsyncIterator[None]:
    """Hold one of the caller's in-flight places (per key, or per address with open reads)
    for the duration of the block; a 429 with Retry-After if the caller has none left."""
    state = service(request)
    who = request.state.caller
    limit = state.limiter.enter(who)
    if limit is not None:
        raise HTTPException(429, f"at most {limit} requests in flight per API key; wait for"
                                 " one to finish", headers={"Retry-After": "1"})
    try:
        yield
    finally:
        state.limiter.leave(who)


def service(request: Request) -> ServiceState:
    return request.app.state.service


def require(scope: Scope) -> Callable[..., Any]:
    """A dependency that lets a request through only with a key holding ``scope`` (or, where
    the operator opened it, with no key). A key that is presented must be valid."""

    async def check(request: Request,
                    key: Annotated[str | None, Security(api_key_header)] = None,
                    credentials: Annotated[HTTPAuthorizationCredentials | None,
                                           Security(bearer)] = None) -> None:
        state = service(request)
        presented = presented_key(key, credentials.credentials if credentials else None)
        found = state.keys.identify(presented)
        if presented is not None and found is None:
            raise HTTPException(401, NO_KEY, headers={"WWW-Authenticate": "Bearer"})
        settings = state.settings
        open_access = scope == "read" and settings.open_reads  # writes and admin: always a key
        request.state.key_name = found.name if found else None
        if found is None and not open_access:
            raise HTTPException(401, NO_KEY, headers={"WWW-Authenticate": "Bearer"})
        if not allowed(found, scope, open_access):
            raise HTTPException(403, NO_SCOPE)
        client = request.client.host if request.client else "-"
        request.state.caller = f"key:{found.name}" if found else f"address:{client}"
        wait = state.limiter.admit(request.state.caller)
        if wait is not None:
            raise HTTPException(429, "too many requests for this API key; slow down",
                                headers={"Retry-After": retry_after(wait)})

    return check


def served(request: Request, name: str) -> ServedIndex:
    """The named index, or a 404 (unknown) / 503 (still loading or failed)."""
    state = service(request)
    request.state.index = name
    if name not in state.settings.indexes:
        raise HTTPException(404, f"no index named {name!r}; see GET /v1/indexes")
    index = state.indexes.get(name)
    if index is None:
        raise HTTPException(503, f"index {name!r} is not ready ({state.status.get(name)})",
                            headers={"Retry-After": "5"})
    return index


def known_index(request: Request, name: IndexName) -> None:
    """A dependency: the index is checked before the body is validated, so a request to an
    index that does not exist is a 404 whatever its body holds (as schemathesis expects)."""
    served(request, name)


router = APIRouter()
v1 = APIRouter(prefix="/v1", tags=["v1"])


@router.get("/healthz", response_model=Health, tags=["operations"])
async def healthz() -> Health:
    """The process is up and answering (it may still be loading indexes)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, tags=["operations"], responses=_problems(503))
async def readyz(request: Request, response: Response) -> Health:
    """200 once every index and model is loaded; 503 while loading or after a failure."""
    state = service(request)
    if state.is_ready:
        return Health(status="ready", indexes=dict(state.status))
    response.status_code = 503
    return Health(status="failed" if state.failed else "loading", indexes=dict(state.status),
                  detail=state.failed)


@router.get("/metrics", tags=["operations"], response_class=Response,
            dependencies=[Depends(require("admin"))], responses={
                **_problems(401, 403, 429), 200: {"content": {CONTENT_TYPE: {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, latency, errors, encoder batch sizes, index sizes."""
    return Response(service(request).metrics.render(), media_type=CONTENT_TYPE)


@v1.get("/indexes", response_model=IndexList, dependencies=[Depends(require("read"))],
        responses=_problems(401, 403, 429))
async def list_indexes(request: Request) -> IndexList:
    """Every served index (loaded ones; see /readyz for the rest)."""
    state = service(request)
    return IndexList(indexes=[IndexInfo(**i.describe()) for i in state.indexes.values()])


@v1.get("/indexes/{name}", response_model=IndexInfo, dependencies=[Depends(require("read"))],
        responses=_problems(401, 403, 404, 422, 429, 503))
async def describe_index(request: Request, name: IndexName) -> IndexInfo:
    """What an index holds: kind, encoder, count, version, allowed pipelines."""
    return IndexInfo(**served(request, name).describe())


@v1.post("/indexes/{name}/search", response_model=SearchResponse,
         response_model_exclude_none=True, dependencies=[Depends(require("read")), Depends(known_index)],
         responses=_problems(400, 401, 403, 404, 413, 422, 429, 503, 504))
async def search(request: Request, body: SearchRequest, name: IndexName) -> SearchResponse:
    """Search with one query or a batch; hits carry ids, scores and ranks (and text on request)."""
    start = time.perf_counter()
    state = service(request)
    index = served(request, name)
    texts = body.texts
    _check_search(state, index, body, texts)
    request.state.queries = len(texts)

    def run(cancel: threading.Event) -> list[list[tuple[str, float]]]:
        ranked: list[list[tuple[str, float]]] = []
        for start in range(0, len(texts), CANCEL_STEP):
            if cancel.is_set():
                raise SearchCancelled
            ranked += index.search(texts[start:start + CANCEL_STEP], body.k, body.pipeline)
        return ranked

    async with admitted(request):
        try:
            ranked = await state.search(run)
            searched = time.perf_counter()
            docs: dict[str, Document] = {}
            if body.return_text or body.return_fields:
                wanted = list({d for hits in ranked for d, _ in hits})
                docs = await state.search(lambda _: index.get_many(wanted))
        except CormorantError as exc:
            raise HTTPException(422, str(exc)) from None
    cut = _text_cut(state.settings.limits, body, sum(map(len, ranked)))
    results = [QueryResult(query=text, hits=[_hit(d, s, r, docs.get(d), body, cut)
                                             for r, (d, s) in enumerate(hits, start=1)])
               for text, hits in zip(texts, ranked, strict=True)]
    done = time.perf_counter()
    stage = index.stage(body.pipeline)
    return SearchResponse(index=name, pipeline=str(stage), k=body.k, version=index.version,
                          text_chars=cut, results=results,
                          timing=Timing(total_ms=(done - start) * 1000,
                                        search_ms=(searched - start) * 1000,
                                        documents_ms=(done - searched) * 1000))


def _check_search(state: ServiceState, index: ServedIndex, body: SearchRequest,
                  texts: list[str]) -> None:
    limits = state.settings.limits
    if body.k > limits.max_k:
        raise HTTPException(422, f"k must be between 1 and {limits.max_k}, got {body.k}")
    if len(texts) > limits.max_batch:
        raise HTTPException(422, f"at most {limits.max_batch} queries per request,"
                                 f" got {len(texts)}")
    for i, text in enumerate(texts):
        where = "query" if body.query is not None else f"queries[{i}]"
        if not text.strip():
            raise HTTPException(422, f"{where} is empty")
        if len(text) > limits.max_query_chars:
            raise HTTPException(422, f"{where} has {len(text):,} characters; the limit is"
                                     f" {limits.max_query_chars:,}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise HTTPException(422, f"{where} is not valid Unicode text") from None
    if body.text_chars is not None and body.text_chars > limits.max_text_chars:
        # The schema states the maximum; cutting silently would answer what was not asked.
        raise HTTPException(422, f"text_chars is at most {limits.max_text_chars:,}")
    if index.stage(body.pipeline) is None:
        # 404, as for an unknown index: the request is well formed, the pipeline is not there.
        allowed_list = "; ".join(index.allowed_pipelines())
        raise HTTPException(404, f"pipeline {body.pipeline!r} is not served for index"
                                 f" {index.name!r}; allowed: {allowed_list}")


def _text_cut(limits: Limits, body: SearchRequest, hits: int) -> int | None:
    """Characters each title and text is cut to: what the request asked (at most
    ``max_text_chars``), and no more than an even share of ``max_response_text_chars``."""
    if not body.return_text:
        return None
    asked = min(body.text_chars or limits.max_text_chars, limits.max_text_chars)
    return max(1, min(asked, limits.max_response_text_chars // max(1, 2 * hits)))


def _hit(doc_id: str, score: float, rank: int, doc: Document | None, body: SearchRequest,
         cut: int | None = None) -> Hit:
    hit = Hit(doc_id=doc_id, score=score, rank=rank)
    if doc is not None and body.return_text:
        hit.title, hit.text = doc.title[:cut], doc.text[:cut]
    if doc is not None and body.return_fields:
        hit.fields = dict(doc.fields)
    return hit


@v1.get("/indexes/{name}/documents/{doc_id:path}", response_model=DocumentBody,
        dependencies=[Depends(require("read"))],
        responses=_problems(401, 403, 404, 422, 429, 503, 504))
async def get_document(request: Request, doc_id: str, name: IndexName) -> DocumentBody:
    """One document as it is now (live writes included)."""
    index = served(request, name)
    async with admitted(request):
        doc = await service(request).search(lambda _: index.get(doc_id))
    if doc is None:
        raise HTTPException(404, f"index {name!r} has no document {doc_id!r}")
    return DocumentBody.model_construct(doc_id=doc.doc_id, title=doc.title, text=doc.text,
                                        fields=dict(doc.fields))


@v1.put("/indexes/{name}/documents", response_model=WriteResponse,
        dependencies=[Depends(require("write")), Depends(known_index)],
        responses=_problems(400, 401, 403, 404, 409, 413, 422, 429, 503))
async def put_documents(request: Request, body: PutDocuments, name: IndexName
                        ) -> WriteResponse:
    """Add or replace documents. Answered once they are on disk and searchable."""
    state = service(request)
    index = served(request, name)
    limits = state.settings.limits
    _check_write(limits, [d.doc_id for d in body.documents], "documents")
    for doc in body.documents:
        if max(len(doc.title), len(doc.text)) > limits.max_document_chars:
            raise HTTPException(422, f"document {doc.doc_id!r}: a title or text over the"
                                     f" {limits.max_document_chars:,}-character limit")
    docs = [Document(d.doc_id, d.text, title=d.title, fields=d.fields) for d in body.latest()]
    return await _write(request, index, lambda: index.put(docs))


@v1.delete("/indexes/{name}/documents", response_model=WriteResponse,
           dependencies=[Depends(require("write")), Depends(known_index)],
           responses=_problems(400, 401, 403, 404, 409, 413, 422, 429, 503))
async def delete_documents(request: Request, body: DeleteDocuments, name: IndexName
                           ) -> WriteResponse:
    """Delete documents by id. Ids that do not exist are listed in ``not_found``."""
    state = service(request)
    index = served(request, name)
    _check_write(state.settings.limits, body.ids, "ids")
    return await _write(request, index, lambda: index.delete(body.ids))


def _check_write(limits: Limits, ids: list[str], what: str) -> None:
    """422 when a write names too many documents or an over-long id."""
    if len(ids) > limits.max_documents_per_write:
        raise HTTPException(422, f"at most {limits.max_documents_per_write} {what} per"
                                 f" request, got {len(ids)}")
    if any(len(d) > limits.max_id_chars for d in ids):
        raise HTTPException(422, f"doc_id over the {limits.max_id_chars}-character limit")


async def _write(request: Request, index: ServedIndex, work: Callable[[], Any]) -> WriteResponse:
    if not index.writable:
        raise HTTPException(409, index.read_only_reason or "read-only index")
    try:
        async with admitted(request):
            result = await service(request).write(work)
    except ReadOnlyIndex as exc:
        raise HTTPException(409, str(exc)) from None
    except CormorantError as exc:
        raise HTTPException(422, str(exc)) from None
    return WriteResponse(index=index.name, version=result.version, changed=result.changed,
                         not_found=result.not_found, count=index.count)
