"""The shared store: PostgreSQL through psycopg 3, for several replicas on several machines.

Besides the change counters every reader polls, commits send NOTIFY on one channel; one listener thread
per store LISTENs there and tells subscribers at once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from typing import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg

from faceserve.store.base import CHANNEL, Store, Transaction

log = logging.getLogger(__name__)

CONNECT_OPTIONS = {
    "connect_timeout": 3,
    "application_name": "faceserve",
    # A database created with initdb's defaults in a C locale is SQL_ASCII, where psycopg would hand back every
    # text column as bytes (and send them back as bytea): ids and names are UTF-8 whatever the database says.
    "client_encoding": "UTF8",
    # A peer that vanishes without closing (a crashed host, a cut network) is noticed in about 20 s
    # instead of the kernel's two hours.
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 2,
}


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore(Store):
    dialect = "postgresql"
    types = {"blob": "BYTEA"}

    def __init__(self, url: str):
        self.url = url
        self._listener: _Listener | None = None
        self._listener_lock = threading.Lock()
        super().__init__(redact(url))

    def _open(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, **CONNECT_OPTIONS)

    def _dead(self, connection: psycopg.Connection) -> bool:
        return connection.closed or connection.broken

    @contextlib.contextmanager
    def _block(self, connection: psycopg.Connection, write: bool) -> Iterator[psycopg.Cursor]:
        with connection.transaction(), connection.cursor() as cursor:
            yield cursor

    def _is_unavailable(self, exc: BaseException) -> bool:
        # OperationalError covers a refused or lost connection, a server shutting down, deadlocks and
        # serialisation failures: all worth a retry. InterfaceError: a connection closed under us.
        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))

    @staticmethod
    @functools.lru_cache(maxsize=512)
    def translate(sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def notify(self, tx: Transaction, topic: str) -> None:
        tx.execute("SELECT pg_notify(?, ?)", (CHANNEL, topic))

    def _lock_migrations(self, tx: Transaction) -> None:
        # Concurrent CREATE TABLE IF NOT EXISTS can still collide on PostgreSQL: one migrator at a time.
        tx.execute("SELECT pg_advisory_xact_lock(?)", (0x66616365,))

    def subscribe(self, topic: str, callback: Callable[[], None]) -> None:
        with self._listener_lock:
            if self._listener is None:
                self._listener = _Listener(self.url, self.description)
                self._listener.start()
            self._listener.add(topic, callback)

    def close(self) -> None:
        with self._listener_lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        super().close()


class _Listener(threading.Thread):
    """LISTENs on the change channel and calls the subscribers of each notified topic. After a lost
    connection it reconnects and then calls every subscriber, since notifications sent meanwhile are lost
    (readers poll meanwhile)."""

    POLL_S = 0.25  # how often the loop looks at its stop flag

    def __init__(self, url: str, description: str):
        super().__init__(name=f"faceserve-listen {description}", daemon=True)
        self.url = url
        self.description = description
        self._callbacks: dict[str, list[Callable[[], None]]] = {}
        self._stopping = threading.Event()

    def add(self, topic: str, callback: Callable[[], None]) -> None:
        self._callbacks.setdefault(topic, []).append(callback)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)

    def _call(self, topics) -> None:
        for topic in list(topics):
            for callback in list(self._callbacks.get(topic, ())):
                try:
                    callback()
                except Exception:
                    log.exception("a change subscriber of %s failed", topic)

    def run(self) -> None:
        lost = False
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, **CONNECT_OPTIONS) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    if lost:
                        log.info("listening to %s again", self.description)
                        self._call(self._callbacks)
                    lost = False
                    while not self._stopping.is_set():
                        for notification in connection.notifies(timeout=self.POLL_S):
                            self._call((notification.payload,))
            except psycopg.Error as exc:
                if not lost:
                    log.warning("lost the change notifications of %s (%s); readers poll until they are back",
                                self.description, str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
                lost = True
                self._stopping.wait(0.5)
