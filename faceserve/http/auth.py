"""Optional API keys: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

Configured by FACESERVE_API_KEYS (comma-separated) and/or FACESERVE_API_KEYS_FILE
(one key per line). With no key configured the middleware is not installed.
Health, metrics and the web page's files stay open (`is_public`). Keys are compared
in constant time (on their SHA-256 digests, so neither content nor length leaks) and
never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from faceserve.errors import Unauthorized
from faceserve.http import is_public
from faceserve.http.responses import error_response

log = logging.getLogger(__name__)


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key if isinstance(key, bytes) else key.encode()).digest()


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        name = name.lower()
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
    return None


class ApiKeyMiddleware:
    """ASGI middleware: 401 with our JSON error body unless a configured key is presented."""

    def __init__(self, app, keys: tuple[str, ...] | list[str]):
        self.app = app
        self.digests = [_digest(key) for key in keys]

    def accepts(self, key: bytes | None) -> bool:
        if key is None:
            return False
        candidate = _digest(key)
        matched = False
        for digest in self.digests:  # every key is compared: no early exit
            matched |= hmac.compare_digest(candidate, digest)
        return matched

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or is_public(scope["path"]) or not self.digests:
            return await self.app(scope, receive, send)
        key = presented_key(scope.get("headers") or [])
        if self.accepts(key):
            return await self.app(scope, receive, send)
        log.info("refused %s %s: %s API key", scope.get("method"), scope["path"],
                 "missing" if key is None else "wrong")
        message = ("an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
                   if key is None else "the API key is not valid")
        error = Unauthorized(message, headers={"WWW-Authenticate": 'Bearer realm="faceserve"'})
        await error_response(error)(scope, receive, send)
