"""`faceserve/services/jobs.py`: a job given one way, its owner's alone (and an admin's), cancelled; a refused
submission queues nothing."""

from __future__ import annotations

import pytest

from faceserve.errors import FaceserveError
from faceserve.http.caller import ADMIN, ANALYZE, Caller
from tests.unit.services.conftest import png

ALICE, BOB = Caller("10.0.0.1", "alice", frozenset({ANALYZE})), Caller("10.0.0.2", "bob", frozenset({ANALYZE}))
ADMIN_CALLER = Caller("10.0.0.3", "root", frozenset({ANALYZE, ADMIN}))


def queued_jobs(services, run) -> int:
    queue = run(services.resources.jobs())
    with queue.store.read() as tx:
        return tx.one("SELECT COUNT(*) FROM jobs")[0]


def test_a_job_is_given_one_way_or_refused_with_nothing_queued(services, run, tmp_path):
    upload = tmp_path / "a.png"
    upload.write_bytes(png())
    for given, status, code in (({}, 400, "missing_image"),
                                ({"uploads": [upload], "urls": ["http://example.com/a.png"]}, 400, "ambiguous_image"),
                                ({"urls": ["http://example.com/a.png"]}, 400, "url_fetch_disabled")):
        with pytest.raises(FaceserveError) as refused:
            run(services.jobs.submit(ALICE, given.get("uploads"), None, given.get("urls")))
        assert (refused.value.status, refused.value.code) == (status, code)
    assert queued_jobs(services, run) == 0


def test_a_job_is_its_submitters_and_an_admins(services, run, tmp_path):
    uploads = []
    for name in ("a.png", "b.png"):
        uploads.append(tmp_path / name)
        uploads[-1].write_bytes(png())
    job = run(services.jobs.submit(ALICE, uploads, None, None))
    assert (job.state, job.total, job.done, job.failed, job.cancelled, job.finished_at) == (
        "queued", 2, 0, 0, 0, None)
    for attempt in (services.jobs.status, services.jobs.cancel, services.jobs.results):
        with pytest.raises(FaceserveError) as unknown:
            run(attempt(BOB, job.id))
        assert (unknown.value.status, unknown.value.code) == (404, "unknown_job")
    assert run(services.jobs.status(ADMIN_CALLER, job.id)) == job
    cancelled = run(services.jobs.cancel(ALICE, job.id))
    assert (cancelled.state, cancelled.cancelled, cancelled.done) == ("cancelled", 2, 0)
    assert run(services.jobs.results(ALICE, job.id)).decode().splitlines() == [
        '{"index": 0, "name": "a.png", "state": "cancelled"}', '{"index": 1, "name": "b.png", "state": "cancelled"}']
