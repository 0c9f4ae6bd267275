"""Per-face quality (`faceserve/pipeline/quality.py`): the measures on synthetic arrays, then on real faces found by
the real models, where the enrolment bars' measured basis (docs/identity.md) is checked again."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceserve.dev import photos
from faceserve.models.landmarks import Placement
from faceserve.pipeline import quality
from faceserve.pipeline.quality import EnrolmentBars
from tests.support import FIXTURES

BARS = EnrolmentBars()
MARGIN = 1.5  # every enrolment photo's size and sharpness are at least this many times their bars


def checkerboard(side: int = 256, square: int = 8) -> np.ndarray:
    cells = (np.indices((side, side)) // square).sum(axis=0) % 2
    return np.repeat((cells * 255).astype(np.uint8)[:, :, None], 3, axis=2)


def placement(yaw: float, pitch: float, roll: float, presence: float = 0.97) -> Placement:
    return Placement(presence, np.zeros((5, 2)), yaw, pitch, roll)


def test_sharpness_falls_with_blur_and_is_zero_on_a_flat_face():
    board = checkerboard()
    box = (0, 0, 256, 256)
    sharp = quality.sharpness(board, box)
    blurred = [quality.sharpness(cv2.GaussianBlur(board, (0, 0), sigma), box) for sigma in (1, 2, 4)]
    assert sharp > blurred[0] > blurred[1] > blurred[2] > 0
    assert quality.sharpness(np.full((100, 100, 3), 128, np.uint8), (10, 10, 90, 90)) == 0


def test_sharpness_reads_a_face_at_one_size_whatever_its_size_in_the_photo():
    """The same face at twice the pixels (resampled to SHARPNESS_SIDE either way) reads about the same."""
    board = checkerboard(256, 16)
    doubled = cv2.resize(board, (512, 512), interpolation=cv2.INTER_NEAREST)
    assert quality.sharpness(doubled, (0, 0, 512, 512)) == pytest.approx(quality.sharpness(board, (0, 0, 256, 256)),
                                                                          rel=0.05)


def test_a_box_cut_by_the_frame_is_measured_on_what_the_photo_holds_and_a_sliver_reads_zero():
    board = checkerboard(128)
    assert quality.sharpness(board, (-40, -40, 64, 64)) == quality.sharpness(board, (0, 0, 64, 64))
    assert quality.sharpness(board, (127.6, 10, 200, 90)) == 0.0
    assert quality.sharpness(board[:, :, 0], (0, 0, 64, 64)) == quality.sharpness(board, (0, 0, 64, 64))


def test_turn_is_the_larger_of_yaw_and_pitch_and_roll_does_not_count():
    assert quality.turn(placement(-12.5, 31.0, 80.0)) == 31.0
    assert quality.turn(placement(-48.0, 3.0, -2.0)) == 48.0


def test_measure_gives_sizes_in_pixels_and_nulls_without_a_landmark_model():
    board = checkerboard()
    measured = quality.measure(board, (10.25, 20.0, 90.5, 140.0), placement(10.123, -20.456, 5.0, 0.987654))
    assert (measured.width, measured.height, measured.size, measured.turn, measured.presence) == (
        80.2, 120.0, 80.2, 20.46, 0.9877)
    assert measured.sharpness == round(quality.sharpness(board, (10.25, 20.0, 90.5, 140.0)), 1) > 0
    bare = quality.measure(board, (0, 0, 50, 40), None)
    assert (bare.size, bare.turn, bare.presence) == (40.0, None, None)


def test_the_bars_name_every_measure_that_fails_and_none_of_a_good_face():
    good = quality.measure(checkerboard(), (0, 0, 200, 220), placement(5, 5, 0))
    assert BARS.failures(good) == []
    bad = good.model_copy(update={"size": 24.0, "sharpness": 50.5, "turn": 70.0})
    assert BARS.failures(bad) == ["too small (24 px on its smaller side, the bar is 40 px)",
                                  "too blurred (sharpness 50.5, the bar is 100)",
                                  "too turned (70 degrees from the camera, the bar is 30 degrees)"]
    assert BARS.failures(bad.model_copy(update={"turn": None})) == BARS.failures(bad)[:2]  # no landmark model
    at_the_bars = good.model_copy(update={"size": 40.0, "sharpness": 100.0, "turn": 30.0})
    assert BARS.failures(at_the_bars) == []


# ---- real faces, real models ------------------------------------------------------------------


def enrolment_photos() -> dict[str, np.ndarray]:
    folder = FIXTURES / "identity" / "enroll"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the identity photos are needed")
    found = {f"{path.parent.name}/{path.name}": photos.load_rgb(path) for path in sorted(folder.glob("*/*"))}
    return {**found, "astronaut": photos.astronaut()}


def only_face(runner, image):
    (face,) = runner.analyze(image).faces
    return face


def test_every_answered_face_carries_its_quality(runner):
    face = only_face(runner, photos.astronaut())
    assert face.quality.size == round(min(face.box.x2 - face.box.x1, face.box.y2 - face.box.y1), 1)
    assert face.quality.turn == round(max(abs(face.pose.yaw), abs(face.pose.pitch)), 2)
    assert 0.5 <= face.quality.presence <= 1 and face.quality.sharpness > BARS.min_sharpness


def test_every_enrolment_photo_passes_the_bars_with_margin_and_its_degraded_copies_fail(runner):
    for name, image in enrolment_photos().items():
        face = only_face(runner, image)
        measured = face.quality
        assert measured.size >= MARGIN * BARS.min_face_px, (name, measured)
        assert measured.sharpness >= MARGIN * BARS.min_sharpness, (name, measured)
        assert measured.turn <= BARS.max_turn_degrees - 5, (name, measured)
        for face in runner.analyze(cv2.GaussianBlur(image, (0, 0), 4)).faces:  # the astronaut's is not found
            assert "too blurred" in [failure.split(" (")[0] for failure in BARS.failures(face.quality)], (name, face)
        scale = 24 / measured.size
        small = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
        for face in runner.analyze(small).faces:  # the detector may not even find the face at 24 px
            assert BARS.failures(face.quality)[0].startswith("too small"), (name, face.quality)
