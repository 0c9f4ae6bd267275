"""The detector registry: what a repository can run, by name, and what parity compares for each."""

from __future__ import annotations

import numpy as np

from faceserve.models import detectors
from faceserve.models.decoder import decoder_for
from faceserve.models.detectors.blazeface import BlazeFace
from faceserve.models.detectors.haar import HaarDetector
from faceserve.models.spec import ModelSpec


def blazeface_spec() -> ModelSpec:
    return ModelSpec(name="face_detector", task="face_detector", decoder="blazeface", input_name="input",
                     height=128, width=128, channels=3, output_names=("regressors", "classificators"),
                     output_dims=((896, 16), (896, 1)), colour="rgb", scale=1 / 127.5, offset=-1.0, letterbox=True)


def test_in_process_detectors_need_no_model_and_model_detectors_need_theirs():
    assert list(detectors.build([], backend=None)) == ["haar"]
    built = detectors.build([blazeface_spec()], backend=None)
    assert list(built) == ["blazeface", "haar"]
    assert isinstance(built["blazeface"], BlazeFace) and isinstance(built["haar"], HaarDetector)
    assert built["blazeface"].spec.name == "face_detector" and built["haar"].spec is None


def test_parity_compares_what_the_decoding_reads():
    spec = blazeface_spec()
    outputs = {"regressors": np.full((1, 896, 16), 64.0), "classificators": np.zeros((1, 896, 1))}
    consumed = decoder_for(spec).consumed(spec, outputs)
    assert np.allclose(consumed["regressors"], 0.5) and np.allclose(consumed["classificators"], 0.5)
    head = ModelSpec(name="e", task="emotion", decoder="softmax", input_name="input", height=1, width=1,
                     channels=1, output_names=("p",), output_dims=((2,),), colour="gray", scale=1.0, offset=0.0)
    assert decoder_for(head).consumed(head, outputs) is outputs


def test_blazeface_keypoints_land_inside_their_box():
    from faceserve.models.crops import Letterbox
    from faceserve.models.detectors.blazeface import blazeface_anchors, decode_blazeface
    regressors = np.zeros((896, 16), np.float32)
    logits = np.full((896, 1), -50.0, np.float32)
    regressors[728, 2:4] = 16
    regressors[728, 4:16] = np.tile([-3.0, -2.0], 6)  # every keypoint a little up-left of the centre
    logits[728] = 5.0
    (detection,) = decode_blazeface(regressors, logits, Letterbox(1.0, 0, 0), 128, (128, 128))
    cx, cy = blazeface_anchors(128)[728] * 128
    assert len(detection.keypoints) == 6
    assert all(np.allclose(point, (cx - 3, cy - 2)) for point in detection.keypoints)
    x1, y1, x2, y2 = detection.box
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in detection.keypoints)


def test_the_default_says_why_and_a_fallback_says_what_is_missing():
    from faceserve.models.detectors import AutoDetector, default_reason
    auto_spec = ModelSpec(name="faceboxes", task="face_detector", decoder="faceboxes", input_name="input", height=-1,
                          width=-1, channels=3, output_names=("boxes", "scores"), output_dims=((-1, 4), (-1,)),
                          colour="rgb", scale=1.0, offset=0.0, score_threshold=0.5, nms_iou=0.3)
    built = detectors.build([auto_spec], backend=None)
    assert detectors.default(built) == "auto" and default_reason(built) == AutoDetector.reason
    assert "face mesh" in AutoDetector.reason
    fallback = default_reason(detectors.build([blazeface_spec()], backend=None))
    assert fallback.startswith("auto's model is not in this repository: blazeface is the first detector available")


def test_auto_gets_blazeface_full_as_its_second_family_where_the_repository_has_it():
    from faceserve.models.detectors import BlazeFaceFull
    faceboxes_spec = ModelSpec(name="faceboxes", task="face_detector", decoder="faceboxes", input_name="input",
                               height=-1, width=-1, channels=3, output_names=("boxes", "scores"),
                               output_dims=((-1, 4), (-1,)), colour="rgb", scale=1.0, offset=0.0)
    full_spec = ModelSpec(name="blazeface_full", task="face_detector", decoder="blazeface_full", input_name="input",
                          height=192, width=192, channels=3, output_names=("regressors", "classificators"),
                          output_dims=((2304, 16), (2304, 1)), colour="rgb", scale=1 / 127.5, offset=-1.0,
                          letterbox=True, score_threshold=0.5)
    built = detectors.build([faceboxes_spec, full_spec], backend=None)
    assert list(built) == ["auto", "faceboxes", "blazeface_full", "haar"]
    assert isinstance(built["auto"].second, BlazeFaceFull) and built["auto"].second is built["blazeface_full"]
    assert built["faceboxes"].second is None and built["blazeface_full"].anchor_layout == ((4, 1),)
    assert detectors.build([faceboxes_spec], backend=None)["auto"].second is None


def test_full_range_anchors_tile_a_stride_4_grid_one_per_cell():
    from faceserve.models.detectors.blazeface import blazeface_anchors
    from faceserve.models.detectors.blazeface_full import FULL_RANGE
    anchors = blazeface_anchors(192, FULL_RANGE)
    assert anchors.shape == (2304, 2) and np.allclose(anchors[0], [0.5 / 48, 0.5 / 48])
    assert np.allclose(anchors[1], [1.5 / 48, 0.5 / 48]) and np.allclose(anchors[48], [0.5 / 48, 1.5 / 48])


def test_a_detections_roll_is_its_eye_lines_slope():
    eyes = ((100.0, 50.0), (140.0, 90.0))  # down towards the image's right at 45 degrees
    assert detectors.Detection((80, 30, 160, 130), 0.9, keypoints=eyes + ((120.0, 80.0),)).roll == 45.0
    assert detectors.Detection((80, 30, 160, 130), 0.9, keypoints=eyes[::-1]).roll == -135.0  # upside down
    assert detectors.Detection((80, 30, 160, 130), 0.9).roll is None  # FaceBoxes and Haar give no eyes
