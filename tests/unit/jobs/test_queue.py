"""The job queue over real stores (SQLite, PostgreSQL): limits, leases, a dead worker's items, cancel, a reopened
store."""

from __future__ import annotations

import time

import pytest

from faceserve.errors import LimitExceeded, NotFound
from faceserve.http.caller import Caller
from faceserve.jobs import JobLimits, JobQueue, NewItem
from faceserve.jobs.queue import MAX_ATTEMPTS
from faceserve.jobs.migrations import MIGRATIONS
from faceserve.store import new_id, open_store

# Callers without keys, told apart by their addresses, and with keys, by the keys' ids.
ALICE, BOB = Caller("192.0.2.1").principal, Caller("192.0.2.2").principal
ALICE_KEY = Caller("192.0.2.1", key_id="alice").principal


@pytest.fixture
def store_url(store_url_each_engine):
    return store_url_each_engine


@pytest.fixture
def queue(store_url):
    with open_store(store_url) as store:
        yield JobQueue(store, JobLimits(max_images=5, max_bytes=100, max_queued_jobs=2), lease_s=30)


def images(count: int) -> list[NewItem]:
    return [NewItem(f"{i}.jpg", image=bytes([i]) * 10) for i in range(count)]


def test_every_item_is_claimed_once_and_its_result_kept_in_order(store_url, queue):
    job = queue.submit("key", images(3), {"detector": None})
    claimed = queue.claim("a", 2) + queue.claim("b", 2)
    assert [(item.position, item.image) for item in claimed] == [(0, b"\0" * 10), (1, b"\1" * 10), (2, b"\2" * 10)]
    assert queue.claim("c", 2) == []
    for item in reversed(claimed):
        worker = "a" if item.position < 2 else "b"
        error = {"error": "invalid_image", "message": "no"} if item.position == 1 else None
        assert queue.complete(worker, item, None if error else {"faces": [], "n": item.position}, error)
    with open_store(store_url) as store:  # another process, or the same after a restart
        reopened = JobQueue(store)
        status = reopened.status(job)
        assert (status.state, status.total, status.done, status.failed) == ("done", 3, 2, 1)
        lines = list(reopened.results(job))
    assert [line["name"] for line in lines] == ["0.jpg", "1.jpg", "2.jpg"]
    assert lines[0]["analysis"] == {"faces": [], "n": 0} and lines[1]["error"]["error"] == "invalid_image"


@pytest.mark.parametrize("items, code, named", [
    (images(6), "job_images", "limit is 5 images per job"),
    ([NewItem("big.jpg", image=b"x" * 101)], "job_bytes", "limit is 100 bytes per job"),
    ([], "job_empty", "at least one image"),
])
def test_limits_are_named(queue, items, code, named):
    with pytest.raises(LimitExceeded) as error:
        queue.submit("key", items, {})
    assert error.value.code == code and named in error.value.message


def job_rows(queue) -> tuple[list[tuple], list[tuple]]:
    with queue.store.read() as tx:
        return (tx.all("SELECT id, owner, state FROM jobs ORDER BY id"),
                tx.all("SELECT job_id, position, state FROM jobs_items ORDER BY job_id, position"))


def test_queued_jobs_per_caller_one_caller_blocks_nobody_else(queue):
    """Issue 20, finding 9: the quota is the caller's own (an address without keys, a key's id with them)."""
    for _ in range(2):
        queue.submit(ALICE, images(1), {})
    before = job_rows(queue)
    with pytest.raises(LimitExceeded, match="limit is 2 queued jobs per caller") as error:
        queue.submit(ALICE, images(1), {})
    assert (error.value.status, error.value.code) == (422, "jobs_queued")
    assert job_rows(queue) == before  # refused: nothing written
    for other in (BOB, ALICE_KEY):  # another address; a key on the same address
        queue.submit(other, images(1), {})
        queue.submit(other, images(1), {})
    assert [owner for _, owner, _ in job_rows(queue)[0]] == [ALICE] * 2 + [BOB] * 2 + [ALICE_KEY] * 2


def test_a_claimed_item_names_its_jobs_owner(queue):
    queue.submit(BOB, images(1), {"detector": None})
    (item,) = queue.claim("worker")
    assert item.owner == BOB  # its answer is remembered as Bob's, for his feedback alone


