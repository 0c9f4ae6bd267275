"""What every store engine shares: transactions, versioned migrations, change counters, error mapping."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import secrets
import threading
import time
import uuid
import weakref
from typing import Any, Callable, ContextManager, Iterator, Sequence

from faceserve.errors import StoreUnavailable

log = logging.getLogger(__name__)

# The one channel PostgreSQL notifications travel on; the payload is the topic.
CHANNEL = "faceserve_changes"


@dataclasses.dataclass(frozen=True)
class Migration:
    """One step of a component's schema. `{blob}` in a statement becomes the engine's byte-string type;
    everything else is SQL both engines read the same way."""

    version: int
    statements: tuple[str, ...]


STORE_MIGRATIONS = (
    Migration(1, (
        """CREATE TABLE store_changes (
               topic TEXT PRIMARY KEY,
               version BIGINT NOT NULL
           )""",
    )),
)


_last = (0, 0)  # the last id made here: (milliseconds, random part)
_id_lock = threading.Lock()
_RANDOM_BITS = 74  # rand_a (12) and rand_b (62): the 80 bits after the time, less version and variant
# Within one millisecond the next id is the last one plus a random step of this many bits: ids stay in creation
# order, and one id tells nothing usable about the next (a request id must not be guessable from one's own).
_STEP_BITS = 62


def _uuid7(milliseconds: int, random_bits: int) -> int:
    """RFC 9562's UUIDv7 layout: 48 bits of Unix milliseconds, then 74 random bits around the version (7) and
    variant fields."""
    rand_a, rand_b = random_bits >> 62 & 0xFFF, random_bits & (2**62 - 1)
    return (milliseconds & (2**48 - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0x2 << 62 | rand_b


def new_id() -> str:
    """A UUIDv7 (RFC 9562) as text: unique without coordination between replicas, and sorting by it
    sorts by creation time (strictly within a process, to the millisecond across them), so it doubles
    as a stable pagination key. Its 74 bits after the time are from `secrets`: no id can be guessed
    from another."""
    global _last
    milliseconds, random_bits = time.time_ns() // 1_000_000, secrets.randbits(_RANDOM_BITS)
    with _id_lock:
        last_ms, last_random = _last
        if milliseconds <= last_ms:
            # Within one millisecond (or with the clock set back) random bits alone would order ids at random:
            # step up from the last one by a random amount instead (RFC 9562 6.2, method 2), into the next
            # millisecond when the random part would overflow.
            milliseconds, random_bits = last_ms, last_random + 1 + secrets.randbits(_STEP_BITS)
            if random_bits >= 2**_RANDOM_BITS:
                milliseconds, random_bits = last_ms + 1, secrets.randbits(_RANDOM_BITS - 1)
        _last = (milliseconds, random_bits)
    return str(uuid.UUID(int=_uuid7(milliseconds, random_bits)))


def first_id_at(moment: datetime.datetime) -> str:
    """The smallest id `new_id` can give at `moment`: every id made before it sorts below, every later one not."""
    return str(uuid.UUID(int=_uuid7(int(moment.timestamp() * 1000), 0)))


def utc_now() -> str:
    """Timestamps are ISO 8601 text in UTC on both engines (one logical schema, sortable, portable in exports)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


class Transaction:
    """The statements of one transaction. SQL uses `?` placeholders on every engine."""

    def __init__(self, store: "Store", cursor: Any):
        self.store, self._cursor = store, cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self._cursor.execute(self.store.translate(sql), params)
        return self._cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cursor.executemany(self.store.translate(sql), rows)

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.execute(sql, params).fetchall()

    def bump(self, topic: str) -> int:
        """Advance `topic`'s change counter in this transaction and return its new value. Every change a
        reader follows calls it: the row lock it takes orders concurrent writers, so once a reader sees
        version V, every change numbered V or below is committed and visible."""
        (version,) = self.one(
            "INSERT INTO store_changes (topic, version) VALUES (?, 1) "
            "ON CONFLICT (topic) DO UPDATE SET version = store_changes.version + 1 RETURNING version", (topic,))
        self.store.notify(self, topic)
        return version


