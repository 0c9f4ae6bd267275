"""Everything a running service holds: settings, repository, backend, pipeline, and (opened at its first use,
once per process) the store behind the gallery, feedback and the job queue, and the job worker.

Shared by `service.py` and the CLI so both answer identically.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import io
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from faceserve.backends import create
from faceserve.errors import InvalidRequest, LimitExceeded, NotFound, StoreUnavailable
from faceserve.feedback import Answer, Feedback, FieldModel
from faceserve.gallery import records
from faceserve.jobs import JobQueue, WorkItem, intake
from faceserve.jobs.worker import JobWorker
from faceserve.http import inputs
from faceserve.http.caller import ADMIN, Caller
from faceserve.models.repository import Repository
from faceserve.pipeline import imaging
from faceserve.pipeline.annotate import annotate
from faceserve.pipeline.identity import IdentityStage
from faceserve.pipeline.pipeline import Pipeline
from faceserve.pipeline.policy import DeclinePolicy
from faceserve.pipeline.schemas import (Analysis, AuditEntry, AuditPage, BatchAnalysis, Box, Classification, Deleted,
                                        FaceRecord, FacesAdded, FeedbackRecord, FeedbackSummary, GalleryImport,
                                        Identification, Identity, IdentityDetail, IdentitySummary, Job, IdentityPage,
                                        ModelsInfo, Verification)
from faceserve.settings import Settings
from faceserve.store import Store, open_store

ImageItem = tuple[Path | None, str | None]  # an upload or a base64 string

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self.repository = Repository.load(self.settings.repository)
        backend = create(self.settings.backend, self.repository.path, threads=self.settings.ort_threads,
                         timeout_s=self.settings.backend_timeout_s, batch_delay_us=self.settings.batch_delay_us)
        self.pipeline = Pipeline(self.repository, backend, max_faces=self.settings.limits.max_faces)
        self.fetch = None  # the `image_url` hook; None answers `url_fetch_disabled`
        if self.settings.url_fetch:
            from faceserve.http.urlfetch import UrlFetcher
            limits = self.settings.limits
            self.fetch = UrlFetcher(allowlist=self.settings.url_allowlist, max_bytes=limits.url_max_bytes,
                                    timeout_s=limits.url_timeout_s, max_redirects=limits.url_max_redirects)
        self.decline: DeclinePolicy | None = None
        self._decline_model: str | None = None
        if self.settings.decline_labels:
            self.decline = DeclinePolicy(self.settings.decline_labels, self.settings.decline_threshold)
            self._decline_model = self.decline.model(
                {name: spec.labels for name, spec in self.repository.classifiers.items()})
        self._started = False
        self._lock = asyncio.Lock()
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._identity: IdentityStage | None = None
        self._identity_lock = asyncio.Lock()
        self._feedback: Feedback | None = None
        self._feedback_lock = asyncio.Lock()
        self._jobs: JobQueue | None = None
        self._jobs_lock = asyncio.Lock()
        self.job_worker = JobWorker(self.jobs, self._analyze_job_item, concurrency=self.settings.job_concurrency)
        log.info("model repository: %s", self.repository.path)
        if self.repository.missing:
            log.warning("models declared but not built (heads answered as missing): %s",
                        ", ".join(self.repository.missing))

    async def start(self) -> None:
        if self._started:
            return
        async with self._lock:
            if not self._started:
                await self.pipeline.start()
                self._started = True

    async def ready(self) -> bool:
        await self.start()
        states = await self.pipeline.backend.ready()
        return bool(states) and all(states.values())

    # ---- what each endpoint does (the service and the CLI only call these) ----

    async def analyze(self, caller: Caller, upload: Path | None = None, b64: str | None = None,
                      url: str | None = None, detector: str | None = None, identify: bool = False,
                      keep_image: bool = False) -> Analysis:
        """One image's faces, remembered as `caller`'s under the answer's `request_id` (the image's bytes too
        with `keep_image`)."""
        pixels, data = await self.image_and_bytes(upload, b64, url)
        return await self._analyze_decoded(caller.principal, pixels, data, detector, identify, keep_image)

    async def _analyze_decoded(self, owner: str, pixels: np.ndarray, data: bytes, detector: str | None,
                               identify: bool, keep_image: bool = False) -> Analysis:
        if not identify:
            analysis = await self.analyze_image(pixels, detector)
        else:
            analysis = await (await self.identity()).analyze(pixels, detector)
        return await self._remember_analysis(owner, analysis, hashlib.sha256(data).hexdigest(), identify,
                                             data if keep_image else None)

    async def analyze_image(self, pixels: np.ndarray, detector: str | None = None) -> Analysis:
        return await self.pipeline.analyze(pixels, detector)

    async def analyze_batch(self, caller: Caller, uploads: list[Path] | None, b64s: list[str] | None,
                            detector: str | None = None) -> BatchAnalysis:
        """`analyze` for several images; every image is checked before any is decoded, all their faces
        share model calls."""
        images = await self.images_with_digests(
            self._image_items(uploads, b64s, range(1, self.settings.limits.max_batch_images + 1)))
        analyses = await asyncio.gather(*(self.pipeline.analyze(pixels, detector) for pixels, _ in images))
        return BatchAnalysis(results=[await self._remember_analysis(caller.principal, analysis, digest,
                                                                    identified=False)
                                      for analysis, (_, digest) in zip(analyses, images)])

    async def annotate(self, upload: Path | None = None, b64: str | None = None, url: str | None = None,
                       detector: str | None = None, fmt: str = "png", landmarks: bool = False) -> bytes:
        """The photo with each face boxed and captioned (and its landmarks dotted), encoded as `fmt`; an image
        the decline policy names is a 422 `image_declined`."""
        pixels = await self.image(upload, b64, url)
        if self.decline is not None:
            labels = self.repository.classifiers[self._decline_model].labels
            self.decline.check(await self.pipeline.classify(pixels, self._decline_model, len(labels)))
        analysis = await self.pipeline.analyze(pixels, detector)
        return await asyncio.to_thread(lambda: imaging.encode(annotate(pixels, analysis, landmarks), fmt))

    async def classify(self, caller: Caller, upload: Path | None = None, b64: str | None = None,
                       url: str | None = None, model: str | None = None, top_k: int = 5) -> Classification:
        self.pipeline.check_top_k(top_k, self.settings.limits.max_top_k)
        pixels, data = await self.image_and_bytes(upload, b64, url)
        answer = await self.pipeline.classify(pixels, model, top_k)
        spec = self.repository.classifiers[answer.model]
        answer.request_id = await self._remember(caller.principal, Answer(
            hashlib.sha256(data).hexdigest(), {"label": FieldModel(f"{spec.name}:{spec.version}", spec.labels)},
            [{"label": answer.top_k[0].label}], per_face=False))
        return answer

    async def rotate(self, upload: Path | None = None, b64: str | None = None, url: str | None = None,
                     degrees: int = 90, fmt: str = "png") -> bytes:
        imaging.check_rotation(degrees)  # before the image is decoded
        pixels = await self.image(upload, b64, url)
        return await asyncio.to_thread(lambda: imaging.encode(imaging.rotate(pixels, degrees), fmt))

    # ---- images in ----

    async def image(self, upload: Path | None = None, b64: str | None = None, url: str | None = None) -> np.ndarray:
        return (await self.image_and_bytes(upload, b64, url))[0]

    async def image_and_bytes(self, upload: Path | None = None, b64: str | None = None,
                              url: str | None = None) -> tuple[np.ndarray, bytes]:
        await self.start()
        data = await inputs.image_bytes(upload, b64, url, self.settings.limits, self.fetch)
        return await self._decoded(data), data

    async def _decoded(self, data: bytes) -> np.ndarray:
        return await asyncio.to_thread(imaging.decode, data, self.settings.limits.decode)

    async def images(self, items: list[ImageItem]) -> list[np.ndarray]:
        """The (upload, base64) images of a batch, decoded only once every header is checked and
        their pixels together are within `max_batch_pixels`."""
        return [pixels for pixels, _ in await self.images_with_digests(items)]

    async def images_with_digests(self, items: list[ImageItem]) -> list[tuple[np.ndarray, str]]:
        """`images`, each with the sha256 of its bytes."""
        await self.start()
        limits = self.settings.limits
        blobs = [await inputs.image_bytes(upload, b64, None, limits, self.fetch) for upload, b64 in items]
        sizes = await asyncio.to_thread(lambda: [imaging.probe(data, limits.decode) for data in blobs])
        _check_batch_pixels([width * height for width, height in sizes], limits.max_batch_pixels)
        images = []
        for data in blobs:
            images.append(await asyncio.to_thread(imaging.decode, data, limits.decode))
            _check_batch_pixels([image.shape[0] * image.shape[1] for image in images], limits.max_batch_pixels)
        return [(image, hashlib.sha256(data).hexdigest()) for image, data in zip(images, blobs)]

    def _image_items(self, uploads: list[Path] | None, b64s: list[str] | None, count: range) -> list[ImageItem]:
        items = [(upload, None) for upload in uploads or []] + [(None, b64) for b64 in b64s or []]
        if len(items) not in count:
            wanted = f"{count.start}" if len(count) == 1 else f"between {count.start} and {count.stop - 1}"
            raise LimitExceeded(f"send {wanted} images; got {len(items)}", code="batch_size")
        return items

    # ---- identity: the gallery, verify, identify ----

    async def identity(self) -> IdentityStage:
        """The identity stage over this process's gallery, opened at the first call (the store's schema is
        migrated then); a store that cannot be reached is a 503 and the next call tries again."""
        if self._identity is None:
            await self.start()
            self.pipeline.require_embedding()
            async with self._identity_lock:
                if self._identity is None:
                    self._identity = await asyncio.to_thread(self._open_identity_stage)
        return self._identity

    def _shared_store(self) -> Store:
        """This process's store, opened by its first user (the gallery or feedback)."""
        with self._store_lock:
            if self._store is None:
                self._store = open_store(self.settings.store)
            return self._store

    def _open_identity_stage(self) -> IdentityStage:
        return IdentityStage.open(self.pipeline, self._shared_store(), self.settings.identity_threshold)

    async def _gallery(self, method: str, *args: Any, **kwargs: Any):
        """A gallery call in a worker thread (every Gallery method is synchronous and thread-safe)."""
        stage = await self.identity()
        return await asyncio.to_thread(functools.partial(getattr(stage.gallery, method), *args, **kwargs))

    # Every change takes the caller (the service: the request's; the CLI: LOCAL) for the gallery's audit trail.

    async def create_identity(self, caller: Caller, name: str, metadata: dict | None = None) -> IdentityDetail:
        return _identity_detail(await self._gallery("create_identity", name, metadata, caller=caller))

    async def add_faces(self, caller: Caller, identity_id: str, uploads: list[Path] | None, b64s: list[str] | None,
                        boxes: list[Box | None] | None = None, thumbnails: bool = False) -> FacesAdded:
        """One face from each image (its only face, or the one at its box), added in one transaction."""
        items = self._image_items(uploads, b64s, range(1, self.settings.limits.max_batch_images + 1))
        if boxes is not None and len(boxes) != len(items):
            raise InvalidRequest(f"{len(boxes)} boxes for {len(items)} images: give one box (or null) per image, "
                                 "in the order of the images", code="boxes_mismatch")
        stage = await self.identity()
        await self._gallery("get_identity", identity_id)  # a missing identity is a 404 before any model runs
        images = await self.images_with_digests(items)
        faces = await asyncio.gather(*(
            stage.enrolment(pixels, digest, None if boxes is None or boxes[i] is None else _corners(boxes[i]),
                            f"image {i + 1}", thumbnails)
            for i, (pixels, digest) in enumerate(images)))
        added = await self._gallery("add_faces", identity_id, faces, caller=caller)
        return FacesAdded(identity_id=identity_id, faces=[_face_record(face) for face in added])

    async def list_identities(self, limit: int = 100, after: str | None = None) -> IdentityPage:
        page = await self._gallery("list_identities", limit, after)
        return IdentityPage(identities=[IdentitySummary(**dataclasses.asdict(i)) for i in page.identities],
                            next_after=page.next_after, total=page.total)

    async def get_identity(self, identity_id: str) -> IdentityDetail:
        return _identity_detail(await self._gallery("get_identity", identity_id))

    async def face_thumbnail(self, face_id: str) -> bytes:
        thumbnail = await self._gallery("thumbnail", face_id)
        if thumbnail is None:
            raise NotFound(f"face {face_id!r} was enrolled without a thumbnail", code="no_thumbnail")
        return thumbnail

    async def delete_face(self, caller: Caller, face_id: str) -> Deleted:
        await self._gallery("delete_face", face_id, caller=caller)
        return Deleted(id=face_id, faces_deleted=1)

    async def delete_identity(self, caller: Caller, identity_id: str) -> Deleted:
        return Deleted(id=identity_id, faces_deleted=await self._gallery("delete_identity", identity_id,
                                                                         caller=caller))

    async def verify(self, uploads: list[Path] | None, b64s: list[str] | None) -> Verification:
        stage = await self.identity()
        first, second = await self.images(self._image_items(uploads, b64s, range(2, 3)))
        return await stage.verify(first, second)

    async def identify(self, upload: Path | None = None, b64: str | None = None, url: str | None = None,
                       detector: str | None = None, top_k: int = 5) -> Identification:
        self.pipeline.check_top_k(top_k, self.settings.limits.max_top_k)
        stage = await self.identity()
        return await stage.identify(await self.image(upload, b64, url), detector, top_k)

    async def export_gallery(self) -> bytes:
        """The gallery as the export file (JSON Lines, docs/store.md), one consistent snapshot."""
        buffer = io.BytesIO()
        await self._gallery("export_file", buffer)
        return buffer.getvalue()

    async def import_gallery(self, caller: Caller, upload: Path | None) -> GalleryImport:
        if upload is None:
            raise InvalidRequest("send the exported gallery file as `file`", code="no_file")
        counts = await self._gallery("import_file", Path(upload), caller=caller)
        return GalleryImport(**dataclasses.asdict(counts))

    async def gallery_audit(self, limit: int = 100, after: str | None = None) -> AuditPage:
        page = await self._gallery("audit", limit, after)
        return AuditPage(entries=[AuditEntry(**dataclasses.asdict(entry), identities=len(entry.identity_ids),
                                             faces=len(entry.face_ids)) for entry in page.entries],
                         next_after=page.next_after)

    # ---- feedback: answers remembered, corrections of them ----

    async def feedback(self) -> Feedback:
        if self._feedback is None:
            async with self._feedback_lock:
                if self._feedback is None:
                    self._feedback = await asyncio.to_thread(
                        lambda: Feedback(self._shared_store(), self.settings.answers_kept_days))
        return self._feedback

    async def _remember(self, owner: str, answer: Answer) -> str | None:
        """The request id the answer is remembered under, as `owner`'s (a principal: only they may correct it);
        None when the store cannot be reached (the answer is still worth giving, only its feedback is lost)."""
        try:
            feedback = await self.feedback()
            return await asyncio.to_thread(feedback.remember, owner, answer)
        except StoreUnavailable as exc:
            log.warning("answer not remembered for feedback: %s", exc.message)
            return None

    async def _remember_analysis(self, owner: str, analysis: Analysis, digest: str, identified: bool,
                                 image: bytes | None = None) -> Analysis:
        fields = {head.field: FieldModel(f"{head.spec.name}:{head.spec.version}", head.spec.labels or None)
                  for head in self.pipeline.heads}
        if identified:
            fields["identity"] = FieldModel(analysis.models[self.pipeline.embedding.spec.task])
        answers = [{field: _said(getattr(face, field, None)) for field in fields} for face in analysis.faces]
        analysis.request_id = await self._remember(owner, Answer(digest, fields, answers, image=image))
        return analysis

    async def correct(self, caller: Caller, request_id: str, face_index: int | None, field: str, correct: str,
                      model_said: str | None = None, comment: str | None = None) -> FeedbackRecord:
        """`caller`'s correction of an answer they were given (another caller's answer is a 404 `unknown_request`,
        whatever their scopes)."""
        feedback = await self.feedback()
        stored = await asyncio.to_thread(feedback.correct, caller.principal, request_id, face_index, field, correct,
                                         model_said, comment)
        return FeedbackRecord(id=stored.id, request_id=stored.request_id, face_index=stored.face_index,
                              field=stored.field, model_said=stored.model_said, correct=stored.correct,
                              comment=stored.comment, model=f"{stored.model_name}:{stored.model_version}",
                              image_sha256=stored.image_sha256, created_at=stored.created_at)

    async def export_feedback(self) -> str:
        return await asyncio.to_thread((await self.feedback()).export_csv)

    async def feedback_summary(self) -> FeedbackSummary:
        summary = await asyncio.to_thread((await self.feedback()).summary)
        return FeedbackSummary.model_validate(dataclasses.asdict(summary))

    # ---- asynchronous jobs: the queue in the store, this process's worker ----

    async def jobs(self) -> JobQueue:
        if self._jobs is None:
            async with self._jobs_lock:
                if self._jobs is None:
                    self._jobs = await asyncio.to_thread(lambda: JobQueue(
                        self._shared_store(), self.settings.jobs, lease_s=self.settings.job_lease_s))
        return self._jobs

    async def submit_job(self, caller: Caller, uploads: list[Path] | None, archive: Path | None,
                         urls: list[str] | None, detector: str | None = None, identify: bool = False) -> Job:
        """A job of the images given one way (uploads, a zip file or URLs), queued at once; nothing is analysed yet."""
        given = [name for name, value in (("images", uploads), ("archive", archive), ("image_urls", urls)) if value]
        if len(given) != 1:
            raise InvalidRequest("send the images one way: `images` (uploads), `archive` (a zip file) or "
                                 f"`image_urls` (JSON); got {', '.join(given) or 'none'}", code="missing_image"
                                 if not given else "ambiguous_image")
        if identify:
            self.pipeline.require_embedding()
        if urls:
            fetch = inputs.require_fetch(self.fetch)
            self.settings.jobs.check_images(len(urls))
            for url in urls:
                fetch.check(url)
            items = intake.from_urls(urls)
        elif archive is not None:
            items = await asyncio.to_thread(intake.from_zip, archive, self.settings.jobs)
        else:
            self.settings.jobs.check_images(len(uploads))
            items = await asyncio.to_thread(intake.from_uploads, uploads)
        queue = await self.jobs()
        # The job is its caller's principal's: they alone follow, read and cancel it, and the queued-jobs limit
        # counts it for them (an API key's id, or the client's address without keys).
        job_id = await asyncio.to_thread(queue.submit, caller.principal, items,
                                         {"detector": detector, "identify": identify})
        self.job_worker.wake()
        return await self.job_status(caller, job_id)

    # A job is its submitter's: to another caller it is a 404 like a missing one; an admin sees every job.

    @staticmethod
    def _jobs_seen_by(caller: Caller) -> str | None:
        """The owner whose jobs `caller` may see (None: every owner's)."""
        return None if ADMIN in caller.scopes else caller.principal

    async def job_status(self, caller: Caller, job_id: str) -> Job:
        status = await asyncio.to_thread((await self.jobs()).status, job_id, self._jobs_seen_by(caller))
        return Job.model_validate(dataclasses.asdict(status))

    async def cancel_job(self, caller: Caller, job_id: str) -> Job:
        status = await asyncio.to_thread((await self.jobs()).cancel, job_id, self._jobs_seen_by(caller))
        return Job.model_validate(dataclasses.asdict(status))

    async def job_results(self, caller: Caller, job_id: str) -> bytes:
        """JSON Lines: one line per finished image, in submission order."""
        queue, owner = await self.jobs(), self._jobs_seen_by(caller)
        return await asyncio.to_thread(
            lambda: b"".join(json.dumps(line).encode() + b"\n" for line in queue.results(job_id, owner)))

    async def _analyze_job_item(self, item: WorkItem) -> dict:
        """One image of a job, as `analyze` answers it (remembered for feedback like any answer, as the job's
        submitter's)."""
        await self.start()
        data = item.image if item.image is not None else await inputs.image_bytes(
            None, None, item.url, self.settings.limits, self.fetch)
        analysis = await self._analyze_decoded(item.owner, await self._decoded(data), data,
                                               item.options.get("detector"), bool(item.options.get("identify")))
        return analysis.model_dump(mode="json")

    def models(self) -> ModelsInfo:
        backend = self.pipeline.backend
        return ModelsInfo(
            backend=f"triton-{backend.protocol}" if backend.kind == "triton" else backend.kind,
            repository=self.repository.path.name,  # the full path is logged at start-up, not served
            models=[spec.describe() for spec in self.repository.specs.values()],
            missing=self.repository.missing,
            detectors=self.pipeline.detectors,
            default_detector=self.pipeline.default_detector,
        )

    async def close(self) -> None:
        await self.job_worker.stop()
        await self.pipeline.backend.close()
        if self._store is not None:
            self._store.close()


