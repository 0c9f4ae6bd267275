"""The job queue over the shared store: submit, claim under a lease, complete, cancel, status, results."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Iterator

from pydantic import BaseModel, Field

from faceserve.errors import LimitExceeded, NotFound
from faceserve.jobs.migrations import MIGRATIONS
from faceserve.store import Store, new_id, utc_now

# A worker that died holding an item dies again on it this many times before the item is reported failed:
# an image that kills its worker must not kill every worker in turn forever.
MAX_ATTEMPTS = 3
# An image of a job in one of these states has its result line; a job itself ends as done or cancelled
# (jobs/client.py: FINAL_JOB_STATES).
FINISHED_ITEM_STATES = ("done", "failed", "cancelled")


# A generous bound on one upload's multipart framing: boundary, Content-Disposition with a long file name,
# Content-Type.
MULTIPART_PART_BYTES = 1024


@dataclasses.dataclass(frozen=True)
class JobLimits:
    max_images: int = 1000
    max_bytes: int = 200 * 1024 * 1024
    max_queued_jobs: int = 4  # unfinished jobs per owner (the caller's principal)

    @property
    def max_request_bytes(self) -> int:
        """The largest `/jobs/submit` body that can hold a job within these limits: its images' bytes and each
        part's multipart headers (a zip's own headers fit in the same allowance)."""
        return self.max_bytes + self.max_images * MULTIPART_PART_BYTES

    def check_images(self, count: int) -> None:
        if count > self.max_images:
            raise LimitExceeded(f"{count} images; the limit is {self.max_images} images per job", code="job_images")

    def check_bytes(self, size: int) -> None:
        if size > self.max_bytes:
            raise LimitExceeded(f"{size} bytes of images; the limit is {self.max_bytes} bytes per job",
                                code="job_bytes")


@dataclasses.dataclass(frozen=True)
class NewItem:
    name: str
    image: bytes | None = None
    url: str | None = None


@dataclasses.dataclass(frozen=True)
class WorkItem:
    job_id: str
    position: int
    name: str
    image: bytes | None
    url: str | None
    options: dict
    owner: str  # the submitter's principal: the answer remembered for feedback is theirs


class Job(BaseModel):
    """An asynchronous job (`/jobs/submit`) and its progress; its results are `/jobs/results`."""

    id: str
    state: str = Field(description="queued (waiting or running) | done | cancelled")
    total: int = Field(description="images in the job")
    done: int = Field(description="images analysed")
    failed: int = Field(description="images that could not be analysed (their result line says why)")
    cancelled: int = Field(description="images not analysed because the job was cancelled")
    created_at: str
    finished_at: str | None


class JobQueue:
    """Every method is synchronous and thread-safe; any number of processes may share the store."""

    def __init__(self, store: Store, limits: JobLimits = JobLimits(), lease_s: float = 30.0):
        store.migrate("jobs", MIGRATIONS)
        self.store, self.limits, self.lease_s = store, limits, lease_s

    def submit(self, owner: str, items: list[NewItem], options: dict) -> str:
        """Queue `items` as one job of `owner` (a caller's principal), within the limits."""
        if not items:
            raise LimitExceeded("a job needs at least one image", code="job_empty")
        self.limits.check_images(len(items))
        self.limits.check_bytes(sum(len(item.image or b"") for item in items))
        job_id = new_id()
        with self.store.transaction() as tx:
            (queued,) = tx.one("SELECT COUNT(*) FROM jobs WHERE owner = ? AND state = 'queued'", (owner,))
            if queued >= self.limits.max_queued_jobs:
                raise LimitExceeded(f"{queued} of your jobs are unfinished; the limit is {self.limits.max_queued_jobs} "
                                    "queued jobs per caller (an API key, or a client address without keys)",
                                    code="jobs_queued")
            tx.execute("INSERT INTO jobs (id, owner, state, options, total, created_at) VALUES (?, ?, 'queued', ?, ?, ?)",
                       (job_id, owner, json.dumps(options), len(items), utc_now()))
            tx.executemany("INSERT INTO jobs_items (job_id, position, name, image, url, state, attempts) "
                           "VALUES (?, ?, ?, ?, ?, 'queued', 0)",
                           [(job_id, i, item.name, item.image, item.url) for i, item in enumerate(items)])
        return job_id

    def claim(self, worker: str, count: int = 1) -> list[WorkItem]:
        """Up to `count` items to work on, oldest job first: queued ones, or running ones whose worker's lease ran
        out (it died); each leased to `worker` for `lease_s`. An item abandoned MAX_ATTEMPTS times is failed."""
        now = time.time()
        lock = " FOR UPDATE OF i SKIP LOCKED" if self.store.dialect == "postgresql" else ""
        with self.store.transaction() as tx:
            for job_id, position, attempts in tx.all(
                    "SELECT job_id, position, attempts FROM jobs_items WHERE state = 'running' AND lease_until < ? "
                    f"AND attempts >= ?{lock.replace(' OF i', '')}", (now, MAX_ATTEMPTS)):
                self._finish(tx, job_id, position, None, "failed", None, {
                    "error": "worker_died", "message": f"the service stopped {attempts} times while analysing "
                                                       "this image; it is not tried again"})
            rows = tx.all("SELECT i.job_id, i.position, i.name, i.image, i.url, j.options, j.owner "
                          "FROM jobs_items i JOIN jobs j ON j.id = i.job_id "
                          "WHERE i.state = 'queued' OR (i.state = 'running' AND i.lease_until < ?) "
                          f"ORDER BY i.job_id, i.position LIMIT ?{lock}", (now, count))
            claimed = []
            for job_id, position, name, image, url, options, owner in rows:
                tx.execute("UPDATE jobs_items SET state = 'running', lease_owner = ?, lease_until = ?, "
                           "attempts = attempts + 1 WHERE job_id = ? AND position = ?",
                           (worker, now + self.lease_s, job_id, position))
                claimed.append(WorkItem(job_id, position, name, bytes(image) if image is not None else None, url,
                                        json.loads(options), owner))
        return claimed

    def renew(self, worker: str, item: WorkItem) -> bool:
        """Extend `worker`'s lease on an item it is still analysing by another `lease_s`, so that a slow image is
        not taken by another process meanwhile; False when it no longer holds it."""
        with self.store.transaction() as tx:
            return tx.execute("UPDATE jobs_items SET lease_until = ? WHERE job_id = ? AND position = ? "
                              "AND lease_owner = ? AND state = 'running'",
                              (time.time() + self.lease_s, item.job_id, item.position, worker)).rowcount == 1

    def complete(self, worker: str, item: WorkItem, result: dict | None = None, error: dict | None = None) -> bool:
        """Record an item's analysis or error; False when `worker` no longer holds it (its lease ran out and
        another worker took it, or the job was cancelled): then nothing is written, so nothing is duplicated."""
        with self.store.transaction() as tx:
            return self._finish(tx, item.job_id, item.position, worker, "failed" if error else "done", result, error)

    def _finish(self, tx, job_id: str, position: int, worker: str | None, state: str, result, error) -> bool:
        held = " AND lease_owner = ? AND state = 'running'" if worker else ""
        cursor = tx.execute(f"UPDATE jobs_items SET state = ?, result = ?, error = ?, image = NULL, lease_owner = NULL "
                            f"WHERE job_id = ? AND position = ?{held}",
                            (state, json.dumps(result) if result is not None else None,
                             json.dumps(error) if error is not None else None, job_id, position,
                             *([worker] if worker else [])))
        if cursor.rowcount != 1:
            return False
        (left,) = tx.one("SELECT COUNT(*) FROM jobs_items WHERE job_id = ? AND state IN ('queued', 'running')",
                         (job_id,))
        if not left:
            tx.execute("UPDATE jobs SET state = 'done', finished_at = ? WHERE id = ? AND state = 'queued'",
                       (utc_now(), job_id))
        return True

    def cancel(self, job_id: str, owner: str | None = None) -> Job:
        """Stop a job: its items not finished yet are cancelled (one being analysed now is not written)."""
        with self.store.transaction() as tx:
            self._require(tx, job_id, owner)
            tx.execute("UPDATE jobs_items SET state = 'cancelled', image = NULL, lease_owner = NULL "
                       "WHERE job_id = ? AND state IN ('queued', 'running')", (job_id,))
            tx.execute("UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE id = ? AND state = 'queued'",
                       (utc_now(), job_id))
        return self.status(job_id)

    def status(self, job_id: str, owner: str | None = None) -> Job:
        with self.store.read() as tx:
            state, total, created, finished = self._require(tx, job_id, owner)
            counts = dict(tx.all("SELECT state, COUNT(*) FROM jobs_items WHERE job_id = ? GROUP BY state", (job_id,)))
        return Job(id=job_id, state=state, total=total, done=counts.get("done", 0), failed=counts.get("failed", 0),
                   cancelled=counts.get("cancelled", 0), created_at=created, finished_at=finished)

    def results(self, job_id: str, owner: str | None = None) -> Iterator[dict]:
        """One record per finished item, in submission order: its name and its analysis or its error."""
        with self.store.read() as tx:
            self._require(tx, job_id, owner)
            finished = ", ".join("?" * len(FINISHED_ITEM_STATES))
            rows = tx.all("SELECT position, name, state, result, error FROM jobs_items "
                          f"WHERE job_id = ? AND state IN ({finished}) ORDER BY position",
                          (job_id, *FINISHED_ITEM_STATES))
        for position, name, state, result, error in rows:
            record = {"index": position, "name": name, "state": state}
            if result is not None:
                record["analysis"] = json.loads(result)
            if error is not None:
                record["error"] = json.loads(error)
            yield record

    @staticmethod
    def _require(tx, job_id: str, owner: str | None) -> tuple:
        """The job's state, total and times; unknown when `owner` (None: anyone) did not submit it. Another
        owner's job is as unknown as a missing one: its id tells nothing about it."""
        owned = "" if owner is None else " AND owner = ?"
        row = tx.one(f"SELECT state, total, created_at, finished_at FROM jobs WHERE id = ?{owned}",
                     (job_id, *(() if owner is None else (owner,))))
        if row is None:
            raise NotFound(f"no job has the id {job_id!r}", code="unknown_job")
        return row
