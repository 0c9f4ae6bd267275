"""BlazeFace (MediaPipe's short-range face detector): letterboxed input, SSD anchors, sigmoid scores.

The model runs on a backend; this module owns its input (the recipe's letterbox) and the
decoding of its raw outputs, which `convert`'s parity check uses too.
"""

from __future__ import annotations

import functools

import numpy as np

from faceserve.models import crops
from faceserve.models.crops import Letterbox
from faceserve.models.decoder import sigmoid
from faceserve.models.detectors.base import Detection, ModelDetector, nms
from faceserve.models.spec import ModelSpec

KEYPOINTS = 6  # eyes, nose tip, mouth centre, ear tragions (after the 4 box values of each row)
# The SSD anchor grids (stride, anchors per cell) of the short-range model (MediaPipe's
# face_detection_short_range_common.pbtxt: strides 8, 16, 16, 16, two anchors per layer, the 16s merged).
SHORT_RANGE = ((8, 2), (16, 6))


class BlazeFace(ModelDetector):
    name = decoder = "blazeface"
    rank = 30
    anchor_layout = SHORT_RANGE

    async def detect(self, image: np.ndarray) -> list[Detection]:
        batch, frame = crops.whole_image(image, self.spec)
        outputs = await self.backend.infer(self.spec, batch)
        regressors, logits = (outputs[n][0] for n in self.spec.output_names)
        return decode_blazeface(regressors, logits, frame, self.spec.height, image.shape[:2],
                                threshold=self.spec.score_threshold, nms_iou=self.spec.nms_iou,
                                layout=self.anchor_layout)

    @staticmethod
    def consumed(spec: ModelSpec, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Regressors / input size and sigmoid scores: the raw logits reach several hundred and the
        regressors are pixels, where float32 spacing alone is ~3e-5."""
        regressors, logits = (outputs[n] for n in spec.output_names)
        return {spec.output_names[0]: regressors / spec.height, spec.output_names[1]: scores(logits)}

    @staticmethod
    def decisions(spec: ModelSpec, outputs: dict[str, np.ndarray]) -> np.ndarray:
        regressors, logits = (outputs[n] for n in spec.output_names)
        return logits.reshape(len(regressors), -1) > 0.0  # logit 0 = p 0.5


@functools.lru_cache(maxsize=4)
def blazeface_anchors(size: int = 128, layout: tuple[tuple[int, int], ...] = SHORT_RANGE) -> np.ndarray:
    """SSD anchor centres (x, y), normalised, row-major per grid (short range at 128: 512 + 384 = 896)."""
    centres = []
    for stride, per_cell in layout:
        grid = size // stride
        ys, xs = np.mgrid[0:grid, 0:grid]
        cell = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(cell, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


def scores(logits: np.ndarray) -> np.ndarray:
    """Face probabilities from the raw logits."""
    return sigmoid(logits.astype(np.float64))


def decode_blazeface(regressors: np.ndarray, logits: np.ndarray, frame: Letterbox, size: int,
                     image_shape: tuple[int, int], threshold: float = 0.5,
                     nms_iou: float = 0.3, layout: tuple[tuple[int, int], ...] = SHORT_RANGE) -> list[Detection]:
    """Boxes (and keypoints) from one image's raw BlazeFace outputs ([anchors, 16] and [anchors, 1])."""
    probabilities = scores(logits.reshape(-1))
    keep = probabilities > threshold
    if not keep.any():
        return []
    anchors = blazeface_anchors(size, layout)[keep]
    reg = regressors.reshape(-1, 4 + 2 * KEYPOINTS)[keep] / size
    centre = anchors + reg[:, :2]
    half = reg[:, 2:4] / 2
    offset = np.array([frame.pad_x, frame.pad_y], dtype=np.float32)
    boxes = np.concatenate([centre - half, centre + half], axis=1) * size * frame.scale - np.tile(offset, 2)
    keypoints = (anchors[:, None, :] + reg[:, 4:].reshape(-1, KEYPOINTS, 2)) * size * frame.scale - offset
    return nms(boxes, probabilities[keep], nms_iou, image_shape, keypoints)
