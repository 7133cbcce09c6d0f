"""The OpenAPI document says what the server enforces: the configured limits (not the hard
bounds of the models), that ``query`` and ``queries`` exclude each other, that a document
needs a title or text, and which characters ids and texts may hold.

A client generated from the document, or a fuzzer such as schemathesis, then sends nothing
the schema allows and the server refuses, and nothing the schema forbids and the server takes.
"""

from __future__ import annotations

from typing import Any

from cormorant.service.settings import Limits

# At least one character that is not whitespace as str.strip() sees it. Spelled out: a regex
# \S follows ECMAScript's whitespace, which lacks \x1c-\x1f and \x85 and adds \ufeff.
PY_SPACE = ("\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a"
            "\\u2028\\u2029\\u202f\\u205f\\u3000")
NOT_BLANK = f"[^{PY_SPACE}]"
NO_NUL = r"^[^\x00]*$"
# No control characters and no surrounding whitespace (str.strip's): the rule DocumentBody checks.
DOC_ID = f"^[^\\x00-\\x1f{PY_SPACE}](?:[^\\x00-\\x1f]*[^\\x00-\\x1f{PY_SPACE}])?$"


def describe_limits(schema: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """Edit a generated OpenAPI document in place (and return it) to state ``limits``.

    Example:
        >>> doc = {"components": {"schemas": {}}}
        >>> describe_limits(doc, Limits()) is doc
        True
    """
    components = schema.get("components", {}).get("schemas", {})
    for name, model in components.items():
        props = model.get("properties", {})
        if name == "SearchRequest":
            _search(model, props, limits)
        elif name.startswith("DocumentBody"):
            _document(model, props, limits)
        elif name == "PutDocuments":
            props["documents"]["maxItems"] = limits.max_documents_per_write
        elif name == "DeleteDocuments":
            props["ids"].update(maxItems=limits.max_documents_per_write, uniqueItems=True)
            props["ids"]["items"].update(maxLength=limits.max_id_chars, pattern=NO_NUL)
    _link_writes_to_reads(schema)
    return schema


def _link_writes_to_reads(schema: dict[str, Any]) -> None:
    """OpenAPI links from a write to reading what it wrote (or deleted), so a stateful client
    (schemathesis) follows the document the write named instead of guessing a link from a
    batch DELETE to any document's GET."""
    documents = schema.get("paths", {}).get("/v1/indexes/{name}/documents", {})
    read = next((op.get("operationId") for op in schema.get("paths", {})
                 .get("/v1/indexes/{name}/documents/{doc_id}", {}).values()), None)
    if read is None:
        return
    for method, pointer, name in (("put", "documents/0/doc_id", "ReadWritten"),
                                  ("delete", "ids/0", "ReadDeleted")):
        answer = documents.get(method, {}).get("responses", {}).get("200")
        if answer is not None:
            answer["links"] = {name: {"operationId": read, "parameters": {
                "name": "$request.path.name", "doc_id": f"$request.body#/{pointer}"}}}


def _search(model: dict[str, Any], props: dict[str, Any], limits: Limits) -> None:
    props["k"]["maximum"] = limits.max_k
    text = {"type": "string", "minLength": 1, "maxLength": limits.max_query_chars,
            "pattern": NOT_BLANK}
    props["query"] = {**text, "description": props["query"].get("description", "")}
    props["queries"] = {"type": "array", "items": text, "minItems": 1,
                        "maxItems": limits.max_batch,
                        "description": props["queries"].get("description", "")}
    props["text_chars"] = {"anyOf": [{"type": "integer", "minimum": 1,
                                      "maximum": limits.max_text_chars}, {"type": "null"}],
                           "description": props["text_chars"].get("description", "")}
    model["oneOf"] = [{"required": ["query"]}, {"required": ["queries"]}]


def _document(model: dict[str, Any], props: dict[str, Any], limits: Limits) -> None:
    props["doc_id"].update(maxLength=limits.max_id_chars, pattern=DOC_ID)
    for field in ("title", "text"):
        props[field].update(maxLength=limits.max_document_chars, pattern=NO_NUL)
    model["anyOf"] = [{"properties": {f: {"pattern": NOT_BLANK}}, "required": [f]}
                      for f in ("title", "text")]
