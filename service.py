"""faceserve: faces found, then emotion, gender and age for each, and who they are; served with BentoML.

    bentoml serve service:FaceAnalysis          # embedded onnxruntime backend
    FACESERVE_BACKEND=grpc://127.0.0.1:8001 bentoml serve service:FaceAnalysis   # Triton

Only wiring lives here; every step is in the `faceserve` package. The module is longer than the package's ~300
lines because it is the one place that declares the routes (about 30): each is a typed signature, its limits
and one call into a service of `faceserve.services`; splitting them across files would scatter the API's
surface without shortening any route.

The identity endpoints are `@bentoml.api` routes with ids in the JSON body (`/identities/get`,
`/identities/delete`, ...) rather than REST paths on a mounted ASGI app: BentoML's new-style APIs take no
path parameters, and a mounted app would lose what every other endpoint has here — typed request and
response models in the OpenAPI schema (BentoML merges only FastAPI apps' routes, and FastAPI is no
dependency of ours), BentoML's multipart parsing of uploads under the upload guard, `json_errors` and
the request limits. API keys, the error shape and the concurrency limit are ASGI middlewares and would
apply either way.

Asynchronous jobs (`/jobs/...`, docs/jobs.md) are plain `@bentoml.api` routes over the job queue in the store,
worked by one background worker per process, rather than BentoML's `@bentoml.task`: a task's state lives in
BentoML's own per-machine SQLite file and its work in the process that took the request, so neither survives a
restart on another replica nor is shared by processes; ours lives in the store beside the gallery.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import bentoml
from bentoml.validators import ContentType
from starlette.responses import Response

from faceserve.http.auth import AccessMiddleware, HostAllowlist
from faceserve.http.caller import caller_of
from faceserve.http.exposure import bound_host, refuse_keyless_exposure
from faceserve.http.framework import bound_metrics_labels, close_framework_downloads
from faceserve.http.headers import SecurityHeadersMiddleware
from faceserve.http.inputs import ImageUpload
from faceserve.http.middleware import ConcurrencyLimitMiddleware, KeepAliveLimitMiddleware
from faceserve.http.responses import ErrorShapeMiddleware, json_errors
from faceserve.http.upload_guard import UploadGuardMiddleware
from faceserve.models import detectors
from faceserve.models.calibration import served_operating_point
from faceserve.models.repository import Repository
from faceserve.feedback import FeedbackRecord, FeedbackSummary
from faceserve.feedback.comparisons import ComparisonReport
from faceserve.gallery import AuditPage, Deleted, FacesAdded, GalleryImport, IdentityDetail, IdentityPage
from faceserve.jobs import Job
from faceserve.pipeline.identity import Identification, Verification
from faceserve.pipeline.schemas import Analysis, BatchAnalysis, Box, Classification
from faceserve.services import Services
from faceserve.services.models import ModelsInfo, ModelsReloaded
from faceserve.settings import JOBS_SUBMIT_ROUTE, Settings
from faceserve.web import app as web_page

ImageFile = ImageUpload  # in memory: BentoML's `Path` costs a temporary file per upload (faceserve/http/inputs.py)
JobImageFile = Annotated[Path, ContentType("image/*")]  # a job's names come from BentoML's temporary files
ImageOut = Annotated[Path, ContentType("image/*")]  # endpoints return the encoded bytes directly
DetectorName = Literal[tuple(d.name for d in detectors.REGISTRY)]  # None: the default (`/models`)
ImageFormat = Literal["png", "jpeg"]
GalleryFile = Annotated[Path, ContentType("application/x-ndjson")]  # the export format, docs/store.md
CsvFile = Annotated[Path, ContentType("text/csv")]
ZipFile = Annotated[Path, ContentType("application/zip")]
ResultsFile = Annotated[Path, ContentType("application/x-ndjson")]  # JSON Lines, one line per image

_settings = Settings.from_env()
BIND_HOST = "127.0.0.1"  # local runs; a container sets BENTOML_HOST=0.0.0.0 (and keys: docs/security.md)
_bound_host = bound_host(BIND_HOST)
refuse_keyless_exposure(_bound_host, bool(_settings.api_keys), _settings.private_deployment)
if _bound_host is not None:  # serving: a FAR target the embedding's calibration cannot show stops the start here
    served_operating_point(Repository.load(_settings.repository, _settings.embedding_model), _settings.identity_far, _settings.identity_threshold)


@bentoml.service(
    name="faceserve",
    traffic={"timeout": 30},  # concurrency: ConcurrencyLimitMiddleware (FACESERVE_MAX_CONCURRENCY), 503 + Retry-After
    resources={"cpu": "2"},
    workers=_settings.workers,
    http={"host": BIND_HOST},
)
class FaceAnalysis:
    def __init__(self) -> None:
        self.services = Services.build(_settings)

    async def __is_ready__(self) -> bool:
        return await self.services.resources.ready()

    @bentoml.on_startup
    async def start_job_worker(self) -> None:
        self.services.jobs.worker.start()

    @bentoml.on_startup
    async def watch_model_repository(self) -> None:
        self.services.models.start_watching()

    @bentoml.on_shutdown
    async def close(self) -> None:
        await self.services.close()

    @bentoml.api
    @json_errors
    async def analyze(self, ctx: bentoml.Context, image: ImageFile = None, image_base64: str | None = None,
                      image_url: str | None = None, detector: DetectorName | None = None,
                      identify: bool = False, keep_image: bool = False) -> Analysis:
        """Faces with box, score, emotion, gender and age; with `identify`, each face's best match in the
        gallery (`identity`, null for nobody known). The answer is remembered under its `request_id` for
        `/feedback` by the same caller (the image's sha256, never the image unless `keep_image`)."""
        return await self.services.analysis.analyze(caller_of(ctx.request.scope), image, image_base64, image_url,
                                                    detector, identify, keep_image)

    @bentoml.api
    @json_errors
    async def analyze_batch(self, ctx: bentoml.Context, images: list[ImageFile] = None,
                            images_base64: list[str] | None = None, detector: DetectorName | None = None,
                            identify: bool = False) -> BatchAnalysis:
        """`analyze` for several images in one request (all their faces share model calls); with `identify`, each
        face's best match in the gallery (`identity`, null for nobody known), as `/analyze` answers it."""
        return await self.services.analysis.analyze_batch(caller_of(ctx.request.scope), images, images_base64,
                                                          detector, identify)

    @bentoml.api
    @json_errors
    async def annotate(self, image: ImageFile = None, image_base64: str | None = None,
                       image_url: str | None = None, detector: DetectorName | None = None,
                       format: ImageFormat = "png", landmarks: bool = False) -> ImageOut:
        """The image with each face boxed and captioned (emotion, gender, age), and its five landmarks
        dotted when `landmarks` is true."""
        drawn = await self.services.analysis.annotate(image, image_base64, image_url, detector, format, landmarks)
        return Response(drawn, media_type=f"image/{format}")

    @bentoml.api
    @json_errors
    async def classify(self, ctx: bentoml.Context, image: ImageFile = None, image_base64: str | None = None,
                       image_url: str | None = None, model: str | None = None, top_k: int = 5) -> Classification:
        """Top-k labels from a whole-image classifier of the repository."""
        return await self.services.analysis.classify(caller_of(ctx.request.scope), image, image_base64, image_url,
                                                     model, top_k)

    @bentoml.api
    @json_errors
    async def rotate(self, image: ImageFile = None, image_base64: str | None = None,
                     image_url: str | None = None, degrees: int = 90, format: ImageFormat = "png") -> ImageOut:
        """The image rotated counter-clockwise by a multiple of 90 degrees."""
        rotated = await self.services.images.rotate(image, image_base64, image_url, degrees, format)
        return Response(rotated, media_type=f"image/{format}")

    # ---- identity ----

    @bentoml.api(route="/identities/create")
    @json_errors
    async def create_identity(self, ctx: bentoml.Context, name: str, metadata: dict | None = None) -> IdentityDetail:
        """A new identity (a name of up to 200 characters and a JSON object of metadata, at most 4096 bytes and 4
        levels deep); add its faces with `/identities/add_faces`."""
        return await self.services.identity.create_identity(caller_of(ctx.request.scope), name, metadata)

    @bentoml.api(route="/identities/add_faces")
    @json_errors
    async def add_faces(self, ctx: bentoml.Context, identity_id: str, images: list[ImageFile] = None,
                        images_base64: list[str] | None = None, boxes: list[Box | None] | None = None,
                        thumbnails: bool = False) -> FacesAdded:
        """Enrol one face from each image: its only face, or the face at its box (`boxes`: one box or null per
        image, in order). A small thumbnail of each face is stored only with `thumbnails`; the photo never is."""
        return await self.services.identity.add_faces(caller_of(ctx.request.scope), identity_id, images,
                                                      images_base64, boxes, thumbnails)

    @bentoml.api(route="/identities")
    @json_errors
    async def list_identities(self, limit: int = 100, after: str | None = None) -> IdentityPage:
        """Identities in creation order, `limit` per page; `after` is the previous page's `next_after`. Each with its
        metadata's keys only (`/identities/get` has the values)."""
        return await self.services.identity.list_identities(limit, after)

    @bentoml.api(route="/identities/get")
    @json_errors
    async def get_identity(self, identity_id: str) -> IdentityDetail:
        """One identity and its enrolled faces (boxes and image hashes, never vectors)."""
        return await self.services.identity.get_identity(identity_id)

    @bentoml.api(route="/identities/face_thumbnail")
    @json_errors
    async def face_thumbnail(self, face_id: str) -> ImageOut:
        """The JPEG thumbnail stored with a face enrolled with `thumbnails`: the face with room around it (its box in
        the thumbnail is the face record's `thumbnail_box`)."""
        return Response(await self.services.identity.face_thumbnail(face_id), media_type="image/jpeg")

    @bentoml.api(route="/identities/delete_face")
    @json_errors
    async def delete_face(self, ctx: bentoml.Context, face_id: str) -> Deleted:
        """Delete one enrolled face (its vector leaves the store and every worker's index)."""
        return await self.services.identity.delete_face(caller_of(ctx.request.scope), face_id)

    @bentoml.api(route="/identities/delete")
    @json_errors
    async def delete_identity(self, ctx: bentoml.Context, identity_id: str) -> Deleted:
        """Delete an identity and every face enrolled for it."""
        return await self.services.identity.delete_identity(caller_of(ctx.request.scope), identity_id)

    @bentoml.api
    @json_errors
    async def verify(self, images: list[ImageFile] = None, images_base64: list[str] | None = None) -> Verification:
        """Whether two images (two uploads, two base64 strings, or one of each) show the same person: the
        largest face of each is compared."""
        return await self.services.identity.verify(images, images_base64)

    @bentoml.api
    @json_errors
    async def identify(self, image: ImageFile = None, image_base64: str | None = None, image_url: str | None = None,
                       detector: DetectorName | None = None, top_k: int = 5) -> Identification:
        """Every face with its box and the top-k enrolled identities at or above the threshold (none: unknown)."""
        return await self.services.identity.identify(image, image_base64, image_url, detector, top_k)

    @bentoml.api(route="/gallery/export")
    @json_errors
    async def export_gallery(self) -> GalleryFile:
        """The whole gallery as one JSON Lines file (embeddings with their model and version)."""
        return Response(await self.services.identity.export_gallery(), media_type="application/x-ndjson",
                        headers={"Content-Disposition": 'attachment; filename="faceserve-gallery.jsonl"'})

    @bentoml.api(route="/gallery/import")
    @json_errors
    async def import_gallery(self, ctx: bentoml.Context, file: GalleryFile = None) -> GalleryImport:
        """Add an exported gallery file, all of it in one transaction or nothing: an identity already here is
        skipped if identical, else refused (409 `identity_exists`: an import never merges); a file of another
        embedding model or version is refused (409 `model_mismatch`); a bad line is a 400 naming it."""
        return await self.services.identity.import_gallery(caller_of(ctx.request.scope), file)

    @bentoml.api(route="/gallery/audit")
    @json_errors
    async def gallery_audit(self, limit: int = 100, after: str | None = None) -> AuditPage:
        """Every change of the gallery (create, add faces, delete, import), oldest first, `limit` per page: when,
        the caller's key id and address, the identities and faces it touched."""
        return await self.services.identity.audit(limit, after)

    # ---- feedback ----

    @bentoml.api(route="/feedback")
    @json_errors
    async def feedback(self, ctx: bentoml.Context, request_id: str, field: str, correct: str,
                       face_index: int | None = None, model_said: str | None = None,
                       comment: str | None = None) -> FeedbackRecord:
        """A correction of an answer: of `field` (emotion, gender, age, identity; `label` for `/classify`) of face
        `face_index` of the answer `request_id`; stored with the model's name and version and the image's sha256.
        Only the caller that got the answer may correct it: to anyone else its id is a 404 `unknown_request`."""
        return await self.services.feedback.correct(caller_of(ctx.request.scope), request_id, face_index, field,
                                                    correct, model_said, comment)

    @bentoml.api(route="/feedback/export")
    @json_errors
    async def export_feedback(self) -> CsvFile:
        """Every correction as CSV, oldest first; every cell quoted, and a cell a spreadsheet would take for a
        formula (starting with `=`, `+`, `-`, `@`, a tab or a line break) prefixed with `'`."""
        return Response(await self.services.feedback.export_csv(), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="faceserve-feedback.csv"'})

    @bentoml.api(route="/feedback/summary")
    @json_errors
    async def feedback_summary(self) -> FeedbackSummary:
        """Per field: how many corrections, and the most frequent confusions."""
        return await self.services.feedback.summary()

    # ---- asynchronous jobs ----

    @bentoml.api(route=JOBS_SUBMIT_ROUTE)
    @json_errors
    async def submit_job(self, ctx: bentoml.Context, images: list[JobImageFile] = None, archive: ZipFile = None,
                         image_urls: list[str] | None = None, detector: DetectorName | None = None,
                         identify: bool = False) -> Job:
        """Queue many images for `analyze` at once, given one way: uploads (`images`), one zip file (`archive`)
        or URLs (`image_urls`, fetched by the server's URL rules). Answers the job at once; follow it with
        `/jobs/status`, read it with `/jobs/results`. Beyond the limits (images or bytes per job, unfinished jobs
        per caller) a 422 naming the limit."""
        return await self.services.jobs.submit(caller_of(ctx.request.scope), images, archive, image_urls, detector,
                                               identify)

    @bentoml.api(route="/jobs/status")
    @json_errors
    async def job_status(self, ctx: bentoml.Context, job_id: str) -> Job:
        """A job's state and progress (images done, failed, cancelled, of the total). Only the caller that submitted
        a job (its API key, or its client address without keys) and an `admin` see it; to anyone else it is a 404
        `unknown_job`."""
        return await self.services.jobs.status(caller_of(ctx.request.scope), job_id)

    @bentoml.api(route="/jobs/results")
    @json_errors
    async def job_results(self, ctx: bentoml.Context, job_id: str) -> ResultsFile:
        """JSON Lines, one line per finished image in submission order: `index`, `name`, `state` and its
        `analysis` (as `/analyze` answers) or its `error` (`error`, `message`)."""
        return Response(await self.services.jobs.results(caller_of(ctx.request.scope), job_id),
                        media_type="application/x-ndjson")

    @bentoml.api(route="/jobs/cancel")
    @json_errors
    async def cancel_job(self, ctx: bentoml.Context, job_id: str) -> Job:
        """Stop a job: its images not yet analysed are cancelled; results already written stay."""
        return await self.services.jobs.cancel(caller_of(ctx.request.scope), job_id)

    @bentoml.api
    async def models(self) -> ModelsInfo:
        """What is loaded: input specs, labels, source artifacts, and what is missing."""
        return self.services.models.info()

    @bentoml.api(route="/models/reload")
    @json_errors
    async def reload_models(self) -> ModelsReloaded:
        """Serve the repository's versions as they are now (after `python -m convert promote` or `rollback`): a
        face head's new version swaps in without a restart, between requests; anything else is a 409. This worker
        at once; the others within FACESERVE_MODELS_WATCH_S."""
        return await self.services.models.reload()

    @bentoml.api(route="/models/compare")
    @json_errors
    async def compare_models(self, model: str) -> ComparisonReport:
        """A face head's trials of a candidate version (`python -m convert shadow|canary`), from the store: per pair
        of versions, their agreement, the confusion between their labels (a number's difference), each one's
        call time, and the /feedback corrections of the compared faces; each version's corrections."""
        return await self.services.models.compare(model)


# The web page at `/` (BentoML's Swagger page moves to `/docs`).
FaceAnalysis.mount_asgi_app(web_page(_settings), path="/", name="web")

# Before the ASGI app is built: BentoML's own URL downloader closed at its source, its /metrics labelled by
# known paths only.
close_framework_downloads()
bound_metrics_labels()

# Outermost first: security headers on every answer, connections spread over workers, body limit and error shape,
# access (route table, Host, keys and scopes, cross-site writes: docs/security.md), concurrency limit, requests
# that could make BentoML read text as a file refused.
FaceAnalysis.add_asgi_middleware(SecurityHeadersMiddleware)
if _settings.workers > 1 and _settings.keepalive_requests > 0:
    FaceAnalysis.add_asgi_middleware(KeepAliveLimitMiddleware, max_requests=_settings.keepalive_requests)
FaceAnalysis.add_asgi_middleware(ErrorShapeMiddleware, max_body_bytes=_settings.limits.max_body_bytes,
                                  route_body_bytes=_settings.route_body_bytes)
# The Host allowlist: always without keys (a browser on this machine is the one at risk), with keys where named.
FaceAnalysis.add_asgi_middleware(
    AccessMiddleware, keys=_settings.api_keys,
    hosts=(HostAllowlist.of(_settings.allowed_hosts, _bound_host)
           if not _settings.api_keys or _settings.allowed_hosts else None))
FaceAnalysis.add_asgi_middleware(ConcurrencyLimitMiddleware, max_concurrency=_settings.limits.max_concurrency)
FaceAnalysis.add_asgi_middleware(UploadGuardMiddleware, file_fields=("image", "images", "file", "archive"),
                                  file_counts={JOBS_SUBMIT_ROUTE: _settings.jobs.check_images})
