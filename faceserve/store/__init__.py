"""The database every stored concept shares: the gallery now, asynchronous jobs and feedback next.

SQLite in WAL mode under the data directory by default (one machine, several worker processes);
PostgreSQL when the store URL is `postgresql://...` (several replicas). Both engines hold the same
logical schema, built by versioned migrations that each component (`store`, `gallery`, ...) numbers on
its own. A component that wants other processes to follow its changes bumps its change counter in the
same transaction as the change (`Transaction.bump`); readers poll `Store.version` and, on PostgreSQL,
are told at once through LISTEN/NOTIFY (`Store.subscribe`). What belongs here: connections,
transactions, migrations, change counters, the mapping of driver failures to `StoreUnavailable`.
What does not: any table of a component (each package owns its schema), any domain rule.
See docs/store.md.

    store = open_store(settings.store)
    with store.transaction() as tx:
        tx.execute("INSERT INTO ... VALUES (?, ?)", (a, b))
        tx.bump("gallery")
"""

from __future__ import annotations

from pathlib import Path

from faceserve.store.base import Migration, Store, Transaction, first_id_at, new_id, utc_now

__all__ = ["open_store", "Store", "Transaction", "Migration", "first_id_at", "new_id", "utc_now"]

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(url: str) -> Store:
    """`sqlite:////absolute/path.db` (`sqlite:///relative.db`), or a libpq URL
    `postgresql://user:password@host:port/database`."""
    if url.startswith(SQLITE_PREFIX):
        from faceserve.store.sqlite import SqliteStore
        return SqliteStore(Path(url[len(SQLITE_PREFIX):]))
    if url.startswith(POSTGRES_SCHEMES):
        from faceserve.store.postgres import PostgresStore  # psycopg is imported only when it is used
        return PostgresStore(url)
    raise ValueError(f"unsupported store URL {url.split('://')[0]!r}: use sqlite:///PATH or postgresql://...")
