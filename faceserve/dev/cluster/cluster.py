"""The instances behind nginx, the Triton and the PostgreSQL they share, and the order in which all of it
starts and stops."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

from faceserve.dev import devserver
from faceserve.dev.cluster.nginx import Nginx, NginxConfig
from faceserve.dev.cluster.readiness import ReadinessWatch
from faceserve.dev.lifecycle import StartedInWith
from faceserve.dev.postgres_local import LocalPostgres
from faceserve.http.caller import SCOPES
from faceserve.http.exposure import PRIVATE_DEPLOYMENT_ENV
from faceserve.http.keys import new_key
from faceserve.settings import STORE_ENV, Settings

log = logging.getLogger(__name__)

Backend = Literal["triton", "embedded"]
KEY_ENVS = ("FACESERVE_API_KEYS", "FACESERVE_API_KEYS_FILE")
ADMIN_KEY_ID = "cluster-admin"


class Instance:
    """One `bentoml serve` on a fixed port: nginx's upstream list names it, so a killed instance comes back there."""

    def __init__(self, name: str, port: int, env: dict[str, str], log_dir: Path):
        self.name, self.port, self.env, self.log_dir = name, port, env, log_dir
        self.server: devserver.Server | None = None
        self._stack = contextlib.ExitStack()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def log(self) -> Path:
        return devserver.bentoml_log(self.log_dir, self.port)

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.process.poll() is None

    def start(self) -> None:
        """Start and wait until /readyz answers 200."""
        if self.server is None:
            self.server = self._stack.enter_context(devserver.bentoml_serve(self.log_dir, self.env, port=self.port))

    def kill(self) -> None:
        """`kill -9` of the whole instance (the arbiter and its workers), as when a machine or container dies."""
        if self.server is not None:
            self.server.kill()
        self.stop()

    def stop(self) -> None:
        self._stack.close()
        self.server = None


class Cluster(StartedInWith):
    """`with Cluster(instances=2) as cluster:` nginx on `cluster.url` load-balancing `instances` faceserve
    instances, each with `workers` processes, all on one local Triton (`backend="triton"`, as in production)
    or each with the embedded onnxruntime backend (`backend="embedded"`), and all sharing one store.

    The store is a local PostgreSQL started before the instances and removed with the cluster
    (`cluster.postgres`), unless `store` names one already running; either way every instance gets its
    URL as FACESERVE_STORE. `env` holds any other FACESERVE_* setting for every instance, and nginx takes
    the instances' body limit from it.

    nginx makes every client 127.0.0.1 to the instances, so their keyless defaults (admin routes for loopback
    clients) would hold for anyone who reaches nginx: unless `env` configures keys, or says
    FACESERVE_PRIVATE_DEPLOYMENT=1, the cluster makes an admin key (`api_key`, also written to
    `<log_dir>/admin-key`) and gives the instances a key file holding its digest.
    """

    def __init__(self, instances: int = 2, *, backend: Backend = "triton", workers: int = 1, port: int | None = None,
                 store: str | None = None, env: dict[str, str] | None = None, log_dir: Path | None = None):
        if instances < 1:
            raise ValueError("a cluster needs at least one instance")
        self.backend, self.workers, self.store = backend, workers, store
        self.port = port or devserver.free_port()
        self.extra_env = dict(env or {})
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="faceserve-cluster-"))
        self.instances = [Instance(f"instance-{i + 1}", devserver.free_port(), {}, self.log_dir)
                          for i in range(instances)]
        self.api_key: str | None = None
        self.triton = None
        self.postgres: LocalPostgres | None = None
        self.nginx: Nginx | None = None
        self.readiness: ReadinessWatch | None = None
        self._stack = contextlib.ExitStack()

    @property
    def url(self) -> str:
        assert self.nginx is not None
        return self.nginx.url

    @property
    def store_url(self) -> str | None:
        """The store every instance shares: `store`, else the local PostgreSQL's once started."""
        return self.store or (self.postgres.url if self.postgres else None)

    def instance_env(self) -> dict[str, str]:
        env = {"FACESERVE_WORKERS": str(self.workers), **self.extra_env}
        if self.store_url:
            env[STORE_ENV] = self.store_url
        if self.triton is not None:
            env["FACESERVE_BACKEND"] = f"grpc://{self.triton.grpc_url}"
        else:
            env.setdefault("FACESERVE_BACKEND", "onnxruntime")
        return env

    def instance_settings(self) -> Settings:
        """The settings each instance reads: this environment with the instances' variables on top."""
        saved = dict(os.environ)
        os.environ.update(self.instance_env())
        try:
            return Settings.from_env()
        finally:
            os.environ.clear()
            os.environ.update(saved)


    def _make_admin_key(self) -> None:
        if any(self.extra_env.get(name) for name in KEY_ENVS) or self.extra_env.get(PRIVATE_DEPLOYMENT_ENV) == "1":
            return
        self.api_key, entry = new_key(ADMIN_KEY_ID, frozenset(SCOPES))
        keys_file, key_file = self.log_dir / "api-keys", self.log_dir / "admin-key"
        for path, text in ((keys_file, entry.line), (key_file, self.api_key)):
            path.unlink(missing_ok=True)
            path.touch(mode=0o600)
            path.write_text(text + "\n")
        self.extra_env["FACESERVE_API_KEYS_FILE"] = str(keys_file)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._make_admin_key()
        if not self.store:
            self.postgres = self._stack.enter_context(LocalPostgres())
        settings = self.instance_settings()
        if self.backend == "triton":
            from faceserve.dev.triton_local import LocalTriton
            ports = {f"{kind}_port": devserver.free_port() for kind in ("http", "grpc", "metrics")}
            self.triton = self._stack.enter_context(LocalTriton(settings.repository, **ports))
        for instance in self.instances:
            instance.env = self.instance_env()
            self._stack.callback(instance.stop)
        with concurrent.futures.ThreadPoolExecutor(len(self.instances)) as pool:
            for started in [pool.submit(instance.start) for instance in self.instances]:
                started.result()
        self.nginx = self._stack.enter_context(Nginx(NginxConfig(
            port=self.port, upstreams=tuple(i.address for i in self.instances),
            max_body_bytes=settings.limits.max_body_bytes, route_body_bytes=settings.route_body_bytes,
            log_dir=self.log_dir)))
        self.readiness = self._stack.enter_context(
            ReadinessWatch({i.address: i.url for i in self.instances}, self.nginx.reroute))
        log.info("nginx on %s in front of %s", self.url, ", ".join(i.address for i in self.instances))

    def close(self) -> None:
        """The readiness polls, nginx (no new requests), the instances, Triton, then PostgreSQL."""
        self._stack.close()
