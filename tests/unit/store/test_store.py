"""The store on SQLite files (no server): migrations, change counters, transactions, ids, failures as 503s."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from faceserve.errors import StoreUnavailable
from faceserve.store import Migration, new_id, open_store
from faceserve.store.postgres import PostgresStore, redact
from faceserve.store.sqlite import SqliteStore

NOTES = (Migration(1, ("CREATE TABLE notes (id TEXT PRIMARY KEY, body {blob})",)),
         Migration(2, ("ALTER TABLE notes ADD COLUMN author TEXT",)))


@pytest.fixture
def store(tmp_path):
    with open_store(f"sqlite:///{tmp_path / 'data' / 'faceserve.db'}") as store:
        yield store


def test_the_file_is_private_and_in_wal_mode(store, tmp_path):
    assert isinstance(store, SqliteStore) and store.path == tmp_path / "data" / "faceserve.db"
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    with store.read() as tx:
        assert tx.one("PRAGMA journal_mode") == ("wal",)
        assert tx.one("PRAGMA synchronous") == (2,)  # FULL
        assert tx.one("PRAGMA foreign_keys") == (1,)


def test_migrations_apply_once_in_order_per_component(store, tmp_path):
    assert store.migrate("notes", NOTES[:1]) == [1]
    assert store.migrate("notes", NOTES) == [2]
    assert store.migrate("notes", NOTES) == []
    assert store.migrate("other", (Migration(1, ("CREATE TABLE other (x INTEGER)",)),)) == [1]
    with store.transaction() as tx:
        tx.execute("INSERT INTO notes (id, body, author) VALUES (?, ?, ?)", ("n1", b"\x00\x01", "me"))
    with open_store(f"sqlite:///{tmp_path / 'data' / 'faceserve.db'}") as again:  # another process's view
        assert again.migrate("notes", NOTES) == []
        with again.read() as tx:
            assert tx.all("SELECT component, version FROM store_migrations ORDER BY component, version") == [
                ("notes", 1), ("notes", 2), ("other", 1), ("store", 1)]
            assert tx.one("SELECT body, author FROM notes") == (b"\x00\x01", "me")


def test_change_counters_count_committed_changes_only(store):
    assert store.version("gallery") == 0
    with store.transaction() as tx:
        assert tx.bump("gallery") == 1
        assert tx.bump("gallery") == 2
    with pytest.raises(ZeroDivisionError):
        with store.transaction() as tx:
            tx.bump("gallery")
            1 / 0
    assert (store.version("gallery"), store.version("jobs")) == (2, 0)


def test_a_database_that_cannot_be_opened_is_unavailable_not_a_driver_error(tmp_path):
    (tmp_path / "a-directory.db").mkdir()
    with pytest.raises(StoreUnavailable, match="cannot be reached") as error:
        open_store(f"sqlite:///{tmp_path / 'a-directory.db'}")
    assert (error.value.status, error.value.code, error.value.headers) == (503, "store_unavailable",
                                                                           {"Retry-After": "1"})


def test_a_write_lock_held_past_the_busy_timeout_is_unavailable_and_the_store_goes_on(tmp_path):
    path = tmp_path / "faceserve.db"
    store = SqliteStore(path, busy_timeout_s=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreUnavailable):
        with store.transaction() as tx:
            tx.bump("gallery")
    other.execute("ROLLBACK")
    with store.transaction() as tx:
        assert tx.bump("gallery") == 1
    store.close()


def test_sql_errors_that_are_bugs_are_not_hidden_as_unavailable(store):
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        with store.read() as tx:
            tx.all("SELECT * FROM no_such_table")


def test_ids_are_uuid7_in_creation_order():
    ids = [new_id() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {7}


def test_unknown_store_urls_are_refused():
    with pytest.raises(ValueError, match="sqlite:///PATH or postgresql://"):
        open_store("mysql://host/db")


def test_postgresql_placeholders_and_redaction():
    assert PostgresStore.translate("SELECT ? WHERE x LIKE 'a%'") == "SELECT %s WHERE x LIKE 'a%%'"
    assert redact("postgresql://app:s3cret@db:5432/faceserve") == "postgresql://app:***@db:5432/faceserve"
    assert redact("postgresql://app@db/faceserve") == "postgresql://app@db/faceserve"
