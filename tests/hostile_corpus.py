"""A generated corpus of hostile (and odd-but-valid) inputs, and how to send each to every image endpoint.

Each `Case` names its input, how it is sent (`upload`: a multipart file; `base64`:
JSON `image_base64`; `raw`: a body as is; `json`: a JSON object as is; `form`:
form fields), the endpoints it goes to, and the expected answer: an HTTP status
and error code, or `FACE` for a valid image that must be analysed (one face, happy).
Everything is generated in memory and small in bytes; `python -m tests.hostile_corpus`
prints the table used in docs/limits.md.
"""

from __future__ import annotations

import base64
import functools
import io
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

ENDPOINTS = ("analyze", "analyze_batch", "annotate", "classify", "rotate")
URL_ENDPOINTS = ("analyze", "annotate", "classify", "rotate")  # analyze_batch takes no URL
FACE = (200, "face")  # a valid image: analysed, exactly one face, emotion happy

# The limits the hostile server runs with (small, so the corpus stays small in bytes).
SERVER_ENV = {
    "FACESERVE_MAX_BODY_BYTES": str(3_000_000),
    "FACESERVE_MAX_FRAMES": "100",
    "FACESERVE_MAX_FACES": "3",
    "FACESERVE_MAX_BATCH_IMAGES": "4",
    "FACESERVE_MAX_TOP_K": "100",
    "FACESERVE_URL_FETCH": "1",
    "FACESERVE_URL_TIMEOUT_S": "2",
    "FACESERVE_URL_ALLOWLIST": "localhost",  # tests reach their image server by this name only
}


@dataclass(frozen=True)
class Case:
    name: str
    how: str  # upload | base64 | raw | json | form
    payload: object
    expect: tuple[int, str]
    content_type: str = "image/png"
    endpoints: tuple[str, ...] = ENDPOINTS
    expect_batch: tuple[int, str] | None = None  # analyze_batch, when it answers differently
    params: dict = field(default_factory=dict)  # extra JSON/form fields

    def expected(self, endpoint: str) -> tuple[int, str]:
        return self.expect_batch if endpoint == "analyze_batch" and self.expect_batch else self.expect


def request_kwargs(case: Case, endpoint: str) -> dict:
    """httpx.post keyword arguments sending `case` to `endpoint`."""
    batch = endpoint == "analyze_batch"
    if case.how == "upload":
        field_name = "images" if batch else "image"
        return {"files": [(field_name, ("input", case.payload, case.content_type))],
                "data": {k: str(v) for k, v in case.params.items()}}
    if case.how == "base64":
        text = case.payload if isinstance(case.payload, str) else base64.b64encode(case.payload).decode()
        body = {"images_base64": [text]} if batch else {"image_base64": text}
        return {"json": {**body, **case.params}}
    if case.how == "json":
        body = dict(case.payload)
        if batch:
            body = {("images_base64" if k == "image_base64" else k): v for k, v in body.items()}
        return {"json": {**body, **case.params}}
    if case.how == "form":
        body = dict(case.payload)
        if batch:
            body = {("images" if k == "image" else k): v for k, v in body.items()}
        return {"data": body}
    if case.how == "raw":
        return {"content": case.payload, "headers": {"content-type": case.content_type}}
    raise ValueError(case.how)


# ---------------------------------------------------------------- generators


@functools.cache
def astronaut() -> np.ndarray:
    from skimage import data
    return data.astronaut()


def save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def good_png() -> bytes:
    return save(Image.fromarray(astronaut()), "PNG")


def good_jpeg() -> bytes:
    return save(Image.fromarray(astronaut()), "JPEG", quality=90)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@functools.cache
