"""Five landmarks and head pose from a face mesh; aligned crops put the landmarks on the template."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceserve.models import crops, landmarks
from faceserve.models.landmarks import LandmarkModel
from faceserve.models.spec import CropRecipe, ModelSpec


def synthetic_mesh(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """A symmetric 3D point set with the mesh's indices: each across-pair mirrored in x, each down-pair on
    the midline, then turned by the given angles (degrees, the conventions `head_pose` documents)."""
    mesh = np.zeros((landmarks.MESH_POINTS, 3))
    rng = np.random.default_rng(1)
    for left, right in landmarks.ACROSS_PAIRS:
        x, y, z = rng.uniform(10, 60), rng.uniform(-50, 50), rng.uniform(-20, 20)
        mesh[left], mesh[right] = (-x, y, z), (x, y, z)
    for top, bottom in landmarks.DOWN_PAIRS:
        mesh[top], mesh[bottom] = (0, -rng.uniform(30, 80), 0), (0, rng.uniform(30, 80), 0)
    # yaw takes the x axis towards +z (the image-right side goes away), pitch the y axis (down) towards -z
    # (the chin comes forward as the face tilts up), roll the x axis towards +y
    a, b, c = (math.radians(v) for v in (yaw, pitch, roll))
    turn_yaw = np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
    turn_pitch = np.array([[1, 0, 0], [0, math.cos(b), math.sin(b)], [0, -math.sin(b), math.cos(b)]])
    turn_roll = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return mesh @ (turn_roll @ turn_yaw @ turn_pitch).T


@pytest.mark.parametrize("angles", [(0, 0, 0), (25, 0, 0), (0, 15, 0), (0, 0, -20), (-30, 10, 12)])
def test_head_pose_recovers_the_turn(angles):
    assert np.allclose(landmarks.head_pose(synthetic_mesh(*angles)), angles, atol=1e-6)


def test_mirroring_negates_yaw_and_roll_and_keeps_pitch():
    mesh = synthetic_mesh(20, 10, 8)
    mirrored = mesh * [-1, 1, 1]
    for left, right in landmarks.ACROSS_PAIRS:  # the image-left point is now the other one
        mirrored[[left, right]] = mirrored[[right, left]]
    yaw, pitch, roll = landmarks.head_pose(mirrored)
    assert np.allclose((yaw, pitch, roll), (-20, 10, -8), atol=1e-6)


def test_five_points_in_image_order():
    mesh = np.zeros((landmarks.MESH_POINTS, 3))
    for (a, b), x in zip(landmarks.EYE_CORNERS, (10, 30)):
        mesh[a, :2], mesh[b, :2] = (x - 2, 20), (x + 2, 20)
    mesh[landmarks.NOSE_TIP, :2] = (20, 30)
    mesh[landmarks.MOUTH_CORNERS[0], :2], mesh[landmarks.MOUTH_CORNERS[1], :2] = (12, 40), (28, 40)
    assert landmarks.five_points(mesh).tolist() == [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]]


def mesh_spec(**crop) -> ModelSpec:
    return ModelSpec(name="m", task="landmarks", decoder="facemesh", input_name="input", height=192, width=192,
                     channels=3, output_names=("mesh", "face_flag"), output_dims=((1, 1, 1404), (1, 1, 1)),
                     colour="rgb", scale=1 / 255, offset=0.0, crop=CropRecipe(**crop))


def test_points_found_in_the_crop_map_back_to_the_photo():
    spec = mesh_spec(margin=0.25, square=True)
    box = (100.0, 50.0, 180.0, 150.0)  # taller than wide: the crop is a 150 px square around its centre
    transform = crops.square_transform(box, spec)
    mesh = synthetic_mesh() * 0.5 + [96, 96, 0]  # a face around the crop's centre
    placed = LandmarkModel.place(mesh, transform)
    in_crop = landmarks.five_points(mesh)
    assert np.allclose(placed.landmarks, (in_crop - 96) * 150 / 192 + [140, 100])
    assert np.allclose((placed.yaw, placed.pitch, placed.roll), (0, 0, 0), atol=1e-6)


def test_aligned_crops_put_the_landmarks_on_the_template():
    spec = ModelSpec(name="e", task="identity", decoder="embedding", input_name="input", height=112, width=112,
                     channels=3, output_names=("e",), output_dims=((8,),), colour="rgb", scale=1.0, offset=0.0,
                     crop=CropRecipe(align=True))
    template = crops.ALIGNMENT_TEMPLATE * 112
    angle, scale, shift = math.radians(20), 1.7, np.array([210.0, 140.0])
    turn = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    placed = template @ turn.T + shift  # the template turned, enlarged and moved: a face in a photo
    matrix = crops.alignment_transform(placed, spec)
    assert np.allclose(placed @ matrix[:, :2].T + matrix[:, 2], template, atol=1e-3)
    image = np.zeros((400, 400, 3), np.uint8)
    image[int(placed[2, 1]) - 2:int(placed[2, 1]) + 3, int(placed[2, 0]) - 2:int(placed[2, 0]) + 3] = 255  # the nose
    (row,) = crops.face_batch(image, [(0, 0, 400, 400)], spec, [placed])
    y, x = np.unravel_index(row[:, :, 0].argmax(), row.shape[:2])
    assert abs(x - template[2, 0]) <= 2 and abs(y - template[2, 1]) <= 2


def test_squared_boxes_keep_their_centre():
    assert crops.square_box((10, 20, 30, 80)) == (-10, 20, 50, 80)
