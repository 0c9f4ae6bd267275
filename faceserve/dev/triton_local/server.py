"""A real `tritonserver` on 127.0.0.1 serving the generated CPU repository."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from faceserve.dev.lifecycle import StartedInWith, signal_then_wait
from faceserve.dev.triton_local.env import TritonEnv, ensure_env
from faceserve.dev.triton_local.repository import build_cpu_repository

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# tritonserver's own defaults, which the NGC image serves on too (bentos/, bentos/kubernetes/)
DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
# KServe v2 health, on the HTTP port
LIVE_PATH, READY_PATH = "/v2/health/live", "/v2/health/ready"


class TritonStartError(RuntimeError):
    """tritonserver exited or did not get every model ready in time; the message ends with its log."""


class LocalTriton(StartedInWith):
    """`with LocalTriton(repo, http_port=..., grpc_port=..., metrics_port=...) as server:`

    Generates the CPU variant of `repository` into a private temporary folder, starts
    tritonserver (own process group) bound to 127.0.0.1 and waits until every model is
    ready. `stop()`/`start()` restart it on the same ports; `kill()` SIGKILLs it.

    Models are under explicit control (`--model-control-mode=explicit`, each one named by
    `--load-model`): Triton loads and unloads versions only when told through its repository
    API, as `python -m convert promote --triton-url` does (faceserve.backends.triton_control).
    """

    def __init__(self, repository: Path, *, http_port: int, grpc_port: int, metrics_port: int,
                 dynamic_batching: bool = True, models: list[str] | None = None,
                 ready_timeout_s: float = 120.0, ort_threads: int = 1, log_verbose: int = 0,
                 python_models: bool = False, env: dict[str, str] | None = None):
        self.repository = Path(repository)
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.dynamic_batching = dynamic_batching
        self.ready_timeout_s = ready_timeout_s
        self.ort_threads = ort_threads
        self.log_verbose = log_verbose
        self.python_models = python_models  # also faceserve's pipeline and rotate models (faceserve.triton_models)
        self.env = dict(env or {})  # added to tritonserver's environment (FACESERVE_* limits for those models)
        self._requested = models
        self.models: list[str] = []
        self._workdir: Path | None = None
        self._process: subprocess.Popen | None = None
        self._env: TritonEnv | None = None
        self._shm: set[str] = set()

    # ---- addresses -------------------------------------------------------

    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"{HOST}:{self.metrics_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log_path(self) -> Path | None:
        return self._workdir / "tritonserver.log" if self._workdir else None

    @property
    def model_repository(self) -> Path | None:
        return self._workdir / "models" if self._workdir else None

    # ---- lifecycle -------------------------------------------------------


    def _prepare(self) -> None:
        """The environment and the working folder once; the generated repository at every start, so that a
        restarted server loads the versions the canonical configs name now, as a Triton on them would."""
        if self._workdir is None:
            self._env = ensure_env()
            self._workdir = Path(tempfile.mkdtemp(prefix="faceserve-triton-"))
        self.models = build_cpu_repository(self.repository, self._workdir / "models",
                                           dynamic_batching=self.dynamic_batching, models=self._requested,
                                           ort_threads=self.ort_threads, python_models=self.python_models)

    def command(self) -> list[str]:
        assert self._env is not None and self._workdir is not None
        return [
            str(self._env.tritonserver),
            f"--model-repository={self._workdir / 'models'}",
            f"--backend-directory={self._env.backend_directory}",
            f"--http-address={HOST}", f"--http-port={self.http_port}",
            f"--grpc-address={HOST}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={HOST}", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            "--model-control-mode=explicit",
            *(f"--load-model={name}" for name in self.models),
            "--exit-timeout-secs=10",
            f"--log-verbose={self.log_verbose}",
        ]

    def start(self) -> None:
        """Start tritonserver and block until the server and every model are ready."""
        if self.running:
            return
        self._prepare()
        assert self._env is not None and self.log_path is not None
        with open(self.log_path, "a") as log_file:
            log_file.write(f"\n==== {' '.join(self.command())}\n")
            log_file.flush()
            self._process = subprocess.Popen(self.command(), env={**self._env.process_env(), **self.env},
                                             cwd=self._workdir,
                                             stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                             start_new_session=True)
        log.info("tritonserver pid %d: http %s grpc %s metrics %s", self._process.pid, self.http_url,
                 self.grpc_url, self.metrics_url)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self._shm |= self._shm_regions()

    def _group_pids(self) -> list[int]:
        if self._process is None:
            return []
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self._process.pid:  # process group id
                    pids.append(int(stat.parent.name))
        return pids

    def _shm_regions(self) -> set[str]:
        """The Python backend's shared-memory files this server's stubs map (to unlink after a kill)."""
        regions = set()
        for pid in self._group_pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                    if "/dev/shm/triton_python_backend_shm_region_" in line:
                        regions.add(line.split("/dev/shm/", 1)[1].split()[0])
        return regions

    def _unlink_shm(self) -> None:
        for name in self._shm:
            with contextlib.suppress(OSError):
                (Path("/dev/shm") / name).unlink()
        self._shm.clear()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (OSError, urllib.error.URLError):
            return 0

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        pending = list(self.models)
        while True:
            if not self.running:
                code = self._process.returncode if self._process else None
                raise TritonStartError(f"tritonserver exited with {code} before its models were ready\n{self.log_tail()}")
            if self._get(LIVE_PATH) == 200:
                pending = [m for m in pending if self._get(f"/v2/models/{m}/ready") != 200]
                if not pending and self._get(READY_PATH) == 200:
                    return
            if time.monotonic() > deadline:
                raise TritonStartError(f"tritonserver not ready after {self.ready_timeout_s:g} s "
                                       f"(models not ready: {', '.join(pending) or 'none'})\n{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no server log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM tritonserver (it unloads its models and their stubs), then SIGKILL whatever
        is left of its process group."""
        process, self._process = self._process, None
        if process is None:
            return
        if not signal_then_wait(process, signal.SIGTERM, timeout_s):
            log.warning("tritonserver %d did not stop in %g s; killing it", process.pid, timeout_s)
        self._kill_group(process)
        self._unlink_shm()

    def kill(self) -> None:
        """SIGKILL the server and its stubs at once (a crash, for failure tests)."""
        process, self._process = self._process, None
        if process is not None:
            self._kill_group(process)
        self._unlink_shm()

    @staticmethod
    def _kill_group(process: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        # stubs are in the same group; give the kernel a moment to reap them
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the server and remove the generated repository and log."""
        self.stop()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
