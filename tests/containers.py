"""podman for the image tests: the options this kind of machine needs, and an image built once per session.

Every container, volume and image a test makes carries its run's prefix, and goes in the test's `finally`.
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

from tests.support import ROOT

IMAGE_DIR = ROOT / "bentos" / "image"
BASE_IMAGE = "localhost/faceserve-base:bookworm"
# runc and nofile/nproc limits below the machine's hard limits (bentos/image/containers.conf)
ENV = {**os.environ, "CONTAINERS_CONF": str(IMAGE_DIR / "containers.conf")}
# FACESERVE_TEST_IMAGE: an image `make image` built earlier (kept); otherwise the session builds its own (removed).
REUSED_IMAGE = os.environ.get("FACESERVE_TEST_IMAGE", "")
BUILD_TIMEOUT_S = 1500
READY_TIMEOUT_S = 300


def unavailable() -> str | None:
    """Why containers cannot run here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (make system installs it, requirements/debian.txt)"
    if os.getuid() != 0:
        return "the image tests run podman as root, as CI does"
    return None


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.returncode} {done.stderr[-2000:]}")
    return done


def exists(kind: str, name: str) -> bool:
    return podman(kind, "exists", name, check=False).returncode == 0


def unique(prefix: str = "faceserve-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def built_image() -> Iterator[tuple[str, float | None]]:
    """An image of the CPU bento and the seconds its build took (None when reused); a built one is removed after,
    with the base image if this build made it."""
    if REUSED_IMAGE:
        yield REUSED_IMAGE, None
        return
    image, had_base = f"localhost/{unique()}:latest", exists("image", BASE_IMAGE)
    started = time.monotonic()
    try:
        done = subprocess.run([str(IMAGE_DIR / "build.sh"), image], env=ENV, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        yield image, time.monotonic() - started
    finally:
        podman("rmi", "-f", image, check=False)
        if not had_base:
            podman("rmi", "-f", BASE_IMAGE, check=False)


def wait_ready(url: str, container: str, timeout: float = READY_TIMEOUT_S) -> float:
    """Seconds until GET url/readyz answered 200; fails at once with the container's log if it exits."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        state = podman("inspect", "--format", "{{.State.Status}}", container, check=False).stdout.strip()
        if state in ("exited", "stopped", ""):
            raise AssertionError(f"{container} is {state or 'gone'}: {logs(container)}")
        time.sleep(0.25)
    raise AssertionError(f"{container} not ready after {timeout} s: {logs(container)}")


def logs(container: str) -> str:
    done = podman("logs", container, check=False)
    return (done.stdout + done.stderr)[-4000:]


def rss_bytes(container: str) -> int:
    """The resident memory of every process in the container (its cgroup's figure counts page cache too)."""
    pids = podman("top", container, "hpid", check=False).stdout.split()[1:]
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total
