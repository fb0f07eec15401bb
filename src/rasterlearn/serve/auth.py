"""API keys: a file of SHA-256 hashes, one a line; a caller is known by its key's hash.

A key is accepted as ``Authorization: Bearer KEY``, ``X-API-Key: KEY`` or ArcGIS's ``token``
parameter (query string or form). Without a keys file every caller is ``anonymous`` (and the
service binds to loopback only).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from fastapi import Request

from rasterlearn.errors import ParameterError

ANONYMOUS = "anonymous"
_HASH = re.compile(r"^[0-9a-f]{64}$")


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of ``key``: what the keys file holds."""
    return hashlib.sha256(key.strip().encode()).hexdigest()


def owner_of(key_hash: str) -> str:
    """The owner id of a key (the start of its hash): what jobs and uploads are filed under."""
    return key_hash[:16]


def load_keys(path: str | Path) -> set[str]:
    """The hashed keys of a keys file (``#`` comments and anything after the hash ignored).

    Raises:
        ParameterError: when the file is unreadable, or a line is not a SHA-256 hex digest.
    """
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ParameterError(f"cannot read the API keys file {path}: {err.strerror}") from None
    keys = set()
    for number, line in enumerate(text.splitlines(), 1):
        word = line.split("#", 1)[0].split()[:1]
        if not word:
            continue
        if not _HASH.match(word[0].lower()):
            raise ParameterError(
                f"line {number} of {path} is not a SHA-256 hex digest",
                "write one hashed key a line: printf %s KEY | sha256sum",
            )
        keys.add(word[0].lower())
    return keys


class AuthError(Exception):
    """No key (401) or an unknown key (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def presented_key(request: Request) -> str | None:
    """The key the request carries, if any."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if request.headers.get("x-api-key"):
        return request.headers["x-api-key"].strip()
    if request.query_params.get("token"):
        return request.query_params["token"]
    content_type = request.headers.get("content-type", "")
    if request.method == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
        token = (await request.form()).get("token")
        return str(token) if token else None
    return None


async def caller(request: Request) -> str:
    """The owner id of the request's key (a FastAPI dependency).

    Raises:
        AuthError: 401 without a key, 403 with an unknown one.
    """
    keys: set[str] | None = request.app.state.service.keys
    if keys is None:
        return ANONYMOUS
    key = await presented_key(request)
    if not key:
        raise AuthError(401, "an API key is required (Authorization: Bearer KEY)")
    digest = hash_key(key)
    if digest not in keys:
        raise AuthError(403, "the API key is not valid")
    return owner_of(digest)
