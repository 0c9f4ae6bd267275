"""Where each face's features are: MediaPipe's face mesh on the face's square crop, reduced to the
five landmarks later stages use (alignment, drawing), and the head's pose from the mesh in 3D.

The model (`face_landmark.tflite`, 192x192 RGB in 0..1) answers 468 points (x, y in input pixels,
z a relative depth on about the same scale as x) and a face-presence logit. It runs like a head,
batched across faces and requests, but before the heads, because aligned heads need its points.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

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

    def batch(self, image: np.ndarray, boxes: Sequence[Sequence[float]]) -> tuple[np.ndarray, list[np.ndarray]]:
        """The model's input rows and, per face, the affine map from image to input pixels."""
        transforms = [crops.square_transform(box, self.spec) for box in boxes]
        return np.stack([crops.warped_face(image, t, self.spec) for t in transforms]), transforms

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
        points[:, 2] = mesh[:, 2] * back[0, 0]  # depth on the same scale as x
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
