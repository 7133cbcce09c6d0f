"""API keys: hashed in the settings, sent as ``X-API-Key`` or ``Authorization: Bearer``.

A key carries scopes: ``read`` (search, list, fetch documents), ``write`` (add, replace and
delete documents) and ``admin`` (``/metrics``). Writes and admin calls always need a key; reads
need one unless the operator sets ``open_reads``. A missing or unknown key answers 401, a known
key without the scope 403, and neither says which keys or scopes exist.

Example:
    >>> digest = hash_key("s3cret-key")
    >>> KeyRing([ApiKey(name="app", sha256=digest, scopes=["read"])]).identify("s3cret-key").name
    'app'
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cormorant.service.settings import ApiKey, Scope

HEADER = "X-API-Key"


def hash_key(key: str) -> str:
    """The SHA-256 hex digest stored in the settings for ``key``.

    Keys are random tokens (``new_key()``), not passwords, so one fast hash is enough: nobody
    can guess a 256-bit token from its digest.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random key (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


class KeyRing:
    """The configured keys, looked up by the digest of what a request presents."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._keys = list(keys)

    def identify(self, presented: str | None) -> ApiKey | None:
        """The key matching ``presented``, or None. Compares every digest in constant time."""
        if not presented:
            return None
        digest = hash_key(presented)
        found = None
        for key in self._keys:
            # No early exit: the time taken does not tell how many keys were checked.
            if hmac.compare_digest(key.sha256, digest):
                found = key
        return found


def presented_key(x_api_key: str | None, bearer_token: str | None) -> str | None:
    """The key from ``X-API-Key``, else the token of ``Authorization: Bearer <key>`` (what
    Prometheus sends for a scrape configured with ``authorization: {credentials: ...}``)."""
    return x_api_key or bearer_token or None


def allowed(key: ApiKey | None, scope: Scope, open_access: bool) -> bool:
    """Whether a request holding ``key`` may do something that needs ``scope``."""
    return open_access or (key is not None and scope in key.scopes)
