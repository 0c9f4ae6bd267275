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
from faceserve.detection import DEFAULT_DETECTOR
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

    def models(self) -> ModelsInfo:
        backend = self.pipeline.backend
        return ModelsInfo(
            backend=self.settings.backend if backend.kind == "triton" else backend.kind,
            repository=str(self.repository.path),
            models=[spec.describe() for spec in self.repository.specs.values()],
            missing=self.repository.missing,
            detectors=self.pipeline.detectors,
            default_detector=DEFAULT_DETECTOR,
        )

    async def close(self) -> None:
        await self.pipeline.backend.close()