def pixel_bomb(side: int = 30_000) -> bytes:
    """A real side x side 1-bit PNG of zeros: about 110 KB that would decode to 900 Mpixel."""
    row = b"\x00" * (1 + side // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def long_strip(width: int = 100_000) -> bytes:
    return save(Image.new("L", (width, 1), 128), "PNG")


@functools.cache
def many_frames_gif(frames: int = 3000) -> bytes:
    images = [Image.new("P", (4, 4), i % 256) for i in range(frames)]
    return save(images[0], "GIF", save_all=True, append_images=images[1:], duration=10, optimize=False)


# ---- multi-frame containers, built by hand where Pillow cannot write the attack

def gif(screen: tuple[int, int], frames: list[tuple[int, ...]]) -> bytes:
    """A GIF with a `screen` logical screen and one frame per (x, y, width, height[, colour]), each
    coded as a single pixel of colour 0 (black, the default) or 1 (white)."""
    data = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    for x, y, width, height, *colour in frames:
        # LZW of minimum code size 2, as three 3-bit codes: clear (4), the pixel, end of information (5)
        pixel = bytes([0x44 | (colour[0] if colour else 0) << 3, 0x01])
        data += b"," + struct.pack("<HHHHB", x, y, width, height, 0) + b"\x02\x02" + pixel + b"\x00"
    return data + b";"


def gif_frame_outside_screen() -> bytes:
    """50 bytes: a 1x1 screen whose second frame lies at (7999, 7999); Pillow grows its canvas to 8000x8000."""
    return gif((1, 1), [(0, 0, 1, 1), (7999, 7999, 1, 1)])


def gif_canvas_of_tiny_frames(side: int = 2000, frames: int = 100) -> bytes:
    """A side x side canvas of one-pixel frames: compositing each onto the canvas costs its whole area."""
    return gif((side, side), [(0, 0, 1, 1)] * frames)


def _replace_png_chunk(data: bytes, kind: bytes, index: int, edit) -> bytes:
    """`data` with the `index`-th `kind` chunk's body passed through `edit` (its CRC recomputed)."""
    found = 0
    for _ in range(index + 1):
        found = data.index(kind, found + 1)
    position = found - 4
    length = struct.unpack_from(">I", data, position)[0]
    body = edit(data[position + 8:position + 8 + length])
    return data[:position] + png_chunk(kind, body) + data[position + 12 + length:]


def apng(frames: int, size: tuple[int, int] = (1, 1)) -> bytes:
    """An animated PNG of `frames` frames, each a different grey."""
    images = [Image.new("L", size, i % 256) for i in range(frames)]
    return save(images[0], "PNG", save_all=True, append_images=images[1:])


def apng_frame_outside_canvas() -> bytes:
    """A 1x1 APNG whose second, 1x1 frame lies at (7999, 7999), as in `gif_frame_outside_screen`."""
    return _replace_png_chunk(apng(2), b"fcTL", 1,
                              lambda body: body[:4] + struct.pack(">IIII", 1, 1, 7999, 7999) + body[20:])


def apng_huge_canvas() -> bytes:
    """A 30000x30000 APNG canvas of 1x1 frames, the IHDR patched: nothing but headers is valid."""
    return _replace_png_chunk(apng(2), b"IHDR", 0, lambda body: struct.pack(">II", 30_000, 30_000) + body[8:])


def animated_webp(frames: int, size: tuple[int, int] = (1, 1)) -> bytes:
    images = [Image.new("RGB", size, (i % 256, 0, 255 - i % 256)) for i in range(frames)]
    return save(images[0], "WEBP", save_all=True, append_images=images[1:], lossless=True)


def webp_huge_canvas() -> bytes:
    """An animated WebP of 1x1 frames on a 16384x16384 canvas (the VP8X header patched)."""
    data = animated_webp(2)
    assert data[12:16] == b"VP8X"
    side = (16384 - 1).to_bytes(3, "little")
    return data[:24] + side + side + data[30:]


def tiff(pages: list[tuple[int, int]], samples: int = 1) -> bytes:
    """A little-endian TIFF of 8-bit grey pages (width, height) sharing one strip of zeros;
    `samples=2` adds an associated (premultiplied) alpha channel."""
    strip = 64
    data, position = b"", 8 + strip
    for number, (width, height) in enumerate(pages):
        # (tag, type, count, value): type 3 is SHORT (two fit in the value field), 4 is LONG
        entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, samples, 8 | 8 << 16), (259, 3, 1, 1),
                   (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, samples), (278, 4, 1, height),
                   (279, 4, 1, width * height * samples)] + ([(338, 3, 1, 1)] if samples == 2 else [])
        following = position + 2 + 12 * len(entries) + 4
        data += struct.pack("<H", len(entries)) + b"".join(
            struct.pack("<HHI", tag, kind, count) + (struct.pack("<I", value) if kind == 4 else
                                                     struct.pack("<HH", value & 0xFFFF, value >> 16))
            for tag, kind, count, value in entries) + struct.pack("<I", following if number + 1 < len(pages) else 0)
        position = following
    return b"II*\x00" + struct.pack("<I", 8 + strip) + b"\x00" * strip + data


