"""The orchestrator: detect once, place each face (landmarks, pose), crop per head recipe, one batched
call per head."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from faceserve.backends import Backend
from faceserve.errors import InvalidRequest, LimitExceeded, NotFound
from faceserve.models import detectors, heads
from faceserve.models.classifier import Classifier
from faceserve.models.detectors import Detection, Detector
from faceserve.models.heads import Head
from faceserve.models.landmarks import PRESENCE_THRESHOLD, LandmarkModel, Placement
from faceserve.models.repository import Repository
from faceserve.pipeline.schemas import HEAD_FIELDS, Analysis, Box, Classification, Face, Label, Pose

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, repository: Repository, backend: Backend, max_faces: int = 100):
        self.repository = repository
        self.backend = backend
        self.max_faces = max_faces
        # in the response's field order: the schema's typed fields first, then any other by name
        self.heads: list[Head] = [heads.head_for(spec) for _, spec in sorted(
            repository.heads.items(),
            key=lambda item: (HEAD_FIELDS.index(item[0]) if item[0] in HEAD_FIELDS else len(HEAD_FIELDS), item[0]))]
        self._detectors = detectors.build(repository.detectors, backend)
        self.default_detector = detectors.default(self._detectors)
        self._landmarks = LandmarkModel(repository.landmarks) if repository.landmarks else None
        self._classifiers = {name: Classifier(spec, backend) for name, spec in repository.classifiers.items()}

    async def start(self) -> None:
        await self.backend.start(self.repository.specs)

    @property
    def detectors(self) -> list[str]:
        return list(self._detectors)

    def detector(self, name: str | None) -> Detector:
        """The detector called `name`; None: the default one."""
        name = name or self.default_detector
        if name not in self._detectors:
            raise InvalidRequest(f"unknown detector {name!r}; available: {', '.join(self._detectors)}",
                                 code="unknown_detector")
        return self._detectors[name]

    async def detect(self, image: np.ndarray, detector: str | None = None) -> list[Detection]:
        return await self.detector(detector).detect(image)

    async def analyze(self, image: np.ndarray, detector: str | None = None) -> Analysis:
        chosen = self.detector(detector)
        started = time.perf_counter()
        detections = await chosen.detect(image)
        detected = time.perf_counter()
        if len(detections) > self.max_faces:
            raise LimitExceeded(f"{len(detections)} faces found; the limit is {self.max_faces} faces per image",
                                code="too_many_faces")
        placements = await self.place(image, [d.box for d in detections])
        # a box the landmark model does not see a face in is the detector's mistake
        kept = [i for i, p in enumerate(placements) if p is None or p.presence >= PRESENCE_THRESHOLD]
        detections, placements = [detections[i] for i in kept], [placements[i] for i in kept]
        boxes = [d.box for d in detections]
        placed = time.perf_counter()
        answers = await self._heads(image, boxes, [p and p.landmarks for p in placements])
        faces = [Face(box=Box(x1=d.box[0], y1=d.box[1], x2=d.box[2], y2=d.box[3]), score=d.score,
                      **_placement_fields(placement), **{field: values[i] for field, values in answers.items()})
                 for i, (d, placement) in enumerate(zip(detections, placements))]
        finished = time.perf_counter()
        used = ([head.spec for head in self.heads] + ([chosen.spec] if chosen.spec is not None else [])
                + ([self._landmarks.spec] if self._landmarks else []))
        return Analysis(
            width=image.shape[1], height=image.shape[0], detector=chosen.name, faces=faces,
            models={spec.task: f"{spec.name}:{spec.version}" for spec in used},
            missing_heads=[field for field in HEAD_FIELDS if field not in answers],
            timings_ms={"detect": round((detected - started) * 1e3, 3),
                        "landmarks": round((placed - detected) * 1e3, 3),
                        "heads": round((finished - placed) * 1e3, 3)},
        )

    async def place(self, image: np.ndarray, boxes: list) -> list[Placement | None]:
        """Each face's landmarks and pose (None for every face when the repository has no landmark model)."""
        if self._landmarks is None or not boxes:
            return [None] * len(boxes)
        batch, transforms = await asyncio.to_thread(self._landmarks.batch, image, boxes)
        outputs = await self.backend.infer(self._landmarks.spec, batch)
        return self._landmarks.decode(outputs, transforms)

    async def _heads(self, image: np.ndarray, boxes: list, landmarks: list) -> dict[str, list]:
        """Each head's answers per box; every crop is cut in one worker-thread hop, then the heads run at once."""
        if not boxes:
            return {head.field: [] for head in self.heads}
        batches = await asyncio.to_thread(lambda: [head.batch(image, boxes, landmarks) for head in self.heads])
        outputs = await asyncio.gather(*(self.backend.infer(head.spec, batch)
                                         for head, batch in zip(self.heads, batches)))
        return {head.field: head.decode(out) for head, out in zip(self.heads, outputs)}

    @staticmethod
    def check_top_k(top_k: int, limit: int) -> None:
        if not 1 <= top_k <= limit:
            raise LimitExceeded(f"top_k must be between 1 and {limit}, got {top_k}", code="top_k_out_of_range")

    async def classify(self, image: np.ndarray, model: str | None, top_k: int) -> Classification:
        available = self._classifiers
        if not available:
            raise NotFound("the model repository has no whole-image classifier; it serves "
                           f"{', '.join(sorted(self.repository.specs)) or 'no models'}",
                           code="no_classifier")
        if model is None:
            model = sorted(available)[0]
        if model not in available:
            raise NotFound(f"no whole-image classifier named {model!r}; available: {', '.join(sorted(available))}",
                           code="unknown_model")
        labels = await available[model].classify(image, top_k)
        return Classification(model=model, width=image.shape[1], height=image.shape[0],
                              top_k=[Label(**item) for item in labels])


def _placement_fields(placement: Placement | None) -> dict:
    if placement is None:
        return {}
    return {"landmarks": [(round(float(x), 2), round(float(y), 2)) for x, y in placement.landmarks],
            "pose": Pose(yaw=round(placement.yaw, 2), pitch=round(placement.pitch, 2), roll=round(placement.roll, 2))}
