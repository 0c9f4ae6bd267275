"""Local servers for the tests and the benchmarks: `bentoml serve` on 127.0.0.1, with its cold-start time.
"""

from __future__ import annotations

import contextlib
import os
import random
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
PRIVATE_PORTS_FROM = 20000  # above the well-known services a test machine may run


def free_port() -> int:
    """A free port below the ephemeral range. A server on an ephemeral port can have it taken as the source port
    of an outgoing connection once it dies, and a proxy connecting to it from that very port reaches itself
    (TCP's self-connect): it reads its own request as the answer, where a refused connection was expected."""
    ports = range(PRIVATE_PORTS_FROM, int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]))
    for port in random.sample(ports, min(64, len(ports))):
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            return port
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

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def kill(self, timeout_s: float = 30.0) -> None:
        """`kill -9` of the server and everything it started, as when its machine dies; returns once all of it is
        gone and nothing listens on its port. The whole tree, not the process group: BentoML's workers lead
        sessions of their own and would go on serving without their arbiter. Then whatever still holds its
        listening socket: an arbiter that was respawning a worker as it was killed leaves an orphan outside the
        tree, which inherited the socket and accepts requests it will never answer."""
        deadline = time.monotonic() + timeout_s
        doomed = process_tree(self.pid)
        while doomed and time.monotonic() < deadline:
            for pid in doomed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            while any(alive(pid) for pid in doomed) and time.monotonic() < deadline:
                time.sleep(0.01)
            doomed = listening_on(self.port)


def listening_on(port: int) -> list[int]:
    """The processes holding a TCP socket that listens on `port` (from /proc, like process_tree)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    holders = set()
    if inodes:
        for fd in Path("/proc").glob("[0-9]*/fd/*"):
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    holders.add(int(fd.parent.parent.name))
    return sorted(pid for pid in holders if alive(pid))


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
