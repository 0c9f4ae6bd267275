"""Request shapes that try to make the service (or BentoML under it) download a URL, and how to send them.

BentoML 1.4 downloads a URL itself when a form's file field holds text instead of a
file part (and when a JSON body for a one-file endpoint is a bare URL): no byte cap,
proxy variables honoured. Each `Shape` puts the hit counter's URL somewhere in a request:
duplicated or oddly cased headers, charsets on the body and on parts, encoded field
names, compressed and chunked bodies, JSON, urlencoded and multipart bodies, 1000
batch fields. `send` writes a shape exactly (header order and duplicates kept);
`HitCounter` is the HTTP server the URLs point to, counting every request it gets,
direct or as the proxy the service is told to use.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import http.server
import json
import threading
import zlib
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import quote, urlparse

ENDPOINTS = ("analyze", "analyze_batch", "annotate", "classify", "rotate")
BOUNDARY = "faceserve-shape-boundary"
FORM = "application/x-www-form-urlencoded"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"

INVALID = (400, "invalid_request")
AMBIGUOUS = (400, "ambiguous_request")
CHARSET = (415, "unsupported_charset")
# A body neither JSON nor a multipart form: refused before anything reads it (faceserve/http/auth.py).
MEDIA_TYPE = (415, "unsupported_media_type")
ENCODING = (415, "unsupported_encoding")


@dataclass(frozen=True)
class Shape:
    name: str
    endpoint: str
    headers: tuple[tuple[str, str], ...]  # sent in this order, duplicates kept; Content-Length is added
    body: bytes
    expect: tuple[int, str]  # where the body's type is one the service takes (`expected` below)
    chunked: bool = False  # Transfer-Encoding: chunked instead of Content-Length
    query: str = ""  # appended to the endpoint's path
    uses_image_url: bool = False  # a JSON `image_url`: fetched (once) where URL fetching is on

    @property
    def label(self) -> str:
        return f"{self.endpoint}: {self.name}"

    @property
    def expected(self) -> tuple[int, str]:
        """`expect`, unless the body is typed otherwise than JSON or a multipart form (or untyped): then 415."""
        types = [value.partition(";")[0].strip().lower() for name, value in self.headers
                 if name.lower() == "content-type"]
        if (types or self.body) and not (types and set(types) <= {"application/json", "multipart/form-data"}):
            return MEDIA_TYPE
        return self.expect


def part(disposition: str, value: bytes, *headers: str) -> bytes:
    lines = [f"Content-Disposition: {disposition}", *headers]
    return "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + value


def raw_part(header_block: bytes, value: bytes) -> bytes:
    return header_block + b"\r\n\r\n" + value


def multipart(*parts: bytes, boundary: str = BOUNDARY) -> bytes:
    b = boundary.encode()
    return b"".join(b"--" + b + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + b + b"--\r\n"


def shapes(url: str) -> list[Shape]:
    """Every shape, for every endpoint it applies to, with `url` as the URL to (not) download."""
    result: list[Shape] = []
    for endpoint in ENDPOINTS:
        result += _shapes_for(endpoint, url)
    result += _batch_shapes(url)
    return result


def _shapes_for(endpoint: str, url: str) -> list[Shape]:
    field = "images" if endpoint == "analyze_batch" else "image"
    u = url.encode()
    quoted = quote(url, safe="")
    text_part = part(f'form-data; name="{field}"', u)
    utf7_name = "+" + _utf7_letters(field) + "-"  # what a UTF-7 decoder turns into `field`
    made: list[Shape] = []

    def add(name, headers, body, expect, **options):
        made.append(Shape(name, endpoint, tuple(headers), body, expect, **options))

    # -- urlencoded
    add("urlencoded text in the file field", [("Content-Type", FORM)], f"{field}={quoted}".encode(), INVALID)
    add("urlencoded, field name percent-encoded", [("Content-Type", FORM)],
        ("".join(f"%{b:02X}" for b in field.encode()) + f"={quoted}").encode(), INVALID)
    add("urlencoded, the file field beside another field", [("Content-Type", FORM)],
        f"{field}={quoted}&detector=blazeface".encode(), INVALID)
    add("urlencoded; charset=utf-8", [("Content-Type", f"{FORM}; charset=utf-8")],
        f"{field}={quoted}".encode(), INVALID)
    add("urlencoded; charset=utf-16", [("Content-Type", f"{FORM}; charset=utf-16")],
        f"{field}={quoted}".encode("utf-16"), CHARSET)
    add("urlencoded, then a text/plain Content-Type", [("Content-Type", FORM), ("Content-Type", "text/plain")],
        f"{field}={quoted}".encode(), AMBIGUOUS)
    add("text/plain, then an urlencoded Content-Type", [("Content-Type", "text/plain"), ("Content-Type", FORM)],
        f"{field}={quoted}".encode(), AMBIGUOUS)
    add("urlencoded, header name in capitals", [("CONTENT-TYPE", FORM.upper())], f"{field}={quoted}".encode(),
        INVALID)
    add("urlencoded, gzip-encoded body", [("Content-Type", FORM), ("Content-Encoding", "gzip")],
        gzip.compress(f"{field}={quoted}".encode()), ENCODING)
    add("urlencoded, deflate-encoded body", [("Content-Type", FORM), ("Content-Encoding", "deflate")],
        zlib.compress(f"{field}={quoted}".encode()), ENCODING)
    add("urlencoded, chunked", [("Content-Type", FORM)], f"{field}={quoted}".encode(), INVALID, chunked=True)
    # -- multipart
    add("multipart text part in the file field", [("Content-Type", MULTIPART)], multipart(text_part), INVALID)
    add("multipart, then a text/plain Content-Type", [("Content-Type", MULTIPART), ("Content-Type", "text/plain")],
        multipart(text_part), AMBIGUOUS)
    add("text/plain, then a multipart Content-Type", [("Content-Type", "text/plain"), ("Content-Type", MULTIPART)],
        multipart(text_part), AMBIGUOUS)
    add("multipart, two identical Content-Type headers", [("Content-Type", MULTIPART), ("Content-Type", MULTIPART)],
        multipart(text_part), AMBIGUOUS)
    add("multipart; charset=utf-7, field name in UTF-7", [("Content-Type", f"{MULTIPART}; charset=utf-7")],
        multipart(part(f'form-data; name="{utf7_name}"', u)), CHARSET)
    add("multipart; charset=utf-16, field name in UTF-16", [("Content-Type", f"{MULTIPART}; charset=utf-16")],
        multipart(raw_part(b'Content-Disposition: form-data; name="' + field.encode("utf-16-le") + b'"', u)),
        CHARSET)
    add("multipart; charset=latin-1", [("Content-Type", f"{MULTIPART}; charset=latin-1")],
        multipart(text_part), CHARSET)
    add("multipart; charset=x-unknown", [("Content-Type", f"{MULTIPART}; charset=x-unknown")],
        multipart(text_part), CHARSET)
    add("multipart; charset given twice, utf-8 then utf-7",
        [("Content-Type", f"{MULTIPART}; charset=utf-8; charset=utf-7")],
        multipart(part(f'form-data; name="{utf7_name}"', u)), CHARSET)
    add("multipart; charset=UTF-8 (allowed)", [("Content-Type", f"{MULTIPART}; charset=UTF-8")],
        multipart(text_part), INVALID)
    add("multipart, part charset utf-7 and a UTF-7 name", [("Content-Type", MULTIPART)],
        multipart(part(f'form-data; name="{utf7_name}"', u, "Content-Type: text/plain; charset=utf-7")), CHARSET)
    add("multipart, _charset_ field utf-7 and a UTF-7 name", [("Content-Type", MULTIPART)],
        multipart(part('form-data; name="_charset_"', b"utf-7"), part(f'form-data; name="{utf7_name}"', u)),
        CHARSET)
    add("multipart, Content-Type in capitals", [("Content-Type", f"MULTIPART/FORM-DATA; boundary={BOUNDARY}")],
        multipart(text_part), INVALID)
    add("multipart, part headers in capitals and lower case", [("Content-Type", MULTIPART)],
        multipart(raw_part(f'CONTENT-DISPOSITION: form-data; name="{field}"'.encode(), u),
                  raw_part(f'content-disposition: form-data; name="{field}"'.encode(), u)), INVALID)
    add("multipart, two Content-Disposition headers in one part", [("Content-Type", MULTIPART)],
        multipart(part(f'form-data; name="{field}"; filename="a.png"', u,
                       f'Content-Disposition: form-data; name="{field}"')), AMBIGUOUS)
    add("multipart, only filename*= (RFC 5987)", [("Content-Type", MULTIPART)],
        multipart(part(f"form-data; name=\"{field}\"; filename*=UTF-8''a.png", u)), INVALID)
    add("multipart, only name*= (RFC 5987)", [("Content-Type", MULTIPART)],
        multipart(part(f"form-data; name*=UTF-8''{field}; filename=\"a.png\"", u)), INVALID)
    add("multipart, filename-less part typed image/png", [("Content-Type", MULTIPART)],
        multipart(part(f'form-data; name="{field}"', u, "Content-Type: image/png")), INVALID)
    add("multipart, part base64 Content-Transfer-Encoding", [("Content-Type", MULTIPART)],
        multipart(part(f'form-data; name="{field}"', u, "Content-Transfer-Encoding: base64")), INVALID)
    add("multipart, a file part then a text part of the same name", [("Content-Type", MULTIPART)],
        multipart(part(f'form-data; name="{field}"; filename="a.png"', b"\x89PNG\r\n\x1a\n", "Content-Type: image/png"),
                  text_part), INVALID)
    add("multipart, URL quoted inside the text part", [("Content-Type", MULTIPART)],
        multipart(part(f'form-data; name="{field}"', b'"' + u + b'"')), INVALID)
    add("multipart, nested multipart/mixed part", [("Content-Type", MULTIPART)],
        multipart(part(f'form-data; name="{field}"', multipart(part('file; filename="a.png"', u), boundary="inner"),
                       "Content-Type: multipart/mixed; boundary=inner")), INVALID)
    add("multipart, gzip-encoded body", [("Content-Type", MULTIPART), ("Content-Encoding", "gzip")],
        gzip.compress(multipart(text_part)), ENCODING)
    add("multipart, chunked", [("Content-Type", MULTIPART)], multipart(text_part), INVALID, chunked=True)
    add("multipart, no boundary parameter", [("Content-Type", "multipart/form-data")], multipart(text_part),
        INVALID)
    # A real file part whose bytes are a URL: kept as bytes, never fetched.
    add("multipart, the URL as the bytes of a file part", [("Content-Type", MULTIPART)],
        multipart(part(f'form-data; name="{field}"; filename="a.png"', u, "Content-Type: image/png")),
        (400, "invalid_image"))
    # -- JSON and bare bodies
    if endpoint == "analyze_batch":
        add("JSON images list of URLs", [("Content-Type", "application/json")],
            json.dumps({"images": [url, url]}).encode(), INVALID)
        add("JSON images_base64 holding a URL", [("Content-Type", "application/json")],
            json.dumps({"images_base64": [url]}).encode(), (400, "invalid_base64"))
    else:
        add("JSON image holding a URL", [("Content-Type", "application/json")],
            json.dumps({"image": url}).encode(), INVALID)
        add("JSON image holding a URL list", [("Content-Type", "application/json")],
            json.dumps({"image": [url]}).encode(), INVALID)
        add("JSON image_base64 holding a URL", [("Content-Type", "application/json")],
            json.dumps({"image_base64": url}).encode(), (400, "invalid_base64"))
        add("JSON image_url with URL fetching off", [("Content-Type", "application/json")],
            json.dumps({"image_url": url}).encode(), (400, "url_fetch_disabled"), uses_image_url=True)
    add("JSON; charset=utf-16", [("Content-Type", "application/json; charset=utf-16")],
        json.dumps({field: url}).encode("utf-16"), CHARSET)
    add("JSON, gzip-encoded", [("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
        gzip.compress(json.dumps({field: url}).encode()), ENCODING)
    add("bare URL as JSON", [("Content-Type", "application/json")], u, INVALID)
    add("bare URL as a JSON string", [("Content-Type", "application/json")], json.dumps(url).encode(), INVALID)
    add("bare URL as text/plain", [("Content-Type", "text/plain")], u, INVALID)
    add("bare URL with no Content-Type", [], u, INVALID)
    add("bare URL as application/octet-stream", [("Content-Type", "application/octet-stream")], u, INVALID)
    add("bare URL as image/png", [("Content-Type", "image/png")], u, INVALID)
    add("bare URL, multipart Content-Type with no parts", [("Content-Type", MULTIPART)], u, INVALID)
    add("URL in the query string, empty JSON body", [("Content-Type", "application/json")], b"{}",
        (422, "batch_size") if endpoint == "analyze_batch" else (400, "missing_image"),
        query=f"?{field}={quoted}")
    return made


def _batch_shapes(url: str) -> list[Shape]:
    u = url.encode()
    many = 1000
    return [
        Shape(f"{many} multipart text parts named images", "analyze_batch", (("Content-Type", MULTIPART),),
              multipart(*[part('form-data; name="images"', u)] * many), INVALID),
        Shape(f"{many} urlencoded images fields", "analyze_batch", (("Content-Type", FORM),),
              "&".join([f"images={quote(url, safe='')}"] * many).encode(), INVALID),
        Shape(f"{many - 1} file parts and one text part named images", "analyze_batch",
              (("Content-Type", MULTIPART),),
              multipart(*[part('form-data; name="images"; filename="a.png"', b"x", "Content-Type: image/png")]
                        * (many - 1), part('form-data; name="images"', u)), INVALID),
    ]


def _utf7_letters(text: str) -> str:
    """`text` in UTF-7's base64 form (`image` -> `AGkAbQBhAGcAZQ`); Python's encoder leaves ASCII letters as is."""
    return base64.b64encode(text.encode("utf-16-be")).decode().rstrip("=")


def send(base_url: str, shape: Shape, timeout: float = 60) -> tuple[int, dict | None]:
    """POST `shape` exactly as written; the status and the JSON body (None if it is not JSON)."""
    target = urlparse(base_url)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=timeout)
    try:
        connection.putrequest("POST", f"/{shape.endpoint}{shape.query}", skip_accept_encoding=True)
        for name, value in shape.headers:
            connection.putheader(name, value)
        if shape.chunked:
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders(iter([shape.body[:7], shape.body[7:]]), encode_chunked=True)
        else:
            connection.putheader("Content-Length", str(len(shape.body)))
            connection.endheaders(shape.body)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, None


class HitCounter:
    """An HTTP server on 127.0.0.1 that answers every request with `payload` and counts them."""

    def __init__(self, payload: bytes, content_type: str = "image/png"):
        self.payload, self.content_type = payload, content_type
        self.requests: list[str] = []
        self.foreign: list[str] = []
        self._lock = threading.Lock()
        counter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                with counter._lock:
                    # A tunnel to another host is some library's own traffic that the proxy variables caught
                    # (a telemetry call from a thread of the test process, say), never a download of our URL.
                    foreign = self.command == "CONNECT" and not self.path.startswith(f"127.0.0.1:{counter.port}")
                    (counter.foreign if foreign else counter.requests).append(self.requestline)
                self.send_response(200)
                self.send_header("Content-Type", counter.content_type)
                self.send_header("Content-Length", str(len(counter.payload)))
                self.end_headers()
                self.wfile.write(counter.payload)

            do_GET = do_POST = do_HEAD = do_PUT = do_CONNECT = _answer

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self.requests)

    @contextlib.contextmanager
    def running(self) -> Iterator["HitCounter"]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
