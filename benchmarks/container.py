"""`make image`'s image as a benchmark server: the container on host networking, measured like `bentoml serve`.

Its processes are the container's (the pid podman reports and the service's workers below it), so the monitor's
CPU and RSS are the container's; the cold start is from `podman run` to the first 200 of /readyz.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from typing import Iterator

import httpx

from faceserve.dev.devserver import free_port
from faceserve.settings import PROJECT_ROOT

# FACESERVE_BENCH_IMAGE: the image to measure; `make image` tags faceserve:latest
IMAGE = os.environ.get("FACESERVE_BENCH_IMAGE", "localhost/faceserve:latest")
ENV = {**os.environ, "CONTAINERS_CONF": str(PROJECT_ROOT / "bentos" / "image" / "containers.conf")}


class ContainerServer:
    def __init__(self, name: str, url: str, pid: int, cold_start_s: float, size_bytes: int):
        self.name, self.url, self.pid, self.cold_start_s, self.size_bytes = name, url, pid, cold_start_s, size_bytes


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], env=ENV, capture_output=True, text=True, check=True).stdout.strip()


def unavailable() -> str | None:
    if shutil.which("podman") is None or os.getuid() != 0:
        return "needs podman as root (make system)"
    if subprocess.run(["podman", "image", "exists", IMAGE], env=ENV).returncode != 0:
        return f"no image {IMAGE}: run `make image` first"
    return None


@contextlib.contextmanager
def container_server(env: dict[str, str] | None = None, timeout_s: float = 300) -> Iterator[ContainerServer]:
    """The image in a container on a fresh volume, ready; the container and the volume are removed after."""
    name, port = f"faceserve-bench-{uuid.uuid4().hex[:8]}", free_port()
    podman("volume", "create", name)
    try:
        started = time.monotonic()
        podman("run", "-d", "--name", name, "--read-only", "--network", "host", "-v", f"{name}:/data",
               "-e", f"BENTOML_PORT={port}", "-e", "FACESERVE_PRIVATE_DEPLOYMENT=1",
               *[f"--env={k}={v}" for k, v in (env or {}).items()], IMAGE)
        url = f"http://127.0.0.1:{port}"
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"{name} not ready after {timeout_s} s: {podman('logs', name)[-2000:]}")
            time.sleep(0.1)
        cold_start_s = time.monotonic() - started
        yield ContainerServer(name, url, int(podman("inspect", "--format", "{{.State.Pid}}", name)), cold_start_s,
                              int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE)))
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], env=ENV, capture_output=True)
        subprocess.run(["podman", "volume", "rm", "-f", name], env=ENV, capture_output=True)
