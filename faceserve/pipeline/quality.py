"""Per-face quality: how big, how sharp, how turned a face is and how sure the face mesh is that it is one, for
every answer that carries faces, and the bars under which enrolment refuses a face (docs/identity.md has the
measurements the default bars come from)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import cv2
import numpy as np

from faceserve.models.landmarks import Placement
from faceserve.pipeline.schemas import Quality

# Sharpness is measured on the face resampled to this side, so that it compares faces of any size: a big face is
# averaged down (its detail kept), a small or upscaled one is interpolated up (and scores as blurred as it is).
SHARPNESS_SIDE = 128


def sharpness(image: np.ndarray, box: Sequence[float]) -> float:
    """The variance of the Laplacian of the face's grey crop (the box clipped to the image) at SHARPNESS_SIDE."""
    height, width = image.shape[:2]
    x1, y1 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    x2, y2 = min(width, int(round(box[2]))), min(height, int(round(box[3])))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return 0.0
    face = image[y1:y2, x1:x2]
    grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY) if face.ndim == 3 else face
    shrinking = min(face.shape[:2]) > SHARPNESS_SIDE
    resized = cv2.resize(grey, (SHARPNESS_SIDE, SHARPNESS_SIDE),
                         interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return float(cv2.Laplacian(resized.astype(np.float32), cv2.CV_32F).var())


def turn(placement: Placement) -> float:
    """Degrees away from the camera: the larger of |yaw| and |pitch|. Roll (a tilt in the image plane) hides no
    feature, so it does not count."""
    return max(abs(placement.yaw), abs(placement.pitch))


def measure(image: np.ndarray, box: Sequence[float], placement: Placement | None) -> Quality:
    width, height = float(box[2] - box[0]), float(box[3] - box[1])
    return Quality(width=round(width, 1), height=round(height, 1), size=round(min(width, height), 1),
                   sharpness=round(sharpness(image, box), 1),
                   turn=None if placement is None else round(turn(placement), 2),
                   presence=None if placement is None else round(placement.presence, 4))


def measure_all(image: np.ndarray, boxes: Sequence[Sequence[float]],
                placements: Sequence[Placement | None]) -> list[Quality]:
    return [measure(image, box, placement) for box, placement in zip(boxes, placements)]


@dataclasses.dataclass(frozen=True)
class EnrolmentBars:
    """The least quality a face must have to be enrolled (FACESERVE_ENROL_MIN_FACE_PX, FACESERVE_ENROL_MIN_SHARPNESS,
    FACESERVE_ENROL_MAX_TURN_DEGREES). The defaults are measured (docs/identity.md): every enrolment photo of the
    fixtures passes with margin; the same faces downscaled to 24 px or blurred (Gaussian sigma 4), and the most
    turned real face the fixtures hold, do not."""

    min_face_px: float = 40.0
    min_sharpness: float = 100.0
    max_turn_degrees: float = 30.0

    def failures(self, quality: Quality) -> list[str]:
        """Each measure that makes the face useless for enrolment, with its value and its bar; empty: a good face."""
        failed = []
        if quality.size < self.min_face_px:
            failed.append(f"too small ({quality.size:g} px on its smaller side, the bar is {self.min_face_px:g} px)")
        if quality.sharpness < self.min_sharpness:
            failed.append(f"too blurred (sharpness {quality.sharpness:g}, the bar is {self.min_sharpness:g})")
        if quality.turn is not None and quality.turn > self.max_turn_degrees:
            failed.append(f"too turned ({quality.turn:g} degrees from the camera, the bar is "
                          f"{self.max_turn_degrees:g} degrees)")
        return failed
