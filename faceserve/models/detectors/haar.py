"""OpenCV's frontal-face Haar cascade: in-process, no model from the repository.

Its cost is OpenCV's scan itself: about 140 ms of CPU for a 640x480 photo on the benchmark machine whether OpenCV
uses one thread or two, half of it for faces of 24-48 px (benchmarks/README.md, "Haar's cost").
"""

from __future__ import annotations

import asyncio
import threading

import cv2
import numpy as np

from faceserve.models.decoder import sigmoid
from faceserve.models.detectors.base import Detection, Detector, nms

CASCADE = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"


class HaarDetector(Detector):
    name = "haar"
    rank = 90

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24):
        self._params = dict(scaleFactor=scale_factor, minNeighbors=min_neighbors,
                            minSize=(min_size, min_size))
        self._per_thread = threading.local()
        self._cascade()  # a missing cascade file fails here, when the detector is built

    def _cascade(self) -> cv2.CascadeClassifier:
        """This thread's own cascade: a CascadeClassifier keeps its scan's state in itself, so threads sharing one
        answer each other's faces (4 threads on one: 14 of 36 answers differed from one thread's)."""
        cascade = getattr(self._per_thread, "cascade", None)
        if cascade is None:
            cascade = cv2.CascadeClassifier(CASCADE)
            if cascade.empty():
                raise RuntimeError(f"cannot load the Haar cascade at {CASCADE}")
            self._per_thread.cascade = cascade
        return cascade

    async def detect(self, image: np.ndarray) -> list[Detection]:
        return await asyncio.to_thread(self.detect_sync, image)

    def detect_sync(self, image: np.ndarray) -> list[Detection]:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        # The same boxes as detectMultiScale at the same CPU (measured), with each box's level weight for a score.
        boxes, _, weights = self._cascade().detectMultiScale3(gray, outputRejectLevels=True, **self._params)
        if len(boxes) == 0:
            return []
        weights = np.asarray(weights, dtype=np.float32).reshape(-1)
        # Haar "level weights" are unbounded margins; squash them into 0..1 for a score.
        scores = sigmoid(weights)
        xyxy = np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]]).astype(np.float32)
        return nms(xyxy, scores, 0.3, gray.shape[:2])
