"""Everything a running service holds: settings, repository, backend, pipeline.

Shared by `service.py` and the CLI so both answer identically.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np

from faceserve import imaging, inputs
from faceserve.backends import create
from faceserve.errors import LimitExceeded
from faceserve.models.detectors import DEFAULT_DETECTOR
from faceserve.pipeline import Pipeline, Repository
from faceserve.schemas import ModelsInfo
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
            from faceserve.urlfetch import UrlFetcher
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
            default_detector=DEFAULT_DETECTOR,
        )

    async def close(self) -> None:
        await self.pipeline.backend.close()


def _check_batch_pixels(pixels: list[int], limit: int) -> None:
    if sum(pixels) > limit:
        raise LimitExceeded(f"the {len(pixels)} images hold {sum(pixels)} pixels together; the limit is {limit} "
                            "pixels per request", code="batch_too_large")
