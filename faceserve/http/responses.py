"""Every error leaves the service in one shape, `{"error": <code>, "message": <sentence>}`.

`FaceserveError.body()` (faceserve/errors.py) is the shape; `error_response` is its HTTP answer,
used by our endpoints (`json_errors`) and middlewares alike; `ErrorShapeMiddleware` rewrites
BentoML's own error answers (request validation, unknown paths) into it and enforces the body
size limit.
"""

from __future__ import annotations

import functools
import json
import logging

from starlette.responses import JSONResponse

from faceserve.errors import FaceserveError, PayloadTooLarge
from faceserve.http import HEALTH_PATHS

log = logging.getLogger(__name__)

# Codes for errors BentoML answers itself, by status.
_FRAMEWORK_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed",
                    413: "body_too_large", 415: "unsupported_media_type", 422: "invalid_request",
                    429: "overloaded", 500: "internal_error", 503: "unavailable"}
RETRY_AFTER_S = "1"


def error_response(error: FaceserveError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def json_errors(func):
    """Turn FaceserveError raised by an endpoint into its JSON answer (never a 500)."""

    @functools.wraps(func)
    async def endpoint(*args, **kwargs):
        try:
            return await func(*args, **kwargs)
        except FaceserveError as error:
            log.info("%s: %s %s", func.__name__, error.code, error.message)
            _answer_through_context(error, kwargs)
            return error_response(error)

    return endpoint


def _answer_through_context(error: FaceserveError, kwargs: dict) -> None:
    """BentoML gives an endpoint that takes its `bentoml.Context` the context's status and headers, whatever
    the endpoint returns: there the error's must be set on the context."""
    from bentoml import Context

    for value in kwargs.values():
        if isinstance(value, Context):
            value.response.status_code = error.status
            value.response.headers.update(error.headers)


def _framework_message(status: int, body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip() or f"HTTP {status}"
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        message = str(data.get("error") or data.get("detail") or data)
        details = data.get("detail")
        if isinstance(details, list):
            fields = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in details
                               if isinstance(d, dict))
            message = f"{message}: {fields}" if fields else message
        return message
    return str(data)


class ErrorShapeMiddleware:
    """ASGI middleware: body size limit (`max_body_bytes`, or the route's own in `route_body_bytes`), and every
    4xx/5xx JSON answer in our shape."""

    def __init__(self, app, max_body_bytes: int, route_body_bytes: dict[str, int] | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.route_body_bytes = dict(route_body_bytes or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.route_body_bytes.get(scope["path"], self.max_body_bytes)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._reject_too_large(scope, receive, send, int(length), limit)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge()
            return message

        start: dict | None = None
        chunks: list[bytes] = []
        sent_start = False

        async def shaped_send(message):
            nonlocal start, sent_start
            if message["type"] == "http.response.start":
                if message["status"] >= 400 and not scope["path"].endswith(tuple(HEALTH_PATHS)):
                    start = message
                    return
                sent_start = True
                return await send(message)
            if start is None:
                return await send(message)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                await self._send_shaped(start, b"".join(chunks), send)

        try:
            await self.app(scope, limited_receive, shaped_send)
        except _BodyTooLarge:
            if not sent_start:
                await self._reject_too_large(scope, receive, send, received, limit)

    @staticmethod
    async def _reject_too_large(scope, receive, send, size: int, limit: int) -> None:
        error = PayloadTooLarge(f"the request body is at least {size} bytes; the limit is {limit} bytes")
        await error_response(error)(scope, receive, send)

    @staticmethod
    async def _send_shaped(start: dict, body: bytes, send) -> None:
        status = start["status"]
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
        try:
            data = json.loads(body)
            ours = isinstance(data, dict) and set(data) >= {"error", "message"}
        except ValueError:
            ours = False
        if not ours:
            error = FaceserveError(_framework_message(status, body), code=_FRAMEWORK_CODES.get(status, "error"),
                                   status=status)
            body = json.dumps(error.body()).encode()
        if status in (429, 503) and not any(k.lower() == b"retry-after" for k, _ in headers):
            headers.append((b"retry-after", RETRY_AFTER_S.encode()))
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass
