"""Five landmarks and head pose from a face mesh; aligned crops put the landmarks on the template."""

from __future__ import annotations

import math

import cv2
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


def test_a_turned_crop_sees_the_face_upright_and_maps_back_to_the_photo():
    spec = mesh_spec(margin=0.25, square=True)
    box = (100.0, 50.0, 180.0, 150.0)
    transform = crops.square_transform(box, spec, 30.0)
    centre = np.array([140.0, 100.0])
    along = centre + 40 * np.array([math.cos(math.radians(30)), math.sin(math.radians(30))])  # on a 30° eye line
    assert np.allclose(transform[:, :2] @ centre + transform[:, 2], (96, 96))
    assert np.allclose(transform[:, :2] @ along + transform[:, 2], (96 + 40 * 192 / 150, 96))  # level in the crop
    assert np.array_equal(crops.square_transform(box, spec, 0.0), crops.square_transform(box, spec))
    mesh = synthetic_mesh(yaw=10, pitch=-5) * 0.5 + [96, 96, 0]  # upright in the crop
    placed = LandmarkModel.place(mesh, transform)
    assert np.allclose((placed.yaw, placed.pitch, placed.roll), (10, -5, 30), atol=1e-6)
    eyes = placed.landmarks[1] - placed.landmarks[0]
    assert math.degrees(math.atan2(eyes[1], eyes[0])) == pytest.approx(30, abs=1e-6)


class ReadsHalfTheTurn:
    """A stand-in for the mesh that, like the real one, reads a turned face's roll short: it finds the two bright eyes
    in each crop and answers a face turned by half their slope there, around the crop's centre."""

    def __init__(self, spec: ModelSpec):
        self.spec, self.batches = spec, []

    async def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.batches.append(len(batch))
        meshes = []
        for row in batch:
            count, _, _, centres = cv2.connectedComponentsWithStats((row[:, :, 0] > 0.5).astype(np.uint8))
            (left_x, left_y), (right_x, right_y) = sorted(centres[1:count].tolist())
            slope = math.degrees(math.atan2(right_y - left_y, right_x - left_x))
            meshes.append((synthetic_mesh(roll=slope / 2) * 0.5 + [96, 96, 0]).reshape(-1))
        return {"mesh": np.array(meshes), "face_flag": np.full((len(batch), 1), 8.0)}


def eyes_at(image: np.ndarray, centre: tuple[float, float], roll: float) -> None:
    offset = 30 * np.array([math.cos(math.radians(roll)), math.sin(math.radians(roll))])
    for eye in (np.array(centre) - offset, np.array(centre) + offset):
        cv2.circle(image, tuple(int(round(v)) for v in eye), 6, (255, 255, 255), -1)


def test_a_face_is_looked_at_again_turned_until_the_look_reads_it_upright(monkeypatch):
    import asyncio
    monkeypatch.setattr(landmarks, "TURN_AGAIN", 5.0)
    monkeypatch.setattr(landmarks, "MOST_LOOKS", 4)
    spec = mesh_spec(margin=0.25, square=True)
    image = np.zeros((300, 500, 3), np.uint8)
    eyes_at(image, (120, 150), 44.0)  # a face turned 44°
    eyes_at(image, (380, 150), 2.0)  # an upright one
    boxes = [(60.0, 90.0, 180.0, 210.0), (320.0, 90.0, 440.0, 210.0)]
    mesh = ReadsHalfTheTurn(spec)
    turned, upright = asyncio.run(LandmarkModel(spec).locate(image, boxes, mesh))
    # read at 22°, then 33°, 38.5°, 41.25°: four looks, the last three of the turned face alone (one batch each)
    assert mesh.batches == [2, 1, 1, 1]
    assert turned.roll == pytest.approx(41.25, abs=1.0) and upright.roll == pytest.approx(1.0, abs=1.0)
    assert turned.presence == pytest.approx(1 / (1 + math.exp(-8.0)))


def test_a_detectors_eye_line_is_the_first_look(monkeypatch):
    import asyncio
    spec = mesh_spec(margin=0.25, square=True)
    image = np.zeros((300, 300, 3), np.uint8)
    eyes_at(image, (150, 150), 40.0)
    mesh = ReadsHalfTheTurn(spec)
    (placed,) = asyncio.run(LandmarkModel(spec).locate(image, [(90.0, 90.0, 210.0, 210.0)], mesh, [38.0]))
    assert mesh.batches == [1] and placed.roll == pytest.approx(39.0, abs=1.0)  # 2° left to read: one look
