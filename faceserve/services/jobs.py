"""Asynchronous jobs: the queue in the store, and this process's worker analysing its images as `analyze` does."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from faceserve.errors import InvalidRequest
from faceserve.http import inputs
from faceserve.http.caller import ADMIN, Caller
from faceserve.jobs import Job, WorkItem, intake
from faceserve.jobs.worker import JobWorker
from faceserve.services.analysis import AnalysisService
from faceserve.services.images import ImageService
from faceserve.services.resources import Resources


class JobService:
    def __init__(self, resources: Resources, images: ImageService, analysis: AnalysisService):
        self.resources, self.images, self.analysis = resources, images, analysis
        self.worker = JobWorker(resources.jobs, self.analyze_item, concurrency=resources.settings.job_concurrency)

    async def submit(self, caller: Caller, uploads: list[Path] | None, archive: Path | None,
                     urls: list[str] | None, detector: str | None = None, identify: bool = False) -> Job:
        """A job of the images given one way (uploads, a zip file or URLs), queued at once; nothing is analysed yet."""
        given = [name for name, value in (("images", uploads), ("archive", archive), ("image_urls", urls)) if value]
        if len(given) != 1:
            raise InvalidRequest("send the images one way: `images` (uploads), `archive` (a zip file) or "
                                 f"`image_urls` (JSON); got {', '.join(given) or 'none'}", code="missing_image"
                                 if not given else "ambiguous_image")
        limits = self.resources.settings.jobs
        if identify:
            self.resources.pipeline.require_embedding()
        if urls:
            fetch = inputs.require_fetch(self.images.fetch)
            limits.check_images(len(urls))
            for url in urls:
                fetch.check(url)
            items = intake.from_urls(urls)
        elif archive is not None:
            items = await asyncio.to_thread(intake.from_zip, archive, limits)
        else:
            limits.check_images(len(uploads))
            items = await asyncio.to_thread(intake.from_uploads, uploads)
        queue = await self.resources.jobs()
        # The job is its caller's principal's: they alone follow, read and cancel it, and the queued-jobs limit
        # counts it for them (an API key's id, or the client's address without keys).
        job_id = await asyncio.to_thread(queue.submit, caller.principal, items,
                                         {"detector": detector, "identify": identify})
        self.worker.wake()
        return await self.status(caller, job_id)

    # A job is its submitter's: to another caller it is a 404 like a missing one; an admin sees every job.

    @staticmethod
    def _seen_by(caller: Caller) -> str | None:
        """The owner whose jobs `caller` may see (None: every owner's)."""
        return None if ADMIN in caller.scopes else caller.principal

    async def status(self, caller: Caller, job_id: str) -> Job:
        return await asyncio.to_thread((await self.resources.jobs()).status, job_id, self._seen_by(caller))

    async def cancel(self, caller: Caller, job_id: str) -> Job:
        return await asyncio.to_thread((await self.resources.jobs()).cancel, job_id, self._seen_by(caller))

    async def results(self, caller: Caller, job_id: str) -> bytes:
        """JSON Lines: one line per finished image, in submission order."""
        queue, owner = await self.resources.jobs(), self._seen_by(caller)
        return await asyncio.to_thread(
            lambda: b"".join(json.dumps(line).encode() + b"\n" for line in queue.results(job_id, owner)))

    async def analyze_item(self, item: WorkItem) -> dict:
        """One image of a job, as `analyze` answers it (remembered for feedback like any answer, as the job's
        submitter's, and written before its result is: a finished image's answer can be corrected)."""
        await self.resources.start()
        data = item.image if item.image is not None else await self.images.read(url=item.url)
        analysis = await self.analysis.analyze_decoded(item.owner, await self.images.decode(data), data,
                                                       item.options.get("detector"),
                                                       bool(item.options.get("identify")), written=True)
        return analysis.model_dump(mode="json")
