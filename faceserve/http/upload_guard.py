"""The upload guard: no request reaches BentoML's parsers in a shape that could make it read text as a file."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from urllib.parse import urlparse

from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, Headers
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser

from faceserve.errors import FaceserveError, InvalidRequest, LimitExceeded, UnsupportedRequest
from faceserve.http.responses import error_response

log = logging.getLogger(__name__)

# The most file parts the framework's multipart parser takes (Starlette's `Request.form()` default, as BentoML
# calls it); past it, it answers a bare 400 before any endpoint runs.
FRAMEWORK_MAX_FILES = 1000


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

    `file_counts`: per route, a check of how many files a request uploads (it raises the route's own limit
    error); it runs here because past FRAMEWORK_MAX_FILES the framework would refuse before the route could.
    """

    def __init__(self, app, file_fields: tuple[str, ...] = ("image", "images"),
                 file_counts: Mapping[str, Callable[[int], None]] | None = None):
        self.app = app
        self.file_fields = file_fields
        self.file_counts = dict(file_counts or {})

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
            raise UnsupportedRequest("compressed request bodies (Content-Encoding) are not accepted; send the body "
                                     "as is", code="unsupported_encoding")
        headers = Headers(scope=scope)
        kind, options = parse_options_header(headers.get("content-type"))
        _check_charset(options.get(b"charset"), "the request")
        if kind == b"application/x-www-form-urlencoded":
            form = await _parse(FormParser(headers, _once(body)))
        elif kind == b"multipart/form-data":
            parser = _FormHeadersParser(headers, _once(body), max_files=FRAMEWORK_MAX_FILES)
            form = await _parse(parser)
            self._check_file_count(scope.get("path", ""), parser.files)
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

    def _check_file_count(self, path: str, files: int) -> None:
        if path in self.file_counts:
            self.file_counts[path](files)
        if files > FRAMEWORK_MAX_FILES:
            raise LimitExceeded(f"{files} files in one request; at most {FRAMEWORK_MAX_FILES}", code="too_many_files")


_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def _check_charset(charset: bytes | str | None, where: str) -> None:
    if charset is None:
        return
    name = charset.decode("latin-1") if isinstance(charset, bytes) else charset
    if name.strip().lower() not in _CHARSETS:
        raise UnsupportedRequest(f"{where} declares charset {name[:40]!r}; only UTF-8 is accepted",
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
    File parts past `max_files` are only counted (`files`), not refused here.
    """

    @property
    def files(self) -> int:
        return self._current_files

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._current_part.content_disposition)
        if self._current_files < self.max_files or b"filename" not in options:
            return super().on_headers_finished()
        self._current_files += 1  # no file object for a part that is refused anyway
        self._current_part.file = _COUNTED_ONLY

    def on_part_end(self) -> None:
        if self._current_part.file is not _COUNTED_ONLY:
            super().on_part_end()

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


_COUNTED_ONLY = object()  # the file of a part past the parser's `max_files`