def _said(value: Any) -> str | None:
    """What a model said for a field, as text: a label, a number, an identity's name ("unknown": nobody known)."""
    if value is None:
        return "unknown"
    if hasattr(value, "label"):
        return value.label
    if hasattr(value, "name"):
        return value.name
    if isinstance(value, dict) and "label" in value:  # a head the schema does not type
        return value["label"]
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _check_batch_pixels(pixels: list[int], limit: int) -> None:
    if sum(pixels) > limit:
        raise LimitExceeded(f"the {len(pixels)} images hold {sum(pixels)} pixels together; the limit is {limit} "
                            "pixels per request", code="batch_too_large")


def _corners(box: Box) -> tuple[float, float, float, float]:
    return box.x1, box.y1, box.x2, box.y2


def _identity(identity: records.Identity) -> Identity:
    return Identity(id=identity.id, name=identity.name, metadata=identity.metadata, created_at=identity.created_at,
                    face_count=identity.face_count)


def _face_record(face: records.FaceRecord) -> FaceRecord:
    x1, y1, x2, y2 = face.box
    return FaceRecord(id=face.id, identity_id=face.identity_id, box=Box(x1=x1, y1=y1, x2=x2, y2=y2),
                      image_sha256=face.image_sha256, model=f"{face.model_name}:{face.model_version}",
                      has_thumbnail=face.has_thumbnail, created_at=face.created_at)


def _identity_detail(identity: records.IdentityDetail) -> IdentityDetail:
    return IdentityDetail(**_identity(identity).model_dump(), faces=[_face_record(face) for face in identity.faces])
