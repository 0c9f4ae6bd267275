"""Debian's nginx on 127.0.0.1 in front of the instances: its configuration, rendered from nginx.conf.j2, and its process."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import jinja2

from faceserve.dev.devserver import process_tree
from faceserve.dev.lifecycle import StartedInWith, signal_then_wait
from faceserve.errors import PayloadTooLarge, Unavailable
from faceserve.http.responses import RETRY_AFTER_S

TEMPLATE = Path(__file__).with_name("nginx.conf.j2")
# Debian's nginx runs its workers as www-data; elsewhere the account every system has.
WORKER_USERS = ("www-data", "nobody")


class NginxError(RuntimeError):
    """nginx refused its configuration or did not start; the message ends with its error log."""


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise NginxError("nginx is not installed: `make system` installs it (requirements/debian.txt)")
    return found


def worker_user() -> str | None:
    """The unprivileged account for nginx's workers when we run as root; None when we do not (nginx ignores
    `user` then)."""
    if os.geteuid() != 0:
        return None
    for name in WORKER_USERS:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise NginxError(f"none of the accounts {', '.join(WORKER_USERS)} exists to run nginx's workers")


def quoted(text: str) -> str:
    """An nginx single-quoted string (`return`'s text). `$` would start a variable, so none may appear."""
    if "$" in text:
        raise ValueError(f"nginx would read `$` as a variable: {text!r}")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclasses.dataclass(frozen=True)
class NginxConfig:
    port: int
    upstreams: tuple[str, ...]  # host:port of each instance
    max_body_bytes: int  # the instances' FACESERVE_MAX_BODY_BYTES
    log_dir: Path
    route_body_bytes: dict[str, int] = dataclasses.field(default_factory=dict)  # the instances' routes' own limits
    host: str = "127.0.0.1"
    max_fails: int = 2
    fail_timeout_s: int = 3
    connect_timeout_s: int = 2
    read_timeout_s: int = 60  # above the service's own request timeout (service.py: traffic timeout 30 s)
    down: frozenset[str] = frozenset()  # upstreams nginx sends nothing (not ready: faceserve.dev.cluster.readiness)

    def render(self, workdir: Path) -> str:
        environment = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                         keep_trailing_newline=True)
        unavailable = Unavailable("no faceserve instance could answer; retry")
        # One 413 answer per limit, each naming its own: the service-wide one first, then each route's in order.
        too_large = [self._too_large(limit) for limit in (self.max_body_bytes, *self.route_body_bytes.values())]
        return environment.from_string(TEMPLATE.read_text()).render(
            **dataclasses.asdict(self), workdir=workdir, worker_user=worker_user(), body_too_large=too_large,
            unavailable=quoted(json.dumps(unavailable.body())), retry_after_s=RETRY_AFTER_S)

    @staticmethod
    def _too_large(limit: int) -> str:
        return quoted(json.dumps(PayloadTooLarge(f"the request body is over the limit of {limit} bytes").body()))


class Nginx(StartedInWith):
    """`with Nginx(config) as nginx:` nginx in the foreground (own process group), its pid file and temporary
    folders in a private directory that is removed afterwards; logs in `config.log_dir`."""

    def __init__(self, config: NginxConfig, ready_timeout_s: float = 30.0):
        self.config = config
        self.ready_timeout_s = ready_timeout_s
        self.workdir: Path | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.config.port}"

    @property
    def access_log(self) -> Path:
        return self.config.log_dir / "nginx-access.log"

    @property
    def error_log(self) -> Path:
        return self.config.log_dir / "nginx-error.log"

    @property
    def conf(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "nginx.conf"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


    def command(self, *extra: str) -> list[str]:
        assert self.workdir is not None
        # -e: the log nginx writes before it has read `error_log` (Debian's default is /var/log/nginx)
        return [nginx_binary(), "-p", str(self.workdir), "-c", str(self.conf), "-e", str(self.error_log), *extra]

    def start(self) -> None:
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="faceserve-nginx-"))
        self.workdir.chmod(0o755)  # unprivileged workers write request bodies under it
        self.conf.write_text(self.config.render(self.workdir))
        checked = subprocess.run(self.command("-t", "-q"), capture_output=True, text=True)
        if checked.returncode != 0:
            raise NginxError(f"nginx refused {self.conf}:\n{checked.stderr.strip()}")
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.ready_timeout_s
        while not self._accepts():
            if not self.running or time.monotonic() > deadline:
                raise NginxError(f"nginx did not start listening on {self.url}\n{self.log_tail()}")
            time.sleep(0.05)

    def _accepts(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((self.config.host, self.config.port), timeout=1):
            return True
        return False

    def log_tail(self, lines: int = 20) -> str:
        if not self.error_log.exists():
            return "(no error log)"
        return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])

    def worker_pids(self) -> list[int]:
        return process_tree(self.process.pid)[1:] if self.running else []

    def reroute(self, down: frozenset[str]) -> None:
        """Take the upstreams in `down` out and put every other back: the configuration rewritten and reloaded
        (SIGHUP). New workers route by it; the old ones finish the requests they hold, then exit."""
        if not self.running:
            raise NginxError("nginx is not running")
        config = dataclasses.replace(self.config, down=frozenset(down))
        self.conf.write_text(config.render(self.workdir))
        self.config = config
        self.process.send_signal(signal.SIGHUP)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGQUIT: nginx finishes the requests in flight, then exits; SIGKILL to its group past the timeout."""
        process, self.process = self.process, None
        if process is None:
            return
        if not signal_then_wait(process, signal.SIGQUIT, timeout_s):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def close(self) -> None:
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
