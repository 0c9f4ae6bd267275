"""faceserve: faces found, then emotion, gender and age for each; served with BentoML.

    bentoml serve service:FaceAnalysis          # embedded onnxruntime backend
    FACESERVE_BACKEND=grpc://127.0.0.1:8001 bentoml serve service:FaceAnalysis   # Triton

Only wiring lives here; every step is in the `faceserve` package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import bentoml
from bentoml.validators import ContentType
from starlette.responses import Response

from faceserve.http.auth import ApiKeyMiddleware
from faceserve.http.framework import bound_metrics_labels, close_framework_downloads
from faceserve.http.middleware import ConcurrencyLimitMiddleware, KeepAliveLimitMiddleware
from faceserve.http.responses import ErrorShapeMiddleware, json_errors
from faceserve.http.upload_guard import UploadGuardMiddleware
from faceserve.models import detectors
from faceserve.pipeline.schemas import Analysis, BatchAnalysis, Classification, ModelsInfo
from faceserve.runtime import Runtime
from faceserve.settings import Settings
from faceserve.web import app as web_page

ImageFile = Annotated[Path, ContentType("image/*")]
ImageOut = Annotated[Path, ContentType("image/*")]  # endpoints return the encoded bytes directly
Detector = Literal[tuple(d.name for d in detectors.REGISTRY)]  # None: the default (`/models`)
ImageFormat = Literal["png", "jpeg"]

_settings = Settings.from_env()


@bentoml.service(
    name="faceserve",
    traffic={"timeout": 30},  # concurrency: ConcurrencyLimitMiddleware (FACESERVE_MAX_CONCURRENCY), 503 + Retry-After
    resources={"cpu": "2"},
    workers=_settings.workers,
    http={"host": "127.0.0.1"},
)
class FaceAnalysis:
    def __init__(self) -> None:
        self.runtime = Runtime(_settings)

    async def __is_ready__(self) -> bool:
        return await self.runtime.ready()

    @bentoml.api
    @json_errors
    async def analyze(self, image: ImageFile = None, image_base64: str | None = None,
                      image_url: str | None = None, detector: Detector | None = None) -> Analysis:
        """Faces with box, score, emotion, gender and age."""
        return await self.runtime.analyze(image, image_base64, image_url, detector)

    @bentoml.api
    @json_errors
    async def analyze_batch(self, images: list[ImageFile] = None, images_base64: list[str] | None = None,
                            detector: Detector | None = None) -> BatchAnalysis:
        """`analyze` for several images in one request (all their faces share model calls)."""
        return await self.runtime.analyze_batch(images, images_base64, detector)

    @bentoml.api
    @json_errors
    async def annotate(self, image: ImageFile = None, image_base64: str | None = None,
                       image_url: str | None = None, detector: Detector | None = None,
                       format: ImageFormat = "png", landmarks: bool = False) -> ImageOut:
        """The image with each face boxed and captioned (emotion, gender, age), and its five landmarks
        dotted when `landmarks` is true."""
        drawn = await self.runtime.annotate(image, image_base64, image_url, detector, format, landmarks)
        return Response(drawn, media_type=f"image/{format}")

    @bentoml.api
    @json_errors
    async def classify(self, image: ImageFile = None, image_base64: str | None = None,
                       image_url: str | None = None, model: str | None = None, top_k: int = 5) -> Classification:
        """Top-k labels from a whole-image classifier of the repository."""
        return await self.runtime.classify(image, image_base64, image_url, model, top_k)

    @bentoml.api
    @json_errors
    async def rotate(self, image: ImageFile = None, image_base64: str | None = None,
                     image_url: str | None = None, degrees: int = 90, format: ImageFormat = "png") -> ImageOut:
        """The image rotated counter-clockwise by a multiple of 90 degrees."""
        rotated = await self.runtime.rotate(image, image_base64, image_url, degrees, format)
        return Response(rotated, media_type=f"image/{format}")

    @bentoml.api
    async def models(self) -> ModelsInfo:
        """What is loaded: input specs, labels, source artifacts, and what is missing."""
        return self.runtime.models()


# The web page at `/` (BentoML's Swagger page moves to `/docs`).
FaceAnalysis.mount_asgi_app(web_page(_settings), path="/", name="web")

# Before the ASGI app is built: BentoML's own URL downloader closed at its source, its /metrics labelled by
# known paths only.
close_framework_downloads()
bound_metrics_labels()

# Outermost first: connections spread over workers, body limit and error shape, API keys, concurrency limit,
# requests that could make BentoML read text as a file refused.
if _settings.workers > 1 and _settings.keepalive_requests > 0:
    FaceAnalysis.add_asgi_middleware(KeepAliveLimitMiddleware, max_requests=_settings.keepalive_requests)
FaceAnalysis.add_asgi_middleware(ErrorShapeMiddleware, max_body_bytes=_settings.limits.max_body_bytes)
if _settings.api_keys:
    FaceAnalysis.add_asgi_middleware(ApiKeyMiddleware, keys=_settings.api_keys)
FaceAnalysis.add_asgi_middleware(ConcurrencyLimitMiddleware, max_concurrency=_settings.limits.max_concurrency)
FaceAnalysis.add_asgi_middleware(UploadGuardMiddleware, file_fields=("image", "images"))
