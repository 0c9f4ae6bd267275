"""HTTP concerns shared by every endpoint: error bodies, body size limit, overload answers.

Every error leaves the service as `{"error": <code>, "message": <sentence>}`:
our own errors through `json_errors`, and BentoML's own (request validation,
its concurrency limiter) rewritten by `ErrorShapeMiddleware`.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
from urllib.parse import parse_qsl, urlparse

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.responses import JSONResponse

from faceserve.errors import FaceserveError

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
            return error_response(error)

    return endpoint


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
    """ASGI middleware: body size limit, and every 4xx/5xx JSON answer in our shape."""

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self._reject_too_large(scope, receive, send, int(length))
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge()
            return message

        start: dict | None = None
        chunks: list[bytes] = []
        sent_start = False

        async def shaped_send(message):
            nonlocal start, sent_start
            if message["type"] == "http.response.start":
                if message["status"] >= 400 and not scope["path"].endswith(("/readyz", "/livez", "/healthz")):
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
                await self._reject_too_large(scope, receive, send, received)

    async def _reject_too_large(self, scope, receive, send, size: int) -> None:
        response = JSONResponse(
            {"error": "body_too_large",
             "message": f"the request body is at least {size} bytes; the limit is {self.max_body_bytes} bytes"},
            status_code=413)
        await response(scope, receive, send)

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
            body = json.dumps({"error": _FRAMEWORK_CODES.get(status, "error"),
                               "message": _framework_message(status, body)}).encode()
        if status in (429, 503) and not any(k.lower() == b"retry-after" for k, _ in headers):
            headers.append((b"retry-after", RETRY_AFTER_S.encode()))
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


class ConcurrencyLimitMiddleware:
    """ASGI middleware: beyond `max_concurrency` requests in flight, answer 503 with Retry-After at once.

    Replaces BentoML's `traffic.max_concurrency`, whose 429 is sent by a middleware
    outside ours (so it could carry neither our body nor Retry-After). Health and
    metrics are never limited.
    """

    OPEN_PATHS = frozenset({"/readyz", "/livez", "/healthz", "/metrics"})

    def __init__(self, app, max_concurrency: int):
        self.app = app
        self.max_concurrency = max_concurrency
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.OPEN_PATHS:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_concurrency:
            response = JSONResponse(
                {"error": "overloaded",
                 "message": f"the server is handling its limit of {self.max_concurrency} concurrent requests; "
                            f"retry after {RETRY_AFTER_S} s"},
                status_code=503, headers={"Retry-After": RETRY_AFTER_S})
            return await response(scope, receive, send)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class UploadGuardMiddleware:
    """ASGI middleware closing BentoML's own URL downloads.

    BentoML fetches a URL itself when a file field of a form (multipart or urlencoded) holds a
    string instead of a file, or when a JSON body is nothing but an http(s) URL —
    with no byte cap and none of our address checks. Both are refused here with
    a 400; URLs go through `image_url` (faceserve.urlfetch) or nowhere.
    """

    def __init__(self, app, file_fields: tuple[str, ...] = ("image", "images")):
        self.app = app
        self.file_fields = file_fields

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = self._problem(scope, body)
        if problem:
            response = JSONResponse({"error": "invalid_request", "message": problem}, status_code=400)
            return await response(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _problem(self, scope, body: bytes) -> str | None:
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
        kind, options = parse_options_header(content_type)
        if kind == b"application/x-www-form-urlencoded":  # every field of such a form is text
            text_fields = {name for name, _ in parse_qsl(body.decode("latin-1"), keep_blank_values=True)}
        elif kind == b"multipart/form-data":
            try:
                text_fields = _MultipartTextFields(options[b"boundary"]).feed(body)
            except Exception as exc:  # malformed form: BentoML would answer it with a 500
                return f"the form body cannot be parsed: {exc}"
        else:
            text = body[:4096].decode("utf-8", "ignore")
            if any(urlparse(t).scheme in ("http", "https") for t in (text, text.strip().strip("\"'"))):
                return "the body is a URL; send JSON with an `image_url` field instead"
            return None
        for name in self.file_fields:
            if name in text_fields:
                return (f"the `{name}` field must be a file upload, not text; "
                        "to give a URL, send JSON with an `image_url` field")
        return None


class _MultipartTextFields:
    """The names of a multipart body's text parts (no `filename`, as Starlette decides), headers only.

    python-multipart's push parser with header callbacks: the part bodies are skipped, not
    copied or spooled, which costs a fraction of a full `Request.form()`.
    """

    def __init__(self, boundary: bytes):
        self._found: set[str] = set()
        self._field, self._value, self._disposition = b"", b"", b""
        self._parser = MultipartParser(boundary, {
            "on_header_field": self._on_field, "on_header_value": self._on_value,
            "on_header_end": self._on_header_end, "on_headers_finished": self._on_headers_finished})

    def feed(self, body: bytes) -> set[str]:
        self._parser.write(body)
        self._parser.finalize()
        return self._found

    def _on_field(self, data, start, end):
        self._field += data[start:end]

    def _on_value(self, data, start, end):
        self._value += data[start:end]

    def _on_header_end(self):
        if self._field.lower() == b"content-disposition":
            self._disposition = self._value
        self._field, self._value = b"", b""

    def _on_headers_finished(self):
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise ValueError('a part has no Content-Disposition "name"')
        if b"filename" not in options:
            self._found.add(options[b"name"].decode("utf-8", "replace"))
        self._disposition = b""


class KeepAliveLimitMiddleware:
    """ASGI middleware: close a client connection after `max_requests` requests (nginx's keepalive_requests).

    Workers share one listening socket, and a burst of new connections goes to whichever
    worker accepts first: a client's keep-alive pool can end up pinned to one worker while
    the others idle (15 of 16 Locust connections on one of two workers, measured). A
    bounded number of requests per connection lets the pool spread out again, because
    the least busy worker is the first to accept the reconnection.
    """

    TRACKED = 4096  # connections remembered; the oldest entries go first

    def __init__(self, app, max_requests: int):
        self.app = app
        self.max_requests = max_requests
        self._served: collections.OrderedDict[tuple, int] = collections.OrderedDict()

    async def __call__(self, scope, receive, send):
        client = scope.get("client")
        if scope["type"] != "http" or not client:
            return await self.app(scope, receive, send)
        connection = tuple(client)
        served = self._served.pop(connection, 0) + 1
        if served < self.max_requests:
            self._served[connection] = served
            if len(self._served) > self.TRACKED:
                self._served.popitem(last=False)
            return await self.app(scope, receive, send)

        async def closing_send(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)
        await self.app(scope, receive, closing_send)
