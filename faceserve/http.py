"""HTTP concerns shared by every endpoint: error bodies, body size limit, overload answers, upload guard.

Every error leaves the service as `{"error": <code>, "message": <sentence>}`:
our own errors through `json_errors`, and BentoML's own (request validation,
its concurrency limiter) rewritten by `ErrorShapeMiddleware`. Two corrections to
BentoML itself live here too, applied by service.py before the app is built: its
URL downloader closed (`close_framework_downloads`) and its /metrics labels
bounded (`bound_metrics_labels`).
"""

from __future__ import annotations

import collections
import functools
import json
import logging
from collections.abc import Collection
from urllib.parse import urlparse

from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.responses import JSONResponse

from faceserve.errors import FaceserveError, InvalidRequest

log = logging.getLogger(__name__)

# Codes for errors BentoML answers itself, by status.
_FRAMEWORK_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed",
                    413: "body_too_large", 415: "unsupported_media_type", 422: "invalid_request",
                    429: "overloaded", 500: "internal_error", 503: "unavailable"}
RETRY_AFTER_S = "1"
# Answered without an API key, never limited, and labelled by name in /metrics.
OPEN_PATHS = frozenset({"/readyz", "/livez", "/healthz", "/metrics"})


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

    def __init__(self, app, max_concurrency: int):
        self.app = app
        self.max_concurrency = max_concurrency
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
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
    """ASGI middleware: refuse any request that could make BentoML treat text as a file, before it parses it.

    The decision is taken on the very headers and bytes the framework will parse, with
    the framework's own parsers: Starlette's `Headers` (the first Content-Type wins),
    its urlencoded parser and its multipart parser (names decoded as it decodes them;
    file bytes skipped, not spooled). A file field holding text is a 400; a request two
    readers could read differently is refused outright: several Content-Type headers, a
    charset other than UTF-8/ASCII (on the body, a part, or a `_charset_` field), a part
    with two Content-Disposition headers, a compressed body. BentoML's downloader itself
    is closed by `close_framework_downloads`; this guard gives the caller the reason.
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
        try:
            await self._check(scope, body)
        except FaceserveError as error:
            log.info("upload guard: %s %s", error.code, error.message)
            return await error_response(error)(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _check(self, scope, body: bytes) -> None:
        raw = scope.get("headers") or []
        if sum(name == b"content-type" for name, _ in raw) > 1:
            raise InvalidRequest("the request has several Content-Type headers; send exactly one",
                                 code="ambiguous_request")
        encodings = [value.strip().lower() for name, value in raw if name == b"content-encoding"]
        if any(encoding not in (b"", b"identity") for encoding in encodings):
            raise FaceserveError("compressed request bodies (Content-Encoding) are not accepted; send the body as is",
                                 status=415, code="unsupported_encoding")
        headers = Headers(scope=scope)
        kind, options = parse_options_header(headers.get("content-type"))
        _check_charset(options.get(b"charset"), "the request")
        if kind == b"application/x-www-form-urlencoded":
            form = await _parse(FormParser(headers, _once(body)))
        elif kind == b"multipart/form-data":
            form = await _parse(_FormHeadersParser(headers, _once(body)))
        else:
            text = body[:4096].decode("utf-8", "ignore")
            if any(urlparse(t).scheme in ("http", "https") for t in (text, text.strip().strip("\"'"))):
                raise InvalidRequest("the body is a URL; send JSON with an `image_url` field instead")
            return
        for value in form.getlist("_charset_"):
            _check_charset(value if isinstance(value, str) else None, "the `_charset_` field")
        for name in self.file_fields:
            if any(isinstance(value, str) for value in form.getlist(name)):
                raise InvalidRequest(f"the `{name}` field must be a file upload, not text; "
                                     "to give a URL, send JSON with an `image_url` field")


_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def _check_charset(charset: bytes | str | None, where: str) -> None:
    if charset is None:
        return
    name = charset.decode("latin-1") if isinstance(charset, bytes) else charset
    if name.strip().lower() not in _CHARSETS:
        raise FaceserveError(f"{where} declares charset {name[:40]!r}; only UTF-8 is accepted", status=415,
                             code="unsupported_charset")


async def _once(body: bytes):
    yield body


async def _parse(parser) -> FormData:
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidRequest(f"the form body cannot be parsed: {exc.message}") from None
    for _, value in form.multi_items():  # file parts hold empty in-memory files; close them now
        if not isinstance(value, str):
            value.file.close()
    return form


class _FormHeadersParser(MultiPartParser):
    """Starlette's multipart parser, as the framework runs it, except that file bytes are skipped.

    Field names, text values and which parts are files come out exactly as in
    `Request.form()`; a part with two Content-Disposition headers or a charset
    other than UTF-8 is refused (Starlette would take the last header, and ignores part charsets).
    """

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self._dispositions = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is None:
            super().on_part_data(data, start, end)

    def on_header_end(self) -> None:
        name = self._current_partial_header_name.lower()
        if name == b"content-disposition":
            self._dispositions += 1
            if self._dispositions > 1:
                raise InvalidRequest("a form part has several Content-Disposition headers; send exactly one",
                                     code="ambiguous_request")
        elif name == b"content-type":
            _check_charset(parse_options_header(self._current_partial_header_value)[1].get(b"charset"),
                           "a form part")
        super().on_header_end()


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


# ---- BentoML's own behaviour, corrected where it is decided

def close_framework_downloads() -> None:
    """Make BentoML's request parsers unable to download: a string in a file field is a 400, whatever the request.

    BentoML 1.4 turns text in a form's file field into a file by downloading it
    (`MultipartSerde.ensure_file`), and a JSON body for a one-file endpoint that is a URL
    likewise (`JSONSerde.parse_request`): no byte cap, compressed encodings followed,
    proxy variables honoured, addresses checked weakly. Its serde registry, which the
    server reads per request, gets subclasses without either path. Call once, before the
    ASGI app is built (service.py does); raises if BentoML's parsers are not the ones
    this was written against.
    """
    from _bentoml_impl import serde

    json_type = serde.ALL_SERDE["application/json"]
    if getattr(json_type, "faceserve_no_download", False):
        return
    if not (json_type is serde.JSONSerde
            and serde.ALL_SERDE["multipart/form-data"] is serde.MultipartSerde
            and serde.ALL_SERDE["application/x-www-form-urlencoded"] is serde.MultipartSerde
            and callable(getattr(serde.MultipartSerde, "ensure_file", None))):
        raise RuntimeError("BentoML's request parsers changed; faceserve.http.close_framework_downloads must be "
                           "revised before this version serves requests")
    from bentoml.exceptions import BadInput

    class NoDownloadJSONSerde(serde.JSONSerde):
        faceserve_no_download = True
        parse_request = serde.Serde.parse_request  # JSONSerde's own first downloads a body that is a URL

    class NoDownloadMultipartSerde(serde.MultipartSerde):
        faceserve_no_download = True

        @staticmethod
        async def ensure_file(obj):
            if isinstance(obj, UploadFile):
                return obj
            raise BadInput("a file field holds text, not a file upload; "
                           "to give a URL, send JSON with an `image_url` field")

    serde.ALL_SERDE["application/json"] = NoDownloadJSONSerde
    serde.ALL_SERDE["multipart/form-data"] = NoDownloadMultipartSerde
    serde.ALL_SERDE["application/x-www-form-urlencoded"] = NoDownloadMultipartSerde


# ---- /metrics: one series per known path, not one per path a client invents

_DOC_PATHS = frozenset({"/", "/docs.json", "/schema.json"})
_STATIC_PREFIXES = ("/static_content/", "/assets/")
UNKNOWN_PATH_LABEL = "other"
_REAL_PATH = "faceserve.real_path"


def metrics_endpoint(path: str, routes: Collection[str]) -> str:
    """The `endpoint` label for `path`: itself when the service has it, else one fixed bucket."""
    if path in routes or path in OPEN_PATHS or path in _DOC_PATHS:
        return path
    for prefix in _STATIC_PREFIXES:
        if path.startswith(prefix):
            return prefix.rstrip("/")
    return UNKNOWN_PATH_LABEL


class _RealPath:
    """Gives the app behind the metrics middleware the path it was called with."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if _REAL_PATH in scope:
            scope = {**scope, "path": scope[_REAL_PATH]}
        await self.app(scope, receive, send)


def bound_metrics_labels() -> None:
    """Label BentoML's HTTP metrics with `metrics_endpoint(path)` instead of the raw request path.

    BentoML labels every series by `scope["path"]`, so each path a client invents
    becomes a new series in every worker for the life of the process. Its metrics
    middleware, looked up when the app is built, gets a subclass that reads a bounded
    label from the scope; the request itself keeps its path. Call before the app is built.
    """
    from bentoml._internal.context import server_context
    from bentoml._internal.server.http import instruments

    original = instruments.RunnerTrafficMetricsMiddleware
    if getattr(original, "faceserve_bounded", False):
        return

    class BoundedTrafficMetricsMiddleware(original):
        faceserve_bounded = True

        def __init__(self, app, **options):
            super().__init__(_RealPath(app), **options)

        async def __call__(self, scope, receive, send):
            path = scope.get("path")
            if scope["type"] in ("http", "websocket") and _REAL_PATH not in scope:
                label = metrics_endpoint(path, server_context.service_routes)
                if label != path:
                    scope = {**scope, "path": label, _REAL_PATH: path}
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = BoundedTrafficMetricsMiddleware
