"""A real local PostgreSQL server (Debian's `postgresql` package) for the tests and the local cluster.

    from faceserve.dev.postgres_local import LocalPostgres
    with LocalPostgres() as server:
        store = open_store(server.url)   # postgresql://faceserve@127.0.0.1:<free port>/faceserve
        server.restart()                  # same port, same data: the store recovers on its next call

    python -m faceserve.dev.postgres_local          # serve in the foreground until Ctrl-C, printing the URL

`initdb` and `postgres` from the newest /usr/lib/postgresql/*/bin, data in a private temporary folder,
listening on 127.0.0.1 only with trust authentication (never expose it). PostgreSQL refuses to run as
root, so as root the server runs as the `postgres` user the package creates (else `nobody`). The
postmaster is our own child (not daemonised by pg_ctl), so that we reap it: in a container whose init
reaps nothing, a killed postmaster left as a zombie would keep its data directory locked.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from faceserve.dev.devserver import alive, free_port, process_tree
from faceserve.dev.lifecycle import StartedInWith, signal_then_wait

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
INSTALL_ROOT = Path("/usr/lib/postgresql")


class PostgresStartError(RuntimeError):
    """initdb or the server failed; the message ends with the server's log."""


def bin_dir() -> Path:
    """The binaries of the newest installed PostgreSQL major version."""
    found = sorted((p.parent for p in INSTALL_ROOT.glob("*/bin/initdb")), key=lambda p: int(p.parent.name))
    if not found:
        raise PostgresStartError(f"no PostgreSQL under {INSTALL_ROOT}: install Debian's `postgresql` package "
                                 "(`make system` installs requirements/debian.txt)")
    return found[-1]


def server_user() -> str | None:
    """Who runs the server: ourselves, unless we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PostgresStartError("running as root and neither a `postgres` nor a `nobody` user exists")


class LocalPostgres(StartedInWith):
    """`start()` initialises the cluster once, starts the server and creates the database; `stop()`,
    `start()` and `restart()` keep its port and data; `kill()` SIGKILLs it (a crash); `close()` stops it
    and removes every file. Closed at interpreter exit if still open."""

    def __init__(self, *, port: int | None = None, database: str = "faceserve", user: str = "faceserve",
                 ready_timeout_s: float = 60.0):
        self.port = port or free_port()
        self.database, self.user = database, user
        self.ready_timeout_s = ready_timeout_s
        self.bin = bin_dir()
        self.run_as = server_user()
        self.workdir: Path | None = None
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.database_url(self.database)

    @property
    def data_dir(self) -> Path:
        assert self.workdir is not None, "not started"
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None, "not started"
        return self.workdir / "postgres.log"


    def _as_server_user(self) -> dict:
        """subprocess arguments that run a command as the server's user, in its folder, with a plain locale."""
        who = {} if self.run_as is None else {"user": self.run_as, "group": pwd.getpwnam(self.run_as).pw_gid,
                                              "extra_groups": []}
        return {**who, "cwd": self.workdir, "stdin": subprocess.DEVNULL, "env": {**os.environ, "LC_ALL": "C"}}

    def _initdb(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="faceserve-postgres-"))
        atexit.register(self.close)
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        result = subprocess.run([str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                                 "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                                capture_output=True, text=True, **self._as_server_user())
        if result.returncode != 0:
            raise PostgresStartError(f"initdb failed ({result.returncode}): {result.stderr.strip()}")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            if self.workdir is None:
                self._initdb()
            with open(self.log_path, "a") as log_file:
                self._process = subprocess.Popen(
                    [str(self.bin / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                     "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={self.workdir}"],
                    stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, **self._as_server_user())
            self._wait_ready()
        log.info("PostgreSQL ready at %s (data %s)", self.url, self.data_dir)

    def _wait_ready(self) -> None:
        """Until the server accepts connections; then create the database if it is not there yet."""
        import psycopg

        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if not self.running:
                raise PostgresStartError(f"postgres exited with {self._process.returncode}\n{self.log_tail()}")
            try:
                self.create_database(self.database)
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise PostgresStartError(f"postgres not ready after {self.ready_timeout_s:g} s\n"
                                             f"{self.log_tail()}") from None
                time.sleep(0.05)

    def database_url(self, name: str) -> str:
        return f"postgresql://{self.user}@{HOST}:{self.port}/{name}"

    def create_database(self, name: str, encoding: str = "UTF8") -> str:
        """Create database `name` unless it exists (one per test keeps tests apart); return its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.database_url("postgres"), autocommit=True, connect_timeout=2) as connection:
            if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                connection.execute(sql.SQL("CREATE DATABASE {} ENCODING {} TEMPLATE template0").format(
                    sql.Identifier(name), sql.Literal(encoding)))
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name`, disconnecting its clients."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.database_url("postgres"), autocommit=True, connect_timeout=2) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))

    def stop(self, timeout_s: float = 30.0) -> None:
        """A fast shutdown (SIGINT): clients are disconnected, everything committed is kept."""
        with self._lock:
            process, self._process = self._process, None
            if process is None:
                return
            if not signal_then_wait(process, signal.SIGINT, timeout_s):
                log.warning("postgres %d did not stop in %g s; killing it", process.pid, timeout_s)
                self._kill(process)

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash). `start()` recovers."""
        with self._lock:
            process, self._process = self._process, None
            if process is not None:
                self._kill(process)

    @staticmethod
    def _kill(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
        """SIGKILL and reap the postmaster, then wait until its backends noticed and exited: a new server
        refuses a data directory whose shared memory they still hold."""
        backends = process_tree(process.pid)[1:]
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
        deadline = time.monotonic() + timeout_s
        while any(alive(pid) for pid in backends) and time.monotonic() < deadline:
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        if self.workdir is None or not self.log_path.exists():
            return "(no server log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        """Stop the server and remove its data."""
        if self.workdir is None:
            return
        self.stop()
        atexit.unregister(self.close)
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faceserve.dev.postgres_local",
                                     description="a throw-away PostgreSQL on 127.0.0.1, removed on exit")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with LocalPostgres(port=args.port) as server:
        print(f"PostgreSQL ready: FACESERVE_STORE={server.url}\n  log {server.log_path}\nCtrl-C to stop.",
              flush=True)
        stop.wait()
    print("PostgreSQL stopped, data removed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
