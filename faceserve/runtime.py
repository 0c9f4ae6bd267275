"""Everything a running service holds: settings, repository, backend, pipeline.

Shared by `service.py` and the CLI so both answer identically.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np

from faceserve.backends import create
from faceserve.errors import LimitExceeded
from faceserve.http import inputs
from faceserve.models.repository import Repository
from faceserve.pipeline import imaging
from faceserve.pipeline.annotate import annotate
from faceserve.pipeline.pipeline import Pipeline
from faceserve.pipeline.schemas import Analysis, BatchAnalysis, Classification, ModelsInfo
from faceserve.settings import Settings

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self.repository = Repository.load(self.settings.repository)
        backend = create(self.settings.backend, self.repository.path, threads=self.settings.ort_threads,
                         timeout_s=self.settings.backend_timeout_s)
        self.pipeline = Pipeline(self.repository, backend, max_faces=self.settings.limits.max_faces)
        self.fetch = None  # the `image_url` hook; None answers `url_fetch_disabled`
        if self.settings.url_fetch:
            from faceserve.http.urlfetch import UrlFetcher
            limits = self.settings.limits
            self.fetch = UrlFetcher(allowlist=self.settings.url_allowlist, max_bytes=limits.url_max_bytes,
                                    timeout_s=limits.url_timeout_s, max_redirects=limits.url_max_redirects)
        self._started = False
        self._lock = asyncio.Lock()
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

    async def analyze(self, upload: Path | None = None, b64: str | None = None, url: str | None = None,
                      detector: str | None = None) -> Analysis:
        return await self.analyze_image(await self.image(upload, b64, url), detector)

    async def analyze_image(self, pixels: np.ndarray, detector: str | None = None) -> Analysis:
        return await self.pipeline.analyze(pixels, detector)

    async def analyze_batch(self, uploads: list[Path] | None, b64s: list[str] | None,
                            detector: str | None = None) -> BatchAnalysis:
        """`analyze` for several images; every image is checked before any is decoded, all their faces
        share model calls."""
        items = [(upload, None) for upload in uploads or []] + [(None, b64) for b64 in b64s or []]
        limit = self.settings.limits.max_batch_images
        if not items or len(items) > limit:
            raise LimitExceeded(f"send between 1 and {limit} images; got {len(items)}", code="batch_size")
        pixels = await self.images(items)
        return BatchAnalysis(results=await asyncio.gather(*(self.pipeline.analyze(p, detector) for p in pixels)))

    async def annotate(self, upload: Path | None = None, b64: str | None = None, url: str | None = None,
                       detector: str | None = None, fmt: str = "png", landmarks: bool = False) -> bytes:
        """The photo with each face boxed and captioned (and its landmarks dotted), encoded as `fmt`."""
        pixels = await self.image(upload, b64, url)
        analysis = await self.pipeline.analyze(pixels, detector)
        return await asyncio.to_thread(lambda: imaging.encode(annotate(pixels, analysis, landmarks), fmt))

    async def classify(self, upload: Path | None = None, b64: str | None = None, url: str | None = None,
                       model: str | None = None, top_k: int = 5) -> Classification:
        self.pipeline.check_top_k(top_k, self.settings.limits.max_top_k)
        return await self.pipeline.classify(await self.image(upload, b64, url), model, top_k)

    async def rotate(self, upload: Path | None = None, b64: str | None = None, url: str | None = None,
                     degrees: int = 90, fmt: str = "png") -> bytes:
        imaging.check_rotation(degrees)  # before the image is decoded
        pixels = await self.image(upload, b64, url)
        return await asyncio.to_thread(lambda: imaging.encode(imaging.rotate(pixels, degrees), fmt))

    # ---- images in ----

    async def image(self, upload: Path | None = None, b64: str | None = None, url: str | None = None) -> np.ndarray:
        await self.start()
        data = await inputs.image_bytes(upload, b64, url, self.settings.limits, self.fetch)
        return await asyncio.to_thread(imaging.decode, data, self.settings.limits.decode)

    async def images(self, items: list[tuple[Path | None, str | None]]) -> list[np.ndarray]:
        """The (upload, base64) images of a batch, decoded only once every header is checked and
        their pixels together are within `max_batch_pixels`."""
        await self.start()
        limits = self.settings.limits
        blobs = [await inputs.image_bytes(upload, b64, None, limits, self.fetch) for upload, b64 in items]
        sizes = await asyncio.to_thread(lambda: [imaging.probe(data, limits.decode) for data in blobs])
        _check_batch_pixels([width * height for width, height in sizes], limits.max_batch_pixels)
        images = []
        for data in blobs:
            images.append(await asyncio.to_thread(imaging.decode, data, limits.decode))
            _check_batch_pixels([image.shape[0] * image.shape[1] for image in images], limits.max_batch_pixels)
        return images

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
        await self.pipeline.backend.close()


def _check_batch_pixels(pixels: list[int], limit: int) -> None:
    if sum(pixels) > limit:
        raise LimitExceeded(f"the {len(pixels)} images hold {sum(pixels)} pixels together; the limit is {limit} "
                            "pixels per request", code="batch_too_large")
