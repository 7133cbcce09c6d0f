"""Request and response bodies of the REST API (they make the OpenAPI document).

Limits that the operator configures (``k``, batch size, query length) are checked by the
routes against the settings, so the message can name the configured limit; the schema holds
the hard bounds.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

HARD_MAX_K = 100_000


def check_text(value: str, what: str) -> str:
    """Reject strings that cannot be stored or tokenised: lone surrogates, NUL characters."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} holds an unpaired surrogate (not valid Unicode text)") from None
    if "\x00" in value:
        raise ValueError(f"{what} holds a NUL character")
    return value


def non_finite(value: Any, where: str = "") -> str | None:
    """The path of the first NaN or infinite number inside a JSON value, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "."
    if isinstance(value, dict):
        items: Any = ((f".{k}", v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for step, item in items:
        found = non_finite(item, where + step)
        if found is not None:
            return found
    return None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def whole_number(value: Any) -> Any:
    """JSON ``10.0`` is the integer 10 (JSON Schema's ``integer`` admits it), ``true`` is not 1.

    Example:
        >>> whole_number(10.0), whole_number(7)
        (10, 7)
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeNumber = Annotated[int, BeforeValidator(whole_number), Field(strict=True)]
"""An integer field that refuses booleans, strings and fractions (strict after the check)."""


class SearchRequest(Strict):
    """One query (``query``) or a batch (``queries``), answered in the same order."""

    query: str | None = Field(None, description="One query text.", examples=["vitamin d"])
    queries: list[str] | None = Field(None, description="Several query texts (a batch).",
                                      max_length=10_000)
    k: WholeNumber = Field(10, ge=1, le=HARD_MAX_K, description=(
        "Results per query; k times the number of queries is limited too (see the limits)."))
    text_chars: WholeNumber | None = Field(None, ge=1, description=(
        "With return_text: cut each title and text to this many characters (default and"
        " maximum: the service's max_text_chars)."))
    pipeline: str | None = Field(None, max_length=4096, description=(
        "A pipeline from the index's allow-list (GET /v1/indexes/{name}); default: the index's own."))
    # strict: JSON 0 is not false.
    return_text: bool = Field(False, strict=True, description="Add each hit's title and text.")
    return_fields: bool = Field(False, strict=True, description="Add each hit's extra fields.")

    @model_validator(mode="after")
    def _one_form(self) -> SearchRequest:
        for name in ("query", "queries"):  # the schema has no null: leave the key out instead
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"'{name}' is null; leave it out")
        if (self.query is None) == (self.queries is None):
            raise ValueError("give either 'query' (one text) or 'queries' (a list), not both")
        if self.queries is not None and not self.queries:
            raise ValueError("'queries' is empty")
        return self

    @property
    def texts(self) -> list[str]:
        return [self.query] if self.query is not None else list(self.queries or [])


class Hit(BaseModel):
    doc_id: str
    score: float
    rank: int
    title: str | None = None
    text: str | None = None
    fields: dict[str, Any] | None = None


class QueryResult(BaseModel):
    query: str
    hits: list[Hit]


class Timing(BaseModel):
    total_ms: float = Field(description="Time inside the service for this request.")
    search_ms: float = Field(description="Encoding, retrieval and fusion (waiting included).")
    documents_ms: float = Field(description="Fetching titles, texts and fields.")


class SearchResponse(BaseModel):
    index: str
    pipeline: str
    k: int
    text_chars: int | None = Field(None, description=(
        "With return_text: each title and text was cut to at most this many characters."))
    version: int = Field(description="Live writes applied to the index when it was searched.")
    results: list[QueryResult]
    timing: Timing


class StageInfo(BaseModel):
    name: str
    kind: str
    params: dict[str, Any]
    encoder: str | None = None
    count: int | None = None
    factory: str | None = None


class IndexInfo(BaseModel):
    name: str
    pipeline: str = Field(description="The pipeline searches use by default.")
    kind: str = Field(description="The stored stages' kinds, e.g. bm25+dense.")
    encoder: str | None
    count: int = Field(description="Searchable documents now, live writes included.")
    version: int = Field(description="Sequence number of the last live write (0: as built).")
    format_version: int
    built_count: int
    writable: bool
    read_only_reason: str | None
    stages: list[StageInfo]
    pipelines: list[str] = Field(description="Pipelines a search may ask for.")


class IndexList(BaseModel):
    indexes: list[IndexInfo]


class DocumentBody(Strict):
    """A document as stored: searchable title and text, plus any JSON fields."""

    doc_id: str = Field(min_length=1, max_length=1024, examples=["doc-1"])
    title: str = ""
    text: str = ""
    fields: dict[str, Any] = Field(default_factory=dict)

    @field_validator("doc_id")
    @classmethod
    def _id(cls, value: str) -> str:
        check_text(value, "doc_id")
        if value != value.strip() or any(ord(c) < 32 for c in value):
            raise ValueError("doc_id must not hold control characters or surrounding spaces")
        return value

    @field_validator("title", "text")
    @classmethod
    def _text(cls, value: str) -> str:
        return check_text(value, "title/text")

    @field_validator("fields")
    @classmethod
    def _finite(cls, value: dict[str, Any]) -> dict[str, Any]:
        # NaN and Infinity parse from JSON but cannot be written back as JSON: they would be
        # stored and read back as null. Refuse them rather than change the document.
        where = non_finite(value)
        if where is not None:
            raise ValueError(f"fields{where} is not a finite number (NaN and Infinity are not"
                             " JSON)")
        return value


class PutDocuments(Strict):
    documents: list[DocumentBody] = Field(min_length=1, max_length=100_000)

    @model_validator(mode="after")
    def _has_text(self) -> PutDocuments:
        for doc in self.documents:
            if not (doc.title + doc.text).strip():
                raise ValueError(f"document {doc.doc_id!r} has no title or text to index")
        return self


    def latest(self) -> list[DocumentBody]:
        """The documents to write: a doc_id given twice is written as its last copy, as two
        PUTs in a row would leave it (a JSON schema cannot say "unique by doc_id", so refusing
        would break the contract). Count limits apply to the request as sent, before this."""
        return list({d.doc_id: d for d in self.documents}.values())


class DeleteDocuments(Strict):
    ids: list[str] = Field(min_length=1, max_length=100_000)

    @field_validator("ids")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        for doc_id in value:
            check_text(doc_id, "id")
        if len(set(value)) != len(value):
            raise ValueError("an id appears twice in one request")
        return value


class WriteResponse(BaseModel):
    index: str
    version: int = Field(description="The index version after this write.")
    changed: list[str] = Field(description="Ids written or deleted.")
    not_found: list[str] = Field(default_factory=list, description="Ids to delete that did not exist.")
    count: int = Field(description="Searchable documents after this write.")


class Health(BaseModel):
    status: str
    indexes: dict[str, str] = Field(default_factory=dict)
    detail: str | None = None


class Problem(BaseModel):
    """Every error answer: one message meant for a person."""

    detail: str