def mpo(frames: int, size: tuple[int, int] = (8, 8)) -> bytes:
    images = [Image.new("RGB", size, (255 - i % 256, i % 256, 0)) for i in range(frames)]
    return save(images[0], "MPO", save_all=True, append_images=images[1:], quality=90)


def mpo_huge_second_image() -> bytes:
    """A two-image MPO whose second JPEG's frame header claims 30000x30000 pixels."""
    data = mpo(2)
    sof = data.index(b"\xff\xc0", data.index(b"\xff\xc0") + 2)
    return data[:sof + 5] + struct.pack(">HH", 30_000, 30_000) + data[sof + 9:]


def sixteen_bit_png() -> bytes:
    gray = np.asarray(Image.fromarray(astronaut()).convert("L"), dtype=np.uint16) * 257
    return save(Image.fromarray(gray), "PNG")  # mode I;16


def cmyk_jpeg() -> bytes:
    return save(Image.fromarray(astronaut()).convert("CMYK"), "JPEG", quality=92)


def rgba_png() -> bytes:
    rgba = np.dstack([astronaut(), np.full(astronaut().shape[:2], 255, np.uint8)])
    rgba[:40, :40, 3] = 0  # a transparent corner
    return save(Image.fromarray(rgba), "PNG")


def palette_png() -> bytes:
    return save(Image.fromarray(astronaut()).quantize(256), "PNG")


def grayscale_jpeg() -> bytes:
    return save(Image.fromarray(astronaut()).convert("L"), "JPEG", quality=92)


def multipage_tiff() -> bytes:
    first = Image.fromarray(astronaut())
    return save(first, "TIFF", save_all=True, append_images=[first.rotate(90), first.convert("L").convert("RGB")])


def animation(fmt: str, **options) -> bytes:
    """The photo, then two other frames: only the first is analysed."""
    first = Image.fromarray(astronaut())
    others = [first.rotate(90), first.transpose(Image.Transpose.FLIP_TOP_BOTTOM)]
    return save(first, fmt, save_all=True, append_images=others, **options)


def four_faces() -> bytes:
    face = astronaut()[40:240, 120:320]
    return save(Image.fromarray(np.ascontiguousarray(np.vstack([np.hstack([face] * 2)] * 2))), "JPEG", quality=90)


def tiny_png() -> bytes:
    return save(Image.new("RGB", (1, 1), (200, 150, 100)), "PNG")


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def corrupt_jpeg_markers() -> bytes:
    data = bytearray(good_jpeg())
    # keep SOI, then scramble the marker segments (APP0/DQT/SOF/DHT) into garbage
    for i in range(2, 600):
        data[i] = (data[i] * 7 + 0x5A) & 0xFF
    return bytes(data)


def huffman_garbage_jpeg() -> bytes:
    """Valid headers, scan data overwritten: decodes to garbage or fails, never crashes."""
    data = bytearray(good_jpeg())
    start = data.find(b"\xff\xda") + 20
    rng = np.random.default_rng(7)
    data[start:-2] = rng.integers(0, 255, len(data) - start - 2, dtype=np.uint8).tobytes().replace(b"\xff", b"\x00")
    return bytes(data)


