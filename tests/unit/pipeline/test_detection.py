"""Every face in real photos: the default detector on the labelled set, group photos and photos without
faces; landmarks and head pose on real faces (in-process pipeline, real models)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from faceserve.dev import accuracy, photos
from faceserve.pipeline import imaging
from tests.support import QUADRANT_EMOTIONS, jpeg, quadrant_emotions


@pytest.fixture(scope="module")
def labelled(fixtures):
    found = accuracy.labelled_photos()
    assert len(found) == 9 and sum(len(p.faces) for p in found) == 43
    return found


def boxes(analysis):
    return [(f.box.x1, f.box.y1, f.box.x2, f.box.y2) for f in analysis.faces]


def test_default_detector_finds_41_of_43_labelled_faces_with_at_most_2_stray_boxes(runner, labelled):
    assert runner.pipeline.default_detector == "auto"
    total = sum((accuracy.match(boxes(runner.analyze(p.image, None)), p.faces) for p in labelled),
                accuracy.Matching(0, 0, 0))
    assert total.labelled == 43 and total.found >= 41 and total.stray <= 2, total


@pytest.mark.parametrize("detector", ["auto", "faceboxes"])
def test_no_face_in_photos_without_people(runner, fixtures, detector):
    found = {name: len(runner.analyze(image, detector).faces) for name, image in accuracy.faceless_photos().items()}
    assert found == {"chelsea": 0, "coffee": 0, "rocket": 0, "dogs": 0}


@pytest.mark.parametrize("detector", ["auto", "faceboxes"])
def test_solvay_conference_six_of_six(runner, fixtures, detector):
    analysis = runner.analyze(photos.fixture("solvay_conference.jpg"), detector)
    found = boxes(analysis)
    assert len(found) == 6
    assert all(60 <= x2 - x1 <= 160 for x1, _, x2, _ in found)  # FaceBoxes' boxes are tight: 80-95 px
    assert all(accuracy.iou(a, b) < 0.1 for i, a in enumerate(found) for b in found[i + 1:])  # six people


def test_blazeface_still_misses_the_solvay_faces_that_auto_finds(runner, fixtures):
    assert runner.analyze(photos.fixture("solvay_conference.jpg"), "blazeface").faces == []


def test_emotion_grid_with_the_default_detector(runner, emotion_grid):
    analysis = runner.analyze(emotion_grid, None)
    assert analysis.detector == "auto" and len(analysis.faces) == 4
    assert quadrant_emotions(analysis) == QUADRANT_EMOTIONS


def test_astronaut_one_happy_woman_with_the_default_detector(runner, gender_age_built):
    (face,) = runner.analyze(photos.astronaut(), None).faces
    assert (face.emotion.label, face.gender.label) == ("happy", "female")


def _inside(face, tolerance: float = 0.0) -> bool:
    margin = tolerance * (face.box.x2 - face.box.x1)
    return all(face.box.x1 - margin <= x <= face.box.x2 + margin and face.box.y1 - margin <= y <= face.box.y2 + margin
               for x, y in face.landmarks)


def _upright(face) -> bool:
    """Eyes above the nose tip, the nose tip above the mouth corners."""
    (_, left_eye_y), (_, right_eye_y), (_, nose_y), (_, mouth_left_y), (_, mouth_right_y) = face.landmarks
    return max(left_eye_y, right_eye_y) < nose_y < min(mouth_left_y, mouth_right_y)


@pytest.mark.parametrize("detector", ["auto", "blazeface", "haar"])
def test_five_landmarks_land_on_each_face_of_the_grid(runner, emotion_grid, detector):
    analysis = runner.analyze(emotion_grid, detector)
    assert len(analysis.faces) == 4 and analysis.models["landmarks"] == "face_landmarks:1"
    for face in analysis.faces:
        assert len(face.landmarks) == 5 and _inside(face) and _upright(face)
        (left_eye_x, _), (right_eye_x, _), _, (mouth_left_x, _), (mouth_right_x, _) = face.landmarks
        assert left_eye_x < right_eye_x and mouth_left_x < mouth_right_x  # image order


def test_landmarks_on_the_labelled_faces(runner, labelled):
    """Small, turned faces (24-40 px): the points of a turned face reach the edge of FaceBoxes' tight box,
    so they are held to the box enlarged by a tenth of its width."""
    faces = [f for p in labelled for f in runner.analyze(p.image, None).faces]
    assert 43 <= len(faces) <= 45  # the labelled faces and the stray boxes (1 measured)
    assert all(_inside(f, tolerance=0.1) for f in faces)
    assert sum(_upright(f) for f in faces) >= 43


def test_astronaut_faces_the_camera(runner):
    (face,) = runner.analyze(photos.astronaut(), None).faces
    assert _inside(face) and _upright(face)
    assert abs(face.pose.yaw) <= 15 and abs(face.pose.roll) <= 15


@pytest.mark.parametrize("orientation, k", [(6, 1), (8, -1), (3, 2)])
def test_landmarks_follow_exif_rotation(runner, orientation, k):
    upright = photos.astronaut()
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = np.ascontiguousarray(np.rot90(upright, k=k))
    baseline = runner.analyze(imaging.decode(jpeg(upright, quality=95)), None)
    turned = runner.analyze(imaging.decode(jpeg(stored, quality=95, exif=exif)), None)
    (a,), (b,) = turned.faces, baseline.faces
    assert np.abs(np.array(a.landmarks) - np.array(b.landmarks)).max() < 4
    assert abs(a.pose.yaw - b.pose.yaw) < 3 and abs(a.pose.roll - b.pose.roll) < 3


def test_mirroring_negates_yaw_and_roll_and_keeps_pitch(runner, labelled):
    """Measured: 37 of the 44 faces found (43 labelled, 1 stray) within 5 degrees, median 2.7; the misses
    are the smallest turned faces (24-38 px, where the mesh itself is not mirror-consistent: 6.6, 7.1,
    11.3 and 18.6 degrees) and four between 5.05 and 5.45 degrees."""
    deviations = []
    for photo in labelled:
        width = photo.image.shape[1]
        original = runner.analyze(photo.image, None).faces
        mirrored = runner.analyze(np.ascontiguousarray(photo.image[:, ::-1]), None).faces
        for face in original:
            centre = (width - (face.box.x1 + face.box.x2) / 2, (face.box.y1 + face.box.y2) / 2)
            twin = min(mirrored, key=lambda g: abs((g.box.x1 + g.box.x2) / 2 - centre[0])
                       + abs((g.box.y1 + g.box.y2) / 2 - centre[1]))
            deviations.append(max(abs(face.pose.yaw + twin.pose.yaw), abs(face.pose.roll + twin.pose.roll),
                                  abs(face.pose.pitch - twin.pose.pitch)))
    deviations = np.array(deviations)
    assert len(deviations) >= 43
    assert np.median(deviations) <= 3
    assert (deviations <= 5).mean() >= 0.8, np.sort(deviations)[-10:]


def test_annotate_draws_landmarks_on_request(runner, emotion_grid):
    from faceserve.pipeline.annotate import LANDMARK_COLOUR, annotate
    analysis = runner.analyze(emotion_grid, None)
    plain, dotted = annotate(emotion_grid, analysis), annotate(emotion_grid, analysis, landmarks=True)
    for face in analysis.faces:
        for x, y in face.landmarks:
            assert tuple(dotted[round(y), round(x)]) == LANDMARK_COLOUR
            assert tuple(plain[round(y), round(x)]) != LANDMARK_COLOUR
