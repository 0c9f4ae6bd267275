"""Shared test helpers: free ports, a real `bentoml serve` process, photos as bytes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import os
import struct
import sys
import zipfile
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from faceserve.dev import devserver
from faceserve.dev.devserver import free_port  # noqa: F401  (tests import it from here)
from faceserve.dev.fixtures import FIXTURES  # noqa: F401  (the one place tests take them from)
from faceserve.settings import PROJECT_ROOT as ROOT  # noqa: F401

BENTOML = Path(sys.executable).with_name("bentoml")
# The emotion grid fixture (emotion_classification.jpg): the emotion of the face in each quadrant (x, y).
QUADRANT_EMOTIONS = {(0, 0): "surprise", (1, 0): "happy", (0, 1): "sad", (1, 1): "angry"}


def quadrant_emotions(analysis) -> dict:
    half_w, half_h = analysis.width / 2, analysis.height / 2
    return {(int((f.box.x1 + f.box.x2) / 2 > half_w), int((f.box.y1 + f.box.y2) / 2 > half_h)): f.emotion.label
            for f in analysis.faces}


LOG_DIR = Path(os.environ.get("FACESERVE_TEST_LOG_DIR", "/tmp"))


def jpeg(image: np.ndarray, quality: int = 92, exif: Image.Exif | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality, **({"exif": exif} if exif else {}))
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A zip archive of `members` (name: data), in their order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def marked_encrypted(archive: bytes) -> bytes:
    """The zip with its first member marked encrypted (general-purpose flag bit 0) in both of its headers: the
    local one and the central directory's."""
    data = bytearray(archive)
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        (flags,) = struct.unpack_from("<H", data, at + flag_offset)
        struct.pack_into("<H", data, at + flag_offset, flags | 1)
    return bytes(data)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def serve(env: dict[str, str] | None = None, *, ready_timeout: float = 90.0,
          wait_ready: bool = True) -> Iterator[str]:
    """Run `bentoml serve service:FaceAnalysis` on 127.0.0.1 and yield its base URL.

    Stops the whole process group afterwards, so no worker outlives the test.
    """
    with devserver.bentoml_serve(LOG_DIR, env, ready_path="/readyz" if wait_ready else "/livez",
                               timeout=ready_timeout) as server:
        yield server.url


def serve_log(url: str) -> Path:
    """The log file of the server `serve` started at `url`."""
    return devserver.bentoml_log(LOG_DIR, urlparse(url).port)


@dataclasses.dataclass
class AsgiAnswer:
    status: int | None  # None: the request went through to the app, which answered nothing
    body: dict | None  # the answer's JSON
    reached: list[bytes]  # the body the app read, once per time the request reached it


def post_through(wrap, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> AsgiAnswer:
    """POST `chunks` (one http.request message each) through the middleware `wrap(app)`, the app recording the
    body it reads and answering nothing; no server."""
    reached: list[bytes] = []
    answer: dict = {}
    messages = [{"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
                for i, chunk in enumerate(chunks)] or [{"type": "http.request", "body": b"", "more_body": False}]

    async def app(scope, receive, send):
        reached.append((await receive())["body"])

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] = answer.get("body", b"") + message.get("body", b"")

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    asyncio.run(wrap(app)(scope, receive, send))
    return AsgiAnswer(answer.get("status"), json.loads(answer["body"]) if "body" in answer else None, reached)