class Store:
    """A database holding every stored concept (the gallery, later jobs and feedback).

    Thread-safe: each thread gets its own connection, opened on first use and reopened after a failure,
    so a database that comes back is used again without recreating the store. A database that cannot be
    reached raises `StoreUnavailable` (HTTP 503 with Retry-After), never a driver exception.
    """

    dialect: str
    types: dict[str, str]
    retry_after_s = 1

    def __init__(self, description: str):
        self.description = description  # for messages: never carries a password
        self._local = threading.local()
        # Weak: a thread's connection is closed when the thread ends and its thread-local slot goes.
        self._slots: weakref.WeakSet[_Slot] = weakref.WeakSet()
        self._closed = False
        self.migrate("store", STORE_MIGRATIONS)

    # ---- engine hooks ----------------------------------------------------

    def _open(self) -> Any:
        raise NotImplementedError

    def _dead(self, connection: Any) -> bool:
        """Whether the connection is known to be unusable (the server closed it)."""
        return False

    def _block(self, connection: Any, write: bool) -> ContextManager[Any]:
        """Begin, yield a cursor, commit (roll back on an exception)."""
        raise NotImplementedError

    def _is_unavailable(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def translate(self, sql: str) -> str:
        return sql

    def notify(self, tx: Transaction, topic: str) -> None:
        """Tell other processes at commit that `topic` changed, where the engine can."""

    def _lock_migrations(self, tx: Transaction) -> None:
        """Serialise migrating processes (SQLite's write transaction already does)."""

    def subscribe(self, topic: str, callback: Callable[[], None]) -> None:
        """Call `callback` (from another thread) soon after another process commits a change of `topic`,
        and whenever changes may have been missed. Engines without notifications never call it: readers
        poll `version` as well."""

    # ---- transactions ----------------------------------------------------

    def transaction(self) -> ContextManager[Transaction]:
        """A write transaction, committed when the block ends without an exception. Keep it short."""
        return self._transaction(write=True)

    def read(self) -> ContextManager[Transaction]:
        return self._transaction(write=False)

    @contextlib.contextmanager
    def _transaction(self, write: bool) -> Iterator[Transaction]:
        try:
            with contextlib.ExitStack() as stack:
                yield Transaction(self, self._begin(stack, write))
        except Exception as exc:
            if not self._is_unavailable(exc):
                raise
            self._drop_connection()
            raise StoreUnavailable(f"the store ({self.description}) cannot be reached: {_first_line(exc)}",
                                   retry_after=self.retry_after_s) from exc

    def _begin(self, stack: contextlib.ExitStack, write: bool) -> Any:
        """Enter a transaction block; on a new connection if the thread's one died since its last use (the
        server restarted): nothing of the transaction was sent, so beginning again is safe."""
        slot = getattr(self._local, "slot", None)
        try:
            return stack.enter_context(self._block(self._connection(), write))
        except Exception as exc:
            if slot is None or slot is not self._local.slot or not (
                    self._is_unavailable(exc) and self._dead(slot.connection)):
                raise
        self._drop_connection()
        return stack.enter_context(self._block(self._connection(), write))

    def _connection(self) -> Any:
        if self._closed:
            raise RuntimeError(f"the store ({self.description}) is closed")
        slot = getattr(self._local, "slot", None)
        if slot is not None and self._dead(slot.connection):
            self._drop_connection()
            slot = None
        if slot is None:
            slot = self._local.slot = _Slot(self._open())
            self._slots.add(slot)
        return slot.connection

    def _drop_connection(self) -> None:
        slot = getattr(self._local, "slot", None)
        self._local.slot = None
        if slot is not None:
            self._slots.discard(slot)
            slot.close()

    # ---- schema and changes ----------------------------------------------

    def migrate(self, component: str, migrations: Sequence[Migration]) -> list[int]:
        """Apply the migrations of `component` not applied yet, in order, in one transaction; return
        the versions applied. Components (store, gallery, jobs, ...) number their versions independently."""
        with self.transaction() as tx:
            self._lock_migrations(tx)
            tx.execute("CREATE TABLE IF NOT EXISTS store_migrations ("
                       "component TEXT NOT NULL, version INTEGER NOT NULL, applied_at TEXT NOT NULL, "
                       "PRIMARY KEY (component, version))")
            applied = {v for (v,) in tx.all("SELECT version FROM store_migrations WHERE component = ?",
                                            (component,))}
            known = {m.version for m in migrations}
            if applied - known:
                log.warning("the store's %s schema has versions %s this code does not know (a newer faceserve "
                            "migrated it)", component, sorted(applied - known))
            done = []
            for migration in sorted(migrations, key=lambda m: m.version):
                if migration.version in applied:
                    continue
                for statement in migration.statements:
                    tx.execute(statement.format(**self.types))
                tx.execute("INSERT INTO store_migrations (component, version, applied_at) VALUES (?, ?, ?)",
                           (component, migration.version, utc_now()))
                done.append(migration.version)
        if done:
            log.info("store %s: %s schema migrated to version %d", self.description, component, done[-1])
        return done

    def version(self, topic: str) -> int:
        """How many changes of `topic` were committed (0 for none)."""
        with self.read() as tx:
            row = tx.one("SELECT version FROM store_changes WHERE topic = ?", (topic,))
        return row[0] if row else 0

    # ---- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        for slot in list(self._slots):
            slot.close()
        self._slots.clear()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


class _Slot:
    """A thread's connection (a weakly referable holder)."""

    def __init__(self, connection: Any):
        self.connection = connection

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
