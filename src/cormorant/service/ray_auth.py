"""Ray's token authentication, turned on explicitly before Ray is imported.

Ray 2.60 reads ``RAY_AUTH_MODE`` and the token (``RAY_AUTH_TOKEN``, then
``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``) from the environment only, once, when it
is imported; left unset, a new local cluster turns it on and writes a token file, and joining a
cluster started otherwise fails. ``cormorant serve --ray`` calls :func:`token_auth` first (the
library itself leaves its process's environment alone).

Example:
    >>> token_auth("local")  # doctest: +SKIP
    >>> os.environ["RAY_AUTH_MODE"]  # doctest: +SKIP
    'token'
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from cormorant.errors import CormorantError

log = logging.getLogger(__name__)
AUTH_MODE = "RAY_AUTH_MODE"


def token_auth(address: str) -> None:
    """Set ``RAY_AUTH_MODE=token`` unless the mode is set (another mode is kept, with a
    warning: never silently off). A local cluster (``address`` ``"local"``) with no token gets
    a random one for this process.

    Raises:
        CormorantError: joining a cluster with token authentication and no token to give.
    """
    mode = os.environ.setdefault(AUTH_MODE, "token")
    if mode != "token":
        log.warning("%s=%s: Ray's token authentication is off; anyone who reaches the"
                    " cluster's ports can run code on it", AUTH_MODE, mode)
        return
    has_token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") \
        or (Path.home() / ".ray" / "auth_token").is_file()
    if not has_token:
        if address != "local":
            raise CormorantError("Ray token authentication is on and no token is set: export"
                                 " RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) with the cluster's"
                                 " token, from `ray get-auth-token` on its head")
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
