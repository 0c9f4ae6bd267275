"""BlazeFace's own decoding on synthetic outputs: anchors, and boxes mapped back through the letterbox."""

from __future__ import annotations

import numpy as np
import pytest

from faceserve.models.crops import Letterbox, letterbox
from faceserve.models.detectors.blazeface import blazeface_anchors, decode_blazeface


def test_blazeface_anchor_layout():
    anchors = blazeface_anchors(128)
    assert anchors.shape == (896, 2)
    assert np.allclose(anchors[0], [0.5 / 16, 0.5 / 16]) and np.allclose(anchors[1], anchors[0])
    assert np.allclose(anchors[512], [0.5 / 8, 0.5 / 8]) and np.allclose(anchors[517], anchors[512])
    assert np.allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def test_letterbox_maps_boxes_back_to_the_original_image():
    image = np.zeros((100, 300, 3), np.uint8)
    square, frame = letterbox(image, 128)
    assert square.shape == (128, 128, 3) and frame == Letterbox(scale=300 / 128, pad_x=0, pad_y=100)
    # one anchor firing with a box centred on it, 16 input pixels wide
    regressors = np.zeros((896, 16), np.float32)
    logits = np.full((896, 1), -50.0, np.float32)
    regressors[728, 2:4] = 16  # cell (4, 4) of the 8x8 grid: inside the image
    logits[728] = 5.0
    (detection,) = decode_blazeface(regressors, logits, frame, 128, image.shape[:2])
    cx, cy = blazeface_anchors(128)[728] * 128
    expected = np.array([cx - 8, cy - 8, cx + 8, cy + 8]) * frame.scale - [0, 100, 0, 100]
    assert np.allclose(detection.box, np.clip(expected, 0, [300, 100, 300, 100]), atol=1e-3)
    assert detection.score == pytest.approx(1 / (1 + np.exp(-5.0)))
