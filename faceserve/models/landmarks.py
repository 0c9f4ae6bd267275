"""Where each face's features are: MediaPipe's face mesh on the face's square crop, reduced to the
five landmarks later stages use (alignment, drawing), and the head's pose from the mesh in 3D.

The model (`face_landmark.tflite`, 192x192 RGB in 0..1) answers 468 points (x, y in input pixels,
z a relative depth on about the same scale as x) and a face-presence logit. It runs like a head,
batched across faces and requests, but before the heads, because aligned heads need its points.

It is made for upright faces: MediaPipe's own graph always turns its crop by the detector's eye keypoints (or the last
frame's mesh). Here a face is looked at on a crop turned by its detector's eye line where the detector has one, else
square with the image, and again on a crop turned by the roll the last look read while that roll is far from the
crop's own turn (`LandmarkModel.locate`): the points are mapped back to the photo either way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import Awaitable, Callable, Sequence

import cv2
import numpy as np

from faceserve.models import crops
from faceserve.models.decoder import Decoder, sigmoid
from faceserve.models.spec import ModelSpec

MESH_POINTS = 468
# MediaPipe canonical mesh indices. Image order for an upright face: the feature on the image's left
# (the person's right) first, matching `crops.ALIGNMENT_TEMPLATE`.
EYE_CORNERS = ((33, 133), (362, 263))
NOSE_TIP = 1
MOUTH_CORNERS = (61, 291)
# Mirror-image pairs (image-left point, image-right point) across the face, and top-to-bottom pairs
# along its midline: the pose's axes are averaged over several, which steadies them on small faces.
ACROSS_PAIRS = ((33, 263), (133, 362), (61, 291), (234, 454), (70, 300), (105, 334), (98, 327),
                (172, 397), (132, 361))
DOWN_PAIRS = ((10, 152), (168, 17), (9, 200), (151, 175))


# MediaPipe's own bar for "the crop holds a face" (on the sigmoid of the presence logit). Detections
# under it are dropped: measured, the detectors' boxes on photos without people (a JPEG of skimage's
# coffee cup) score -3 as a logit, real faces of the test photos 7 to 34, the labelled set's smallest 0.3.
PRESENCE_THRESHOLD = 0.5

# The mesh reads a turned face's roll short, and is less sure of the face. Measured on the labelled photos turned 30°
# (docs/detection.md, tests/unit/pipeline/test_upright.py): on crops square with the image it reads their rolls at
# 8-20°, on crops turned by that 11-33°; a face it reads at 9° has presence 0.34 there, 0.94 two turns later and 0.99
# on a crop turned by BlazeFace's eyes (44°). On the photos as they are, a face read under 5° moves by 2° at most on a
# turned crop, one read at 5-10° by 3° at most. So a face is looked at again, its crop turned by the roll the last look
# read, while that roll is at least `TURN_AGAIN` from the last crop's own turn, `MOST_LOOKS` looks in all: the rolls of
# the faces turned 30° then agree with the same faces' rolls in the upright photos within 1.1° on average (6.2° at
# most; 13.1° and 35.9° with one look square with the image).
TURN_AGAIN = 5.0
MOST_LOOKS = 4


@dataclasses.dataclass(frozen=True)
class Placement:
    presence: float  # probability that the crop holds a face
    landmarks: np.ndarray  # [5, 2] image pixels: eyes, nose tip, mouth corners, in image order
    yaw: float  # degrees; positive when the face turns towards the image's left
    pitch: float  # degrees; positive when the face tilts up
    roll: float  # degrees; positive when the eye line slopes down towards the image's right


def five_points(mesh: np.ndarray) -> np.ndarray:
    """The five landmarks from a [468, >=2] mesh."""
    eyes = [mesh[list(corners), :2].mean(axis=0) for corners in EYE_CORNERS]
    return np.stack([*eyes, mesh[NOSE_TIP, :2], mesh[MOUTH_CORNERS[0], :2], mesh[MOUTH_CORNERS[1], :2]])


def head_pose(mesh: np.ndarray) -> tuple[float, float, float]:
    """Yaw, pitch and roll in degrees from the mesh's own 3D axes: across the face (mirror-image pairs)
    and down its midline (camera frame: x right, y down, z away from the camera)."""
    across = sum(mesh[right] - mesh[left] for left, right in ACROSS_PAIRS)
    down = sum(mesh[bottom] - mesh[top] for top, bottom in DOWN_PAIRS)
    x_axis = across / np.linalg.norm(across)
    y_axis = down - down.dot(x_axis) * x_axis
    y_axis /= np.linalg.norm(y_axis)
    z_axis = np.cross(x_axis, y_axis)
    # the rotation [x y z] read as roll (about the view axis) . yaw (about y) . pitch (about x)
    yaw = math.degrees(math.asin(float(np.clip(x_axis[2], -1, 1))))
    pitch = math.degrees(math.atan2(float(-y_axis[2]), float(z_axis[2])))
    roll = math.degrees(math.atan2(float(x_axis[1]), float(x_axis[0])))
    return yaw, pitch, roll


class LandmarkModel(Decoder):
    decoder = "facemesh"

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def batch(self, image: np.ndarray, boxes: Sequence[Sequence[float]],
              rolls: Sequence[float] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """The model's input rows and, per face, the affine map from image to input pixels; each crop turned by its
        face's roll (degrees, `Placement.roll`) when `rolls` are given, so that the mesh sees the face upright."""
        rolls = [0.0] * len(boxes) if rolls is None else rolls
        transforms = [crops.square_transform(box, self.spec, roll) for box, roll in zip(boxes, rolls)]
        return np.stack([crops.warped_face(image, t, self.spec) for t in transforms]), transforms

    async def locate(self, image: np.ndarray, boxes: Sequence[Sequence[float]],
                     infer: Callable[[np.ndarray], Awaitable[dict[str, np.ndarray]]],
                     rolls: Sequence[float | None] | None = None) -> list[Placement]:
        """Each face's placement, from its last look (the one turned nearest the roll the mesh reads): `infer(batch)`
        runs the model (one batched call per round of looks, of the faces still to look at); `rolls` are first guesses
        of the faces' rolls (a detector's eye line, `Detection.roll`), None where there is none (a crop square with
        the image)."""
        turns = [roll or 0.0 for roll in rolls] if rolls is not None else [0.0] * len(boxes)
        placements: list[Placement] = [None] * len(boxes)  # type: ignore[list-item]  # each set by the first round
        pending = list(range(len(boxes)))
        for _ in range(MOST_LOOKS):
            if not pending:
                break
            batch, transforms = await asyncio.to_thread(self.batch, image, [boxes[i] for i in pending],
                                                        [turns[i] for i in pending])
            for i, placement in zip(pending, self.decode(await infer(batch), transforms)):
                placements[i] = placement
            pending = [i for i in pending if abs(_turn(placements[i].roll - turns[i])) >= TURN_AGAIN]
            for i in pending:
                turns[i] = placements[i].roll
        return placements

    def decode(self, outputs: dict[str, np.ndarray], transforms: list[np.ndarray]) -> list[Placement]:
        mesh_name, presence_name = self.spec.output_names
        meshes = outputs[mesh_name].reshape(len(transforms), MESH_POINTS, 3)
        logits = outputs[presence_name].reshape(len(transforms)).astype(np.float64)
        presences = sigmoid(logits)
        return [self.place(mesh, transform, float(presence))
                for mesh, transform, presence in zip(meshes, transforms, presences)]

    @staticmethod
    def place(mesh: np.ndarray, transform: np.ndarray, presence: float = 1.0) -> Placement:
        """One face's placement from its mesh in input pixels and its crop's affine map."""
        back = cv2.invertAffineTransform(transform)
        points = np.empty_like(mesh, dtype=np.float64)
        points[:, :2] = mesh[:, :2] @ back[:, :2].T + back[:, 2]
        points[:, 2] = mesh[:, 2] * math.hypot(back[0, 0], back[1, 0])  # depth on the same scale as x (turned or not)
        yaw, pitch, roll = head_pose(points)
        return Placement(presence, five_points(points), yaw, pitch, roll)

    @staticmethod
    def consumed(spec: ModelSpec, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs as placement reads them: mesh points as fractions of the crop (what is mapped back
        to the photo), the presence logit as it is."""
        mesh, *rest = spec.output_names
        return {mesh: outputs[mesh] / spec.width, **{name: outputs[name] for name in rest}}

    @staticmethod
    def decisions(spec: ModelSpec, outputs: dict[str, np.ndarray]) -> np.ndarray:
        mesh, presence = (outputs[n] for n in spec.output_names)
        return presence.reshape(len(mesh), -1) > 0.0  # the face presence logit: 0 is p 0.5


def _turn(degrees: float) -> float:
    """The angle in (-180, 180]."""
    return 180.0 - (180.0 - degrees) % 360.0
