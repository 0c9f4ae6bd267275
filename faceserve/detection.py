"""Face detectors: BlazeFace box decoding (the model runs on a backend) and OpenCV Haar."""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

DETECTORS = ("blazeface", "haar")
DEFAULT_DETECTOR = "blazeface"


@dataclasses.dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    score: float


@dataclasses.dataclass(frozen=True)
class Letterbox:
    """Where the model's square input sits in the original image."""

    scale: float  # original pixels per input pixel
    pad_x: float  # padding added on the left, in original pixels
    pad_y: float


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Pad the image to a centred square, resize it to size x size (uint8, same channels)."""
    height, width = image.shape[:2]
    side = max(height, width)
    pad_y, pad_x = (side - height) // 2, (side - width) // 2
    square = cv2.copyMakeBorder(image, pad_y, side - height - pad_y, pad_x, side - width - pad_x,
                                cv2.BORDER_CONSTANT, value=0)
    resized = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA
                         if side > size else cv2.INTER_LINEAR)
    return resized, Letterbox(scale=side / size, pad_x=pad_x, pad_y=pad_y)


@functools.lru_cache(maxsize=4)
def blazeface_anchors(size: int = 128) -> np.ndarray:
    """SSD anchor centres (x, y), normalised, for BlazeFace short-range: 512 + 384 = 896."""
    centres = []
    for stride, per_cell in ((8, 2), (16, 6)):
        grid = size // stride
        ys, xs = np.mgrid[0:grid, 0:grid]
        cell = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(cell, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


def decode_blazeface(regressors: np.ndarray, logits: np.ndarray, frame: Letterbox, size: int,
                     image_shape: tuple[int, int], threshold: float = 0.5,
                     nms_iou: float = 0.3) -> list[Detection]:
    """Boxes from one image's raw BlazeFace outputs ([896, 16] and [896, 1])."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -100.0, 100.0)))
    keep = scores > threshold
    if not keep.any():
        return []
    anchors = blazeface_anchors(size)[keep]
    reg = regressors.reshape(-1, 16)[keep, :4] / size
    centre = anchors + reg[:, :2]
    half = reg[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1) * size * frame.scale
    boxes -= np.array([frame.pad_x, frame.pad_y, frame.pad_x, frame.pad_y], dtype=np.float32)
    return _nms(boxes, scores[keep], nms_iou, image_shape)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float,
         image_shape: tuple[int, int]) -> list[Detection]:
    height, width = image_shape
    boxes = np.clip(boxes, 0, [width, height, width, height])
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).tolist()
    kept = cv2.dnn.NMSBoxes(xywh, scores.tolist(), 0.0, iou)
    order = sorted(np.asarray(kept).reshape(-1).tolist(), key=lambda i: -scores[i])
    return [Detection(tuple(float(v) for v in boxes[i]), float(scores[i])) for i in order
            if boxes[i, 2] - boxes[i, 0] >= 1 and boxes[i, 3] - boxes[i, 1] >= 1]


class HaarDetector:
    """OpenCV's frontal-face Haar cascade (CPU, in-process, no backend call)."""

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24):
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade at {path}")
        self._params = dict(scaleFactor=scale_factor, minNeighbors=min_neighbors,
                            minSize=(min_size, min_size))

    def detect(self, image: np.ndarray) -> list[Detection]:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        boxes, _, weights = self._cascade.detectMultiScale3(gray, outputRejectLevels=True,
                                                            **self._params)
        if len(boxes) == 0:
            return []
        weights = np.asarray(weights, dtype=np.float32).reshape(-1)
        # Haar "level weights" are unbounded margins; squash them into 0..1 for a score.
        scores = 1.0 / (1.0 + np.exp(-weights))
        xyxy = np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]]).astype(np.float32)
        return _nms(xyxy, scores, 0.3, gray.shape[:2])
