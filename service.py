"""faceserve: faces found, then emotion, gender and age for each; served with BentoML.

    bentoml serve service:FaceAnalysis          # embedded onnxruntime backend
    FACESERVE_BACKEND=grpc://127.0.0.1:8001 bentoml serve service:FaceAnalysis   # Triton

Only wiring lives here; every step is in the `faceserve` package.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Literal

import bentoml
from bentoml.validators import ContentType
from starlette.responses import Response

from faceserve import imaging
from faceserve.errors import LimitExceeded
from faceserve.auth import ApiKeyMiddleware
from faceserve.http import (ConcurrencyLimitMiddleware, ErrorShapeMiddleware, KeepAliveLimitMiddleware,
                            UploadGuardMiddleware, bound_metrics_labels, close_framework_downloads, json_errors)
from faceserve.runtime import Runtime
from faceserve.schemas import Analysis, BatchAnalysis, Classification, ModelsInfo
from faceserve.settings import Settings

ImageFile = Annotated[Path, ContentType("image/*")]
ImageOut = Annotated[Path, ContentType("image/*")]  # endpoints return the encoded bytes directly
Detector = Literal["blazeface", "haar"]
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
                      image_url: str | None = None, detector: Detector = "blazeface") -> Analysis:
        """Faces with box, score, emotion, gender and age."""
        pixels = await self.runtime.image(image, image_base64, image_url)
        return await self.runtime.pipeline.analyze(pixels, detector)

    @bentoml.api
    @json_errors
    async def analyze_batch(self, images: list[ImageFile] = None, images_base64: list[str] | None = None,
                            detector: Detector = "blazeface") -> BatchAnalysis:
        """`analyze` for several images in one request (all their faces share model calls)."""
        items = [(upload, None) for upload in images or []] + [(None, b64) for b64 in images_base64 or []]
        limit = self.runtime.settings.limits.max_batch_images
        if not items or len(items) > limit:
            raise LimitExceeded(f"send between 1 and {limit} images; got {len(items)}", code="batch_size")
        pixels = await self.runtime.images(items)
        return BatchAnalysis(results=await asyncio.gather(
            *(self.runtime.pipeline.analyze(p, detector) for p in pixels)))

    @bentoml.api
    @json_errors
    async def annotate(self, image: ImageFile = None, image_base64: str | None = None,
                       image_url: str | None = None, detector: Detector = "blazeface",
                       format: ImageFormat = "png") -> ImageOut:
        """The image with each face boxed and captioned (emotion, gender, age)."""
        pixels = await self.runtime.image(image, image_base64, image_url)
        analysis = await self.runtime.pipeline.analyze(pixels, detector)
        drawn = imaging.draw_boxes(pixels, [(f.box.x1, f.box.y1, f.box.x2, f.box.y2) for f in analysis.faces],
                                   [caption(f) for f in analysis.faces])
        return Response(imaging.encode(drawn, format), media_type=f"image/{format}")

    @bentoml.api
    @json_errors
    async def classify(self, image: ImageFile = None, image_base64: str | None = None,
                       image_url: str | None = None, model: str | None = None, top_k: int = 5) -> Classification:
        """Top-k labels from a whole-image classifier of the repository."""
        limit = self.runtime.settings.limits.max_top_k
        if not 1 <= top_k <= limit:
            raise LimitExceeded(f"top_k must be between 1 and {limit}, got {top_k}", code="top_k_out_of_range")
        pixels = await self.runtime.image(image, image_base64, image_url)
        return await self.runtime.pipeline.classify(pixels, model, top_k)

    @bentoml.api
    @json_errors
    async def rotate(self, image: ImageFile = None, image_base64: str | None = None,
                     image_url: str | None = None, degrees: int = 90, format: ImageFormat = "png") -> ImageOut:
        """The image rotated counter-clockwise by a multiple of 90 degrees."""
        imaging.check_rotation(degrees)  # before the image is decoded
        pixels = await self.runtime.image(image, image_base64, image_url)
        return Response(imaging.encode(imaging.rotate(pixels, degrees), format), media_type=f"image/{format}")

    @bentoml.api
    async def models(self) -> ModelsInfo:
        """What is loaded: input specs, labels, source artifacts, and what is missing."""
        return self.runtime.models()


def caption(face) -> str:
    parts = [face.emotion.label if face.emotion else None, face.gender.label if face.gender else None,
             f"{face.age:.0f}" if face.age is not None else None]
    return ", ".join(p for p in parts if p)


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