def bmp_bomb_header() -> bytes:
    """A BMP header claiming 50000 x 50000 pixels, with almost no data."""
    header = struct.pack("<2sIHHI", b"BM", 54 + 16, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, 50_000, 50_000, 1, 24, 0, 16, 2835, 2835, 0, 0)
    return header + info + b"\x00" * 16


def svg() -> bytes:
    return (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000">'
            b'<circle cx="50" cy="50" r="40"/></svg>')


def pdf() -> bytes:
    return save(Image.fromarray(astronaut()), "PDF")


def ico() -> bytes:
    return save(Image.fromarray(astronaut()), "ICO", sizes=[(64, 64)])


HTML = b"<!doctype html><html><body><h1>not an image</h1><script>alert(1)</script></body></html>"


def corpus() -> list[Case]:
    invalid_image = (400, "invalid_image")
    random_bytes = np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    single = tuple(e for e in ENDPOINTS if e != "analyze_batch")
    return [
        # --- garbage and broken files
        Case("empty body", "raw", b"", (400, "missing_image"), content_type="application/json",
             expect_batch=(422, "batch_size")),
        Case("empty upload", "upload", b"", (400, "empty_image")),
        Case("1 byte", "upload", b"\xff", invalid_image),
        Case("random bytes (4 KiB)", "upload", random_bytes, invalid_image),
        Case("truncated JPEG (half)", "upload", truncated(good_jpeg()), invalid_image, content_type="image/jpeg"),
        Case("truncated PNG (half)", "upload", truncated(good_png()), invalid_image),
        Case("PNG signature only", "upload", good_png()[:8], invalid_image),
        Case("corrupt JPEG markers", "upload", corrupt_jpeg_markers(), invalid_image, content_type="image/jpeg"),
        # --- limits
        Case("pixel bomb PNG 30000x30000 (~110 KB)", "upload", pixel_bomb(), (422, "image_too_large")),
        Case("BMP header claiming 50000x50000", "upload", bmp_bomb_header(), (422, "image_too_large"),
             content_type="image/bmp"),
        Case("100000x1 PNG", "upload", long_strip(), (422, "image_too_large")),
        Case("GIF with 3000 frames", "upload", many_frames_gif(), (422, "too_many_frames"), content_type="image/gif"),
        # --- multi-frame containers: every frame's size and the frame count, from the headers
        Case("GIF frame at (7999, 7999) of a 1x1 screen (50 bytes)", "upload", gif_frame_outside_screen(),
             (422, "image_too_large"), content_type="image/gif"),
        Case("GIF 6000x6000 canvas of 101 one-pixel frames", "upload", gif_canvas_of_tiny_frames(6000, 101),
             (422, "too_many_frames"), content_type="image/gif"),
        Case("APNG frame at (7999, 7999) of a 1x1 canvas", "upload", apng_frame_outside_canvas(),
             (422, "image_too_large")),
        Case("APNG canvas 30000x30000 of 1x1 frames", "upload", apng_huge_canvas(), (422, "image_too_large")),
        Case("APNG with 101 frames", "upload", apng(101), (422, "too_many_frames")),
        Case("animated WebP canvas 16384x16384 of 1x1 frames", "upload", webp_huge_canvas(),
             (422, "image_too_large"), content_type="image/webp"),
        Case("animated WebP with 101 frames", "upload", animated_webp(101), (422, "too_many_frames"),
             content_type="image/webp"),
        Case("TIFF whose third page is 30000x30000", "upload", tiff([(4, 4), (4, 4), (30_000, 30_000)]),
             (422, "image_too_large"), content_type="image/tiff"),
        Case("TIFF with 101 pages", "upload", tiff([(4, 4)] * 101), (422, "too_many_frames"),
             content_type="image/tiff"),
        Case("MPO whose second image is 30000x30000", "upload", mpo_huge_second_image(), (422, "image_too_large"),
             content_type="image/jpeg"),
        Case("3 images of 6000x6000 in a batch (108 of 100 Mpixel)", "json",
             {"images_base64": [base64.b64encode(pixel_bomb(6000)).decode()] * 3}, (422, "batch_too_large"),
             endpoints=("analyze_batch",)),
        Case("oversize body (3.5 MB upload)", "upload", random_bytes * 900, (413, "body_too_large")),
        Case("oversize base64 (3.5 MB)", "base64", random_bytes * 700, (413, "body_too_large")),
        Case("4 faces (limit 3)", "upload", four_faces(),
             (422, "too_many_faces"), content_type="image/jpeg", endpoints=("analyze", "annotate", "analyze_batch")),
        # --- not images / not accepted formats
        Case("SVG", "upload", svg(), invalid_image, content_type="image/svg+xml"),
        Case("PDF sent as application/pdf", "upload", pdf(), (400, "invalid_request"), content_type="application/pdf"),
        Case("PDF sent as image/png", "upload", pdf(), invalid_image),
        Case("ICO", "upload", ico(), invalid_image, content_type="image/x-icon"),
        Case("HTML sent as image/jpeg", "upload", HTML, invalid_image, content_type="image/jpeg"),
        Case("base64 of HTML", "base64", HTML, invalid_image),
        Case("invalid base64", "base64", "this is *not* base64!!", (400, "invalid_base64")),
        Case("base64 of text", "base64", b"hello, I am plain text and not a picture", invalid_image),
        # --- malformed requests
        Case("image_base64 is a number", "json", {"image_base64": 12345}, (400, "invalid_request")),
        Case("image_base64 is an object", "json", {"image_base64": {"a": 1}}, (400, "invalid_request")),
        Case("JSON body is an array", "raw", b"[1, 2, 3]", (400, "invalid_request"),
             content_type="application/json"),
        Case("malformed JSON", "raw", b'{"image_base64": ', (400, "invalid_request"),
             content_type="application/json"),
        Case("unknown detector", "base64", good_jpeg(), (400, "invalid_request"), params={"detector": "nope"},
             endpoints=("analyze", "annotate", "analyze_batch")),
        Case("two images at once", "json", {"image_base64": "aGVsbG8=", "image_url": "http://example.com/a.jpg"},
             (400, "ambiguous_image"), endpoints=single),
        Case("malformed multipart", "raw", b"--xyz\r\nContent[Disposition: form-data; name=image\r\n\r\nabc\r\n--xyz--\r\n",
             (400, "invalid_request"), content_type="multipart/form-data; boundary=xyz"),
        Case("multipart without boundary", "raw", b"whatever", (400, "invalid_request"),
             content_type="multipart/form-data"),
        # urlencoded: a form any page may send cross-site, refused before it is read (faceserve/http/auth.py)
        Case("URL string in the file field", "form", {"image": "http://169.254.169.254/latest/meta-data/"},
             (415, "unsupported_media_type")),
        Case("body is a bare URL", "raw", b"http://169.254.169.254/latest/meta-data/", (400, "invalid_request"),
             content_type="application/json"),
        Case("image_url to the metadata service", "json", {"image_url": "http://169.254.169.254/latest/meta-data/"},
             (403, "url_forbidden"), endpoints=URL_ENDPOINTS),
        Case("image_url file://", "json", {"image_url": "file:///etc/passwd"}, (400, "invalid_url"),
             endpoints=URL_ENDPOINTS),
        Case("image_url IPv4-mapped IPv6 loopback", "json", {"image_url": "http://[::ffff:7f00:1]:1/a.png"},
             (403, "url_forbidden"), endpoints=URL_ENDPOINTS),
        Case("rotation 45", "base64", good_jpeg(), (422, "invalid_rotation"), params={"degrees": 45},
             endpoints=("rotate",)),
        Case("top_k 0", "base64", good_jpeg(), (422, "top_k_out_of_range"), params={"top_k": 0},
             endpoints=("classify",)),
        Case("top_k 10^6", "base64", good_jpeg(), (422, "top_k_out_of_range"), params={"top_k": 10**6},
             endpoints=("classify",)),
        Case("top_k a string", "base64", good_jpeg(), (400, "invalid_request"), params={"top_k": "many"},
             endpoints=("classify",)),
        Case("5 images in a batch (limit 4)", "json", {"images_base64": [base64.b64encode(tiny_png()).decode()] * 5},
             (422, "batch_size"), endpoints=("analyze_batch",)),
        # --- odd but valid: analysed, one happy face
        Case("16-bit grayscale PNG", "upload", sixteen_bit_png(), FACE),
        Case("CMYK JPEG", "upload", cmyk_jpeg(), FACE, content_type="image/jpeg"),
        Case("RGBA PNG", "upload", rgba_png(), FACE),
        Case("palette PNG", "upload", palette_png(), FACE),
        Case("grayscale JPEG", "upload", grayscale_jpeg(), FACE, content_type="image/jpeg"),
        Case("multi-page TIFF (first page used)", "upload", multipage_tiff(), FACE, content_type="image/tiff"),
        Case("animated GIF (first frame used)", "upload", animation("GIF"), FACE, content_type="image/gif"),
        Case("animated WebP (first frame used)", "upload", animation("WEBP", quality=90), FACE,
             content_type="image/webp"),
        Case("GIF 2000x2000 canvas of 100 one-pixel frames", "upload", gif_canvas_of_tiny_frames(2000, 100),
             (200, "no_face"), content_type="image/gif"),
        Case("JPEG as base64 data URI", "base64", "data:image/jpeg;base64," + base64.b64encode(good_jpeg()).decode(),
             FACE),
        Case("1x1 PNG", "upload", tiny_png(), (200, "no_face")),
    ]



