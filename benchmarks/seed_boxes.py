"""Faceserve's detection for the seed app (benchmarks/seed_app.py), in the seeds' manner: synchronous, unbatched.

With it the seed app and the service find the same faces at the same detection cost, so comparing them measures
the serving design (Flask, a Keras `predict` per face per head, no batching, against ours) and not the detectors.
It runs the service's own detection stage (`Pipeline.detect`: the detector, then the face mesh's word on its unsure
boxes) on the embedded backend's onnxruntime sessions, each model call made at once in the request's own thread.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from faceserve.backends.onnx import OnnxRuntimeBackend
from faceserve.models.detectors import Detection
from faceserve.models.repository import Repository
from faceserve.pipeline.pipeline import Pipeline
from faceserve.settings import Settings


class UnbatchedOnnx(OnnxRuntimeBackend):
    """The embedded backend's sessions without its batcher: the seeds had none, so requests never share a call."""

    async def load(self, specs) -> None:
        self._runs = {(spec.name, spec.version): self._runner(spec, self._session(spec)) for spec in specs.values()}

    async def _infer(self, spec, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self._runs[spec.name, spec.version](batch)


class FaceserveBoxes:
    """`detect(image, name)`: the faces faceserve's detector `name` finds (None: the service's default), as the
    service's detection stage answers them. Safe from many threads: each runs its own event loop."""

    def __init__(self, settings: Settings | None = None):
        settings = settings or Settings.from_env()
        repository = Repository.load(settings.repository)
        self.pipeline = Pipeline(repository, UnbatchedOnnx(repository.path, threads=settings.ort_threads),
                                 max_faces=settings.limits.max_faces)
        self._loops = threading.local()
        self._run(self.pipeline.start())

    @property
    def default(self) -> str:
        return self.pipeline.default_detector

    def detect(self, image: np.ndarray, name: str | None = None) -> list[Detection]:
        """Raises faceserve's InvalidRequest (400 `unknown_detector`) for a name it has no detector of."""
        return self._run(self.pipeline.detect(image, name))

    def _run(self, coroutine):
        loop = getattr(self._loops, "loop", None)
        if loop is None:
            loop = self._loops.loop = asyncio.new_event_loop()
        return loop.run_until_complete(coroutine)
