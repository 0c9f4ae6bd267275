"""The detector role: a whole image in, faces out."""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import ClassVar, Sequence

import cv2
import numpy as np

from faceserve.models import crops
from faceserve.models.decoder import Decoder
from faceserve.models.spec import ModelSpec


@dataclasses.dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    score: float
    # Image pixels, in the model's own order; where a detector has any, the first two are the eyes, the one on the
    # image's left of an upright face first (BlazeFace's, MediaPipe's order).
    keypoints: tuple[tuple[float, float], ...] = ()
    # Found by a second detector family whatever its score: only the face mesh's word can keep it (`Detector.unsure`).
    unsure: bool = False

    @property
    def roll(self) -> float | None:
        """The slope of the eye line in degrees, positive when it slopes down towards the image's right (as
        `landmarks.Placement.roll`); None without keypoints."""
        if len(self.keypoints) < 2:
            return None
        (left_x, left_y), (right_x, right_y) = self.keypoints[:2]
        return math.degrees(math.atan2(right_y - left_y, right_x - left_x))


# An unsure box overlapping a sure face by more than this is a second look at that face, not a face of its own.
DUPLICATE_IOU = 0.1


class Detector(Decoder, abc.ABC):
    """Finds faces in an RGB image; owns its preprocessing and its output decoding.

    `decoder` names the repository models a class runs (their `decoder` parameter);
    None means the detector needs no model from the repository (it runs in-process).
    Every class that sets `name` is a detector of the registry, in `rank` order.
    """

    name: ClassVar[str]
    rank: ClassVar[int]  # its place where `/models` lists the detectors, which is also the order of preference
    reason: ClassVar[str] = ""  # why it is the default, for the one that is (`/models` says it)
    spec: ModelSpec | None = None  # the repository model it runs, if any
    # Boxes scoring above this floor but not above the model's threshold are answered as unsure: the pipeline keeps
    # one only where the face mesh confirms a face in it (`faceserve/pipeline/verification.py`). None: every box
    # answered is sure.
    unsure_floor: ClassVar[float | None] = None
    # A second detector family (a detector's name) whose faces this one adds where its own may have missed some, as
    # unsure boxes; `second` is that detector where the repository has its model (`detectors.build` sets it).
    second_family: ClassVar[str | None] = None
    second: "Detector | None" = None

    @abc.abstractmethod
    async def detect(self, image: np.ndarray) -> list[Detection]:
        """The faces of `image`, best first."""

    def unsure(self, detection: Detection) -> bool:
        """Whether `detection` is a box that only the face mesh's word can keep: one under the model's threshold, or
        one a second detector family found."""
        if detection.unsure:
            return True
        return self.unsure_floor is not None and self.spec is not None and detection.score <= self.spec.score_threshold

    @staticmethod
    def model_inputs(spec: ModelSpec, image: np.ndarray) -> list[np.ndarray]:
        """Every input this detector gives its model for `image` (what parity is checked on)."""
        return [crops.whole_image(image, spec)[0]]


class ModelDetector(Detector, abc.ABC):
    """A detector that runs a repository model (its `decoder`'s) on a backend."""

    def __init__(self, spec: ModelSpec, backend):
        self.spec = spec
        self.backend = backend


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, image_shape: tuple[int, int],
        keypoints: np.ndarray | None = None) -> list[Detection]:
    """Boxes clipped to the image, overlaps above `iou` suppressed (OpenCV), best score first."""
    height, width = image_shape
    boxes = np.clip(boxes, 0, [width, height, width, height])
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).tolist()
    kept = cv2.dnn.NMSBoxes(xywh, scores.tolist(), 0.0, iou)
    order = sorted(np.asarray(kept).reshape(-1).tolist(), key=lambda i: -scores[i])
    return [Detection(tuple(float(v) for v in boxes[i]), float(scores[i]),
                      () if keypoints is None else tuple((float(x), float(y)) for x, y in keypoints[i]))
            for i in order if boxes[i, 2] - boxes[i, 0] >= 1 and boxes[i, 3] - boxes[i, 1] >= 1]


def merge(detections: Sequence[Detection], iou: float) -> list[Detection]:
    """Detections of several passes or detector families, overlaps above `iou` suppressed (OpenCV), best first."""
    if not detections:
        return []
    xywh = [[d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]] for d in detections]
    kept = np.asarray(cv2.dnn.NMSBoxes(xywh, [d.score for d in detections], 0.0, iou)).reshape(-1).tolist()
    return sorted((detections[i] for i in kept), key=lambda d: -d.score)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