# ---------------------------------------------------------------- a local server for URL cases

import contextlib  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from urllib.parse import parse_qs, urlparse  # noqa: E402


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hosts_seen: list[str] = []
    # Bytes of a streamed body written before the client hung up (the whole body when it never did), by path.
    streamed: dict[str, int] = {}

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes, kind: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, path: str, chunks, pause_s: float = 0.0) -> None:
        sent = 0
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
                time.sleep(pause_s)
        finally:
            _Handler.streamed[path] = sent

    def do_GET(self):  # noqa: N802
        _Handler.hosts_seen.append(self.headers.get("Host", ""))
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/face.jpg":
                self._send(200, good_jpeg(), "image/jpeg")
            elif url.path == "/page.html":
                self._send(200, HTML, "text/html; charset=utf-8")
            elif url.path == "/fake.jpg":
                self._send(200, HTML, "image/jpeg")
            elif url.path == "/redirect":
                self._send(302, b"", "text/plain", {"Location": query["to"]})
            elif url.path == "/loop":
                self._send(302, b"", "text/plain", {"Location": "/loop"})
            elif url.path == "/error":
                self._send(500, b"boom", "text/plain")
            elif url.path == "/huge-declared":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(10**9))
                self.end_headers()
                self.wfile.write(b"\xff\xd8" + b"\x00" * 1024)
            elif url.path == "/huge":  # no length, streams until the client hangs up (at most 64 MB)
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Connection", "close")
                self.end_headers()
                chunk = b"\x00" * 65536
                self._stream(url.path, (chunk for _ in range(1024)))
            elif url.path == "/trickle":  # one byte every 0.2 s for a minute
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", "300")
                self.end_headers()
                self._stream(url.path, (b"\x00" for _ in range(300)), pause_s=0.2)
            else:
                self._send(404, b"not found", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextlib.contextmanager
def image_server(host: str = "127.0.0.1"):
    """A local HTTP server for URL cases; yields its port."""
    server = ThreadingHTTPServer((host, 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()

if __name__ == "__main__":
    for case in corpus():
        sizes = len(case.payload) if isinstance(case.payload, (bytes, str)) else "-"
        print(f"| {case.name} | {case.how} | {sizes} | {case.expect[0]} {case.expect[1]} |"
              + (f" batch: {case.expect_batch}" if case.expect_batch else ""))
    print(len(corpus()), "cases")
