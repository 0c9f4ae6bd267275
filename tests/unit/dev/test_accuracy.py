"""The labelled sets a detector is judged on: the hard variants' boxes follow their photos, counted photos are judged
by count."""

from __future__ import annotations

import numpy as np
import pytest

from faceserve.dev import accuracy
from faceserve.dev.accuracy import CUT_ACROSS, CUT_DOWN, LabelledPhoto, Matching

PHOTO = LabelledPhoto("p", np.zeros((200, 400, 3), np.uint8), [(20.0, 40.0, 70.0, 100.0), (300.0, 60.0, 350.0, 120.0)])


def test_a_tilted_photo_moves_each_box_with_its_centre_and_keeps_its_size():
    same = accuracy.tilted(PHOTO, 0)
    assert np.allclose(same.faces, PHOTO.faces)
    half_turn = accuracy.tilted(PHOTO, 180)
    assert np.allclose(half_turn.faces[0], (330.0, 100.0, 380.0, 160.0))  # centre (45, 70) -> (355, 130)


def test_the_cut_crops_through_the_outermost_faces_and_keeps_them_labelled():
    start = accuracy.cut(PHOTO, from_start=True)
    left, top = round(20 + CUT_ACROSS * 50), round(40 + CUT_DOWN * 60)
    assert start.image.shape == (200 - top, 400 - left, 3)
    assert start.faces[0] == (0, 0, 70.0 - left, 100.0 - top) and start.faces[1] == (300.0 - left, 60.0 - top,
                                                                                        350.0 - left, 120.0 - top)
    end = accuracy.cut(PHOTO, from_start=False)
    assert end.image.shape == (round(120 - CUT_DOWN * 60), round(350 - CUT_ACROSS * 50), 3) and len(end.faces) == 2


def test_the_exposure_changes_keep_black_and_white():
    ramp = np.array([[[0, 0, 0], [255, 255, 255], [128, 128, 128]]], np.uint8)
    dark, bright = accuracy.darkened(ramp), accuracy.brightened(ramp)
    assert dark[0, 0, 0] == 0 and dark[0, 2, 0] < 30 and bright[0, 1, 0] == 255 and bright[0, 2, 0] > 200


@pytest.mark.parametrize("boxes, expected", [(0, Matching(0, 3, 0)), (2, Matching(2, 3, 0)), (5, Matching(3, 3, 2))])
def test_counted_photos_are_judged_by_count(boxes, expected):
    counted = LabelledPhoto("c", PHOTO.image, [], count=3)
    assert accuracy.judge(counted, [(0, 0, 1, 1)] * boxes) == expected


def test_boxed_photos_are_judged_by_overlap():
    assert accuracy.judge(PHOTO, [PHOTO.faces[1], (200, 0, 220, 20)]) == Matching(1, 2, 1)
