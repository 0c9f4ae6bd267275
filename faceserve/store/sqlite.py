"""The embedded store: one SQLite file in WAL mode, shared by the worker processes of one machine."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Iterator

from faceserve.store.base import Store

# Failures that say "not now" (another process holds the write lock past the busy timeout, the disk is
# full or failing, the file cannot be opened) rather than a bug in our SQL.
UNAVAILABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_FULL", "SQLITE_PROTOCOL")


class SqliteStore(Store):
    dialect = "sqlite"
    types = {"blob": "BLOB"}

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        # Private: the file holds biometric data.
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        super().__init__(f"sqlite:///{self.path}")

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                                     check_same_thread=False)  # used by one thread; closed by `close` from any
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            # FULL: each commit fsyncs the WAL, so a committed enrolment survives a power cut too, not only
            # kill -9 (which NORMAL already survives); enrolments are few, one fsync each is cheap.
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            connection.close()
            raise
        return connection

    @contextlib.contextmanager
    def _block(self, connection: sqlite3.Connection, write: bool) -> Iterator[sqlite3.Cursor]:
        # IMMEDIATE takes the write lock at BEGIN, where the busy timeout waits for it; a deferred
        # transaction that upgrades to writing fails at once with SQLITE_BUSY instead.
        connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        cursor = connection.cursor()
        try:
            yield cursor
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            raise
        finally:
            cursor.close()

    def _is_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and (
            getattr(exc, "sqlite_errorname", "") or "").startswith(UNAVAILABLE)
