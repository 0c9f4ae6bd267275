"""Processes under test: `bentoml serve` and the gunicorn seed app, with their cold-start time."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, process: subprocess.Popen, url: str, cold_start_s: float, log: Path):
        self.process, self.url, self.cold_start_s, self.log = process, url, cold_start_s, log

    @property
    def pid(self) -> int:
        return self.process.pid


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
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        handle.close()


# What the bentos set (bentos/*/bentofile.yaml envs), so that the service is measured as deployed.
DEPLOYED_ENV = {"MALLOC_ARENA_MAX": "2"}


def bentoml_log(log_dir: Path, port: int) -> Path:
    return log_dir / f"bentoml-{port}.log"


def bentoml_serve(log_dir: Path, env: dict[str, str] | None = None, *, ready_path: str = "/readyz",
                  timeout: float = 180.0):
    """`bentoml serve service:FaceAnalysis` on a free 127.0.0.1 port (also the tests' server)."""
    port = free_port()
    return launch([str(BIN / "bentoml"), "serve", "service:FaceAnalysis", "--host", "127.0.0.1",
                   "--port", str(port)], port, ready_path, bentoml_log(log_dir, port),
                  {**DEPLOYED_ENV, **(env or {})}, timeout)


def seed_gunicorn(log_dir: Path, workers: int, threads: int):
    """The seeds' design: Flask under gunicorn (threaded workers; TensorFlow does not mix with gevent)."""
    port = free_port()
    return launch([str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                   "--worker-class", "gthread", "--threads", str(threads), "--timeout", "120",
                   "benchmarks.seed_app:app"], port, "/readyz", log_dir / f"seed-{port}.log",
                  {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")},
                  timeout=300)