def test_jobs_of_before_owners_were_principals_are_nobodys(store_url):
    """Owners were an API key's sha256 or "" (everyone without keys): migrated, such a job is nobody's (an admin,
    owner None, still reads it) and counts against nobody's quota."""
    with open_store(store_url) as store:
        store.migrate("jobs", MIGRATIONS[:1])
        old = [new_id(), new_id()]
        with store.transaction() as tx:
            for job_id, owner in zip(old, ("", "ab" * 32)):
                tx.execute("INSERT INTO jobs (id, owner, state, options, total, created_at) "
                           "VALUES (?, ?, 'queued', '{}', 0, '2026-01-01T00:00:00+00:00')", (job_id, owner))
        queue = JobQueue(store, JobLimits(max_queued_jobs=1))
        for job_id in old:
            for caller in (ALICE, BOB, ALICE_KEY, "", "ab" * 32):
                with pytest.raises(NotFound):
                    queue.status(job_id, caller)
            assert queue.status(job_id).id == job_id
        queue.submit(ALICE, images(1), {})  # the old jobs take no place of hers
        with store.read() as tx:
            owners = sorted(owner for (owner,) in tx.all("SELECT owner FROM jobs"))
        assert owners == sorted(["legacy:", "legacy:" + "ab" * 32, ALICE])


def test_a_dead_workers_item_goes_to_another_and_is_written_once(queue):
    queue.lease_s = 0.05
    job = queue.submit("key", images(1), {})
    (first,) = queue.claim("dies")
    time.sleep(0.1)
    (again,) = queue.claim("lives")
    assert again.position == first.position
    assert queue.complete("lives", again, {"faces": []})
    assert not queue.complete("dies", first, {"faces": ["late"]})  # it came back to life: nothing written
    assert [line["analysis"] for line in queue.results(job)] == [{"faces": []}]


def test_a_renewed_lease_keeps_a_slow_item_from_other_workers(queue):
    queue.lease_s = 1.0
    job = queue.submit("key", images(1), {})
    (slow,) = queue.claim("slow")
    for _ in range(3):  # 1.2 s in all: past the first lease, never past a renewed one
        time.sleep(0.4)
        assert queue.renew("slow", slow)
    assert queue.claim("other") == []
    assert not queue.renew("other", slow)  # only its holder renews it
    assert queue.complete("slow", slow, {"faces": []})
    assert not queue.renew("slow", slow)  # done: nothing left to hold
    assert [line["analysis"] for line in queue.results(job)] == [{"faces": []}]


def test_an_item_that_kills_every_worker_is_failed_with_the_reason(queue):
    queue.lease_s = 0.0
    job = queue.submit("key", images(2), {})
    for attempt in range(MAX_ATTEMPTS):
        assert [item.position for item in queue.claim(f"worker{attempt}", 1)] == [0]
        time.sleep(0.01)
    (next_item,) = queue.claim("survivor", 1)
    assert next_item.position == 1
    (line,) = queue.results(job)
    assert line["state"] == "failed" and line["error"]["error"] == "worker_died"


def test_another_owners_job_is_unknown_to_it(queue):
    job = queue.submit(ALICE, images(2), {})
    before = job_rows(queue)
    for other in (BOB, ALICE_KEY):
        for attempt in (lambda: queue.status(job, other), lambda: list(queue.results(job, other)),
                        lambda: queue.cancel(job, other)):
            with pytest.raises(NotFound) as unknown:
                attempt()
            assert (unknown.value.status, unknown.value.code) == (404, "unknown_job")
            assert unknown.value.message == f"no job has the id {job!r}"
    assert job_rows(queue) == before  # the others' cancels changed nothing
    assert queue.status(job, ALICE).state == "queued"
    assert queue.status(job).total == 2  # no owner given: an admin's reads, and the service's own
    assert queue.cancel(job, ALICE).cancelled == 2


def test_cancel(queue):
    job = queue.submit("key", images(3), {})
    (item,) = queue.claim("a")
    status = queue.cancel(job)
    assert (status.state, status.cancelled, status.done) == ("cancelled", 3, 0)
    assert not queue.complete("a", item, {"faces": []}) and queue.claim("a") == []
    with pytest.raises(NotFound):
        queue.status("0190aaaa-0000-7000-8000-000000000000")
