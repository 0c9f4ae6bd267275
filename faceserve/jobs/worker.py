"""The background worker of one service process: claims a job's images under the queue's lease, analyses them, and
writes each result through the queue (written only while this worker still holds the image)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import Awaitable, Callable

from faceserve.errors import FaceserveError, StoreUnavailable
from faceserve.jobs.queue import JobQueue, WorkItem

log = logging.getLogger(__name__)

Analyze = Callable[[WorkItem], Awaitable[dict]]


class JobWorker:
    """`concurrency` images at a time at most, so that live requests keep most of the process. Idle, it asks the
    queue every `idle_s` (work may come from any process), or at once when `wake` is called after a submission
    here."""

    def __init__(self, open_queue: Callable[[], Awaitable[JobQueue]], analyze: Analyze, concurrency: int = 1,
                 idle_s: float = 0.5, stop_wait_s: float = 10.0):
        self.open_queue, self.analyze, self.concurrency = open_queue, analyze, concurrency
        self.idle_s, self.stop_wait_s = idle_s, stop_wait_s
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # the lease holder's name
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None and self.concurrency > 0:
            self._task = asyncio.create_task(self._run(), name=f"job-worker {self.name}")
            log.info("job worker %s: %d image(s) at a time", self.name, self.concurrency)

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Let the images in hand finish (their results are written), for at most `stop_wait_s`; an image cut
        short stays leased and is claimed again, by any process, once the lease runs out."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.stop_wait_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                queue = await self.open_queue()
                items = await asyncio.to_thread(queue.claim, self.name, self.concurrency)
            except StoreUnavailable as exc:
                log.warning("job worker: the store cannot be reached (%s); trying again", exc.message)
                items = []
            except Exception:  # the worker must outlive anything one claim can raise
                log.exception("job worker: claiming failed; trying again")
                items = []
            if not items:
                await self._idle()
                continue
            await asyncio.gather(*(self._work(queue, item) for item in items))

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.idle_s)
        self._wake.clear()

    async def _hold(self, queue: JobQueue, item: WorkItem) -> None:
        """Renew the item's lease every third of it while its analysis lasts, so that no other process takes a
        slow image meanwhile; a renewal that fails is only logged (the lease then runs out as for a dead worker)."""
        while True:
            await asyncio.sleep(queue.lease_s / 3)
            try:
                if not await asyncio.to_thread(queue.renew, self.name, item):
                    return  # cancelled, or already taken: complete() will find out
            except StoreUnavailable as exc:
                log.warning("job %s image %d: lease not renewed (%s)", item.job_id, item.position, exc.message)

    async def _work(self, queue: JobQueue, item: WorkItem) -> None:
        result = error = None
        holding = asyncio.create_task(self._hold(queue, item))
        try:
            result = await self.analyze(item)
        except FaceserveError as exc:
            error = exc.body()
        except Exception as exc:
            log.exception("job %s image %d (%s) failed", item.job_id, item.position, item.name)
            error = {"error": "internal_error", "message": f"analysing this image failed: {type(exc).__name__}"}
        finally:
            holding.cancel()
        try:
            if not await asyncio.to_thread(queue.complete, self.name, item, result, error):
                log.info("job %s image %d: no longer ours (cancelled, or taken after the lease ran out)",
                         item.job_id, item.position)
        except StoreUnavailable as exc:
            log.warning("job %s image %d: result not written (%s); it is analysed again after the lease",
                        item.job_id, item.position, exc.message)
