"""A sharded index on disk: the manifest, and the rule that routes a document to its shard.

A sharded index is a directory holding one ordinary index per shard (``shard-000/``, ...),
each openable on its own, and a ``meta.json`` manifest: ``kind: "sharded"``, the pipeline,
the shard count, the routing rule, a random ``uid`` and what the shards share (each stored
stage's build settings, encoder fingerprint and FDE settings). Each shard's ``meta.json``
names the sharded index it belongs to and its place in it (``shard``: uid, number, count),
and checks its own files by SHA-256 as any index does; a merge rewrites a shard's files and
checksums but keeps that record, so the manifest need not change when a shard is merged.

The routing rule is a stable hash of the document id, the same in every process and on every
machine (Python's ``hash`` is salted per process): BLAKE2b's first 8 bytes, big-endian, modulo
the shard count.

Example:
    >>> shard_of("doc-1", 3), shard_of("doc-1", 3) == shard_of("doc-1", 3)
    (1, True)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cormorant.errors import IndexFormatError

SHARDED_KIND = "sharded"
ROUTING_RULE = "blake2b-64(doc_id) mod shards"
SHARDING_VERSION = 1
MAX_SHARDS = 1024


def shard_of(doc_id: str, shards: int) -> int:
    """The shard that holds ``doc_id`` among ``shards``."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard_dir(number: int) -> str:
    """The folder of shard ``number`` inside a sharded index."""
    return f"shard-{number:03d}"


def check_shard_count(shards: object) -> int:
    """``shards`` as a shard count.

    Raises:
        IndexFormatError: not a whole number from 1 to MAX_SHARDS.
    """
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise IndexFormatError(f"the shard count must be a whole number from 1 to {MAX_SHARDS},"
                               f" got {shards!r}")
    return shards


def check_manifest(path: Path, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Check a sharded index's manifest field by field (a hand edit can keep it valid JSON);
    returns its shard records.

    Raises:
        IndexFormatError: naming the field at fault.
    """
    where = path / "meta.json"
    if meta.get("sharding") != SHARDING_VERSION:
        raise IndexFormatError(f"{where}: sharding format {meta.get('sharding')!r}; this"
                               f" cormorant reads {SHARDING_VERSION}: rebuild the index")
    if meta.get("routing") != ROUTING_RULE:
        raise IndexFormatError(f"{where}: unknown routing rule {meta.get('routing')!r}")
    if not isinstance(meta.get("pipeline"), str):
        raise IndexFormatError(f"{where}: 'pipeline' must be a pipeline string")
    try:
        count = check_shard_count(meta.get("shards"))
    except IndexFormatError as exc:
        raise IndexFormatError(f"{where}: {exc}") from None
    parts = meta.get("parts")
    if not isinstance(parts, list) or len(parts) != count \
            or not all(isinstance(p, dict) for p in parts):
        raise IndexFormatError(f"{where}: 'parts' must list the {count} shards")
    for number, part in enumerate(parts):
        if part.get("dir") != shard_dir(number):
            raise IndexFormatError(f"{where}: parts[{number}] must name {shard_dir(number)}")
        if not (path / part["dir"]).is_dir():
            raise IndexFormatError(f"{path} is incomplete: {part['dir']} is missing")
    if not isinstance(meta.get("uid"), str):
        raise IndexFormatError(f"{where}: 'uid' must be a string")
    shared = meta.get("shared")
    if not isinstance(shared, list) or not all(isinstance(r, dict) for r in shared):
        raise IndexFormatError(f"{where}: 'shared' must list the stored stages' records")
    return parts


def shard_identity(uid: str, number: int, shards: int) -> dict[str, Any]:
    """What a shard's ``meta.json`` records of its place: the sharded index's uid, its
    number and the shard count."""
    return {"index": uid, "number": number, "of": shards}


def shared_record(leaf_meta: dict[str, Any]) -> dict[str, Any]:
    """What every shard's copy of one stored stage must agree on, from its ``meta.json``:
    its kind, build settings, encoder fingerprint (no shard may be encoded otherwise) and
    MUVERA's FDE settings and seed."""
    encoder = leaf_meta.get("encoder")
    return {"kind": leaf_meta.get("kind"), "params": leaf_meta.get("params"),
            "fingerprint": encoder.get("fingerprint") if isinstance(encoder, dict) else None,
            "fde": leaf_meta.get("fde")}
