"""Shared test helpers: free ports, a real `bentoml serve` process, photos as bytes."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from benchmarks import servers
from benchmarks.servers import free_port  # noqa: F401  (tests import it from here)

ROOT = Path(__file__).resolve().parent.parent
BENTOML = Path(sys.executable).with_name("bentoml")
LOG_DIR = Path(os.environ.get("FACESERVE_TEST_LOG_DIR", "/tmp"))


def jpeg(image: np.ndarray, quality: int = 92, exif: Image.Exif | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality, **({"exif": exif} if exif else {}))
    return buffer.getvalue()


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
    with servers.bentoml_serve(LOG_DIR, env, ready_path="/readyz" if wait_ready else "/livez",
                               timeout=ready_timeout) as server:
        yield server.url


def serve_log(url: str) -> Path:
    """The log file of the server `serve` started at `url`."""
    return servers.bentoml_log(LOG_DIR, urlparse(url).port)
