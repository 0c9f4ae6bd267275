"""Local servers for the tests and the benchmarks: `bentoml serve` on 127.0.0.1, with its cold-start time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx

from faceserve.dev.lifecycle import signal_then_wait
from faceserve.settings import PROJECT_ROOT as ROOT

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """`pid` and every live process below it, parents first (from /proc: no dependency for a dev tool)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop(0)
        tree.append(current)
        pending += children.get(current, [])
    return tree


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie has exited: its sockets are closed, only its parent has not reaped it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Server:
    def __init__(self, process: subprocess.Popen, url: str, cold_start_s: float, log: Path):
        self.process, self.url, self.cold_start_s, self.log = process, url, cold_start_s, log

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self, timeout_s: float = 30.0) -> None:
        """`kill -9` of the server and everything it started, as when its machine dies; returns once all of it is
        gone (its sockets closed). The whole tree, not the process group: BentoML's workers lead groups of their
        own and would go on serving without their arbiter."""
        tree = process_tree(self.pid)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while any(alive(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.01)


@contextlib.contextmanager
def launch(command: list[str], port: int, ready_path: str, log: Path, env: dict[str, str] | None = None,
           timeout: float = 180.0) -> Iterator[Server]:
    """Start `command`, wait until GET ready_path answers 200, yield; kill the process group after."""
    handle = open(log, "w")
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=handle,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {process.returncode}; see {log}: "
                                   + log.read_text()[-600:])
            try:
                if httpx.get(url + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"{command[0]} not ready after {timeout:.0f} s; see {log}")
            time.sleep(0.05)
        yield Server(process, url, round(time.perf_counter() - started, 2), log)
    finally:
        if not signal_then_wait(process, signal.SIGTERM, 20, group=True):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        handle.close()


# What the bentos set (bentos/*/bentofile.yaml envs), so that the service is measured and tested as deployed.
DEPLOYED_ENV = {"MALLOC_ARENA_MAX": "2", "BENTOML_DO_NOT_TRACK": "True"}


def bentoml_log(log_dir: Path, port: int) -> Path:
    return log_dir / f"bentoml-{port}.log"


@contextlib.contextmanager
def bentoml_serve(log_dir: Path, env: dict[str, str] | None = None, *, ready_path: str = "/readyz",
                  timeout: float = 180.0, port: int | None = None) -> Iterator[Server]:
    """`bentoml serve service:FaceAnalysis` on 127.0.0.1: on `port`, or a free one.

    A given port lets a killed server come back where a load balancer expects it.

    Each server gets its own BENTOML_HOME unless one is given: `bentoml serve` empties the
    Prometheus directory under its home at start-up, so servers sharing one lose each other's metrics.
    """
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="faceserve-bentoml-home-") as home:
        with launch([str(BIN / "bentoml"), "serve", "service:FaceAnalysis", "--host", "127.0.0.1",
                     "--port", str(port)], port, ready_path, bentoml_log(log_dir, port),
                    {**DEPLOYED_ENV, "BENTOML_HOME": home, **(env or {})}, timeout) as server:
            yield server
