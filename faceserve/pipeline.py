"""The orchestrator: detect once, crop per head recipe, one batched call per head."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from faceserve import postprocess, preprocess
from faceserve.backends import Backend
from faceserve.detection import DEFAULT_DETECTOR, DETECTORS, Detection, HaarDetector, decode_blazeface
from faceserve.errors import InvalidRequest, LimitExceeded, NotFound
from faceserve.schemas import Analysis, Box, Classification, Face, Label, LabelScores
from faceserve.spec import CONFIG_FILE, FACE_TASKS, ModelSpec, model_dirs

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Repository:
    """The built models of a model repository, by role."""

    path: Path
    specs: dict[str, ModelSpec]
    missing: list[str]  # declared (config.pbtxt) but not built

    @classmethod
    def load(cls, path: Path) -> "Repository":
        if not path.is_dir():
            raise FileNotFoundError(f"model repository {path} does not exist; run `python -m convert build`")
        built = {d.name: ModelSpec.load(d) for d in model_dirs(path)}
        declared = {d.name for d in path.iterdir() if (d / CONFIG_FILE).is_file()}
        repo = cls(path, built, sorted(declared - set(built)))
        for task in FACE_TASKS + ("face_detector",):
            names = [s.name for s in built.values() if s.task == task]
            if len(names) > 1:
                raise ValueError(f"{path} has several {task} models ({', '.join(names)}); keep one per repository")
        return repo

    def _one(self, task: str) -> ModelSpec | None:
        return next((s for s in self.specs.values() if s.task == task), None)

    @property
    def detector(self) -> ModelSpec | None:
        return self._one("face_detector")

    @property
    def heads(self) -> dict[str, ModelSpec]:
        return {task: spec for task in FACE_TASKS if (spec := self._one(task)) is not None}

    @property
    def classifiers(self) -> dict[str, ModelSpec]:
        return {n: s for n, s in self.specs.items() if s.task == "image_classifier"}


class Pipeline:
    def __init__(self, repository: Repository, backend: Backend, max_faces: int = 100):
        self.repository = repository
        self.backend = backend
        self.max_faces = max_faces
        self._haar = HaarDetector()

    async def start(self) -> None:
        await self.backend.start(self.repository.specs)

    @property
    def detectors(self) -> list[str]:
        return [d for d in DETECTORS if d != "blazeface" or self.repository.detector is not None]

    async def detect(self, image: np.ndarray, detector: str = DEFAULT_DETECTOR) -> list[Detection]:
        if detector not in self.detectors:
            raise InvalidRequest(f"unknown detector {detector!r}; available: {', '.join(self.detectors)}",
                                 code="unknown_detector")
        if detector == "haar":
            return await asyncio.to_thread(self._haar.detect, image)
        spec = self.repository.detector
        batch, frame = preprocess.whole_image(image, spec)
        outputs = await self.backend.infer(spec, batch)
        regressors, logits = (outputs[n][0] for n in spec.output_names)
        return decode_blazeface(regressors, logits, frame, spec.height, image.shape[:2],
                                threshold=spec.score_threshold, nms_iou=spec.nms_iou)

    async def analyze(self, image: np.ndarray, detector: str = DEFAULT_DETECTOR) -> Analysis:
        started = time.perf_counter()
        detections = await self.detect(image, detector)
        detected = time.perf_counter()
        if len(detections) > self.max_faces:
            raise LimitExceeded(f"{len(detections)} faces found; the limit is {self.max_faces} faces per image",
                                code="too_many_faces")
        heads = self.repository.heads
        boxes = [d.box for d in detections]
        per_task = await self._heads(heads, image, boxes)
        faces = []
        for i, d in enumerate(detections):
            face = {task: per_task[task][i] for task in per_task}
            faces.append(Face(box=Box(x1=d.box[0], y1=d.box[1], x2=d.box[2], y2=d.box[3]), score=d.score,
                              emotion=LabelScores(**face["emotion"]) if "emotion" in face else None,
                              gender=LabelScores(**face["gender"]) if "gender" in face else None,
                              age=face.get("age")))
        finished = time.perf_counter()
        used = dict(heads)
        if detector == "blazeface":
            used["face_detector"] = self.repository.detector
        return Analysis(
            width=image.shape[1], height=image.shape[0], detector=detector, faces=faces,
            models={task: f"{spec.name}:{spec.version}" for task, spec in used.items()},
            missing_heads=[t for t in FACE_TASKS if t not in heads],
            timings_ms={"detect": round((detected - started) * 1e3, 3),
                        "heads": round((finished - detected) * 1e3, 3)},
        )

    async def _heads(self, heads: dict[str, ModelSpec], image: np.ndarray, boxes: list) -> dict[str, list]:
        """Each head's answers per box; every crop is cut in one worker-thread hop, then the heads run at once."""
        if not boxes:
            return {task: [] for task in heads}
        batches = await asyncio.to_thread(
            lambda: [preprocess.face_batch(image, boxes, spec) for spec in heads.values()])
        outputs = await asyncio.gather(*(self.backend.infer(spec, batch)
                                         for spec, batch in zip(heads.values(), batches)))
        return {task: postprocess.decode_head(spec, out[spec.output_names[0]])
                for (task, spec), out in zip(heads.items(), outputs)}

    async def classify(self, image: np.ndarray, model: str | None, top_k: int) -> Classification:
        available = self.repository.classifiers
        if not available:
            raise NotFound("the model repository has no whole-image classifier; it serves "
                           f"{', '.join(sorted(self.repository.specs)) or 'no models'}",
                           code="no_classifier")
        if model is None:
            model = sorted(available)[0]
        if model not in available:
            raise NotFound(f"no whole-image classifier named {model!r}; available: {', '.join(sorted(available))}",
                           code="unknown_model")
        spec = available[model]
        batch, _ = preprocess.whole_image(image, spec)
        outputs = await self.backend.infer(spec, batch)
        labels = postprocess.top_k(spec, outputs[spec.output_names[0]][0], top_k)
        return Classification(model=model, width=image.shape[1], height=image.shape[0],
                              top_k=[Label(**item) for item in labels])
