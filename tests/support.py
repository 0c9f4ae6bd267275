"""Shared test helpers: free ports, a real `bentoml serve` process, photos as bytes."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
BENTOML = Path(sys.executable).with_name("bentoml")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    port = free_port()
    log = open(os.environ.get("FACESERVE_TEST_LOG_DIR", "/tmp") + f"/faceserve-serve-{port}.log", "w")
    process = subprocess.Popen(
        [str(BENTOML), "serve", "service:FaceAnalysis", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {process.returncode}; see {log.name}")
            try:
                status = httpx.get(f"{url}/readyz" if wait_ready else f"{url}/livez", timeout=2).status_code
                if status == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"bentoml serve not ready after {ready_timeout} s; see {log.name}")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
