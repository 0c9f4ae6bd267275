"""OpenCV's frontal-face Haar cascade: in-process, no model from the repository."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np

from faceserve.models.decoder import sigmoid
from faceserve.models.detectors.base import Detection, Detector, nms


class HaarDetector(Detector):
    name = "haar"
    rank = 90

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24):
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade at {path}")
        self._params = dict(scaleFactor=scale_factor, minNeighbors=min_neighbors,
                            minSize=(min_size, min_size))

    async def detect(self, image: np.ndarray) -> list[Detection]:
        return await asyncio.to_thread(self.detect_sync, image)

    def detect_sync(self, image: np.ndarray) -> list[Detection]:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        boxes, _, weights = self._cascade.detectMultiScale3(gray, outputRejectLevels=True,
                                                            **self._params)
        if len(boxes) == 0:
            return []
        weights = np.asarray(weights, dtype=np.float32).reshape(-1)
        # Haar "level weights" are unbounded margins; squash them into 0..1 for a score.
        scores = sigmoid(weights)
        xyxy = np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]]).astype(np.float32)
        return nms(xyxy, scores, 0.3, gray.shape[:2])
