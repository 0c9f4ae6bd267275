"""FaceBoxes' input canvas, its box decoding, and when the auto detector runs its fine pass and its second
detector family, and how it merges that family's faces."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np

from faceserve.models.detectors import Detection, faceboxes
from faceserve.models.detectors.faceboxes import COARSE_SIDE, GRID, AutoDetector, FaceBoxes
from faceserve.models.spec import ModelSpec

SPEC = ModelSpec(name="faceboxes", task="face_detector", decoder="faceboxes", input_name="input", height=-1,
                 width=-1, channels=3, output_names=("boxes", "scores"), output_dims=((-1, 4), (-1,)),
                 colour="rgb", scale=1.0, offset=0.0, score_threshold=0.5, nms_iou=0.3)


def test_canvas_scales_down_never_up_and_pads_to_the_grid():
    batch, scale = faceboxes.canvas(np.full((480, 640, 3), 7, np.uint8), COARSE_SIDE)
    assert scale == 0.5 and batch.shape == (1, 256, 384, 3) and batch.dtype == np.float32
    assert (batch[0, :240, :320] == 7).all() and (batch[0, 240:] == 0).all() and (batch[0, :, 320:] == 0).all()
    small, scale = faceboxes.canvas(np.zeros((100, 130, 3), np.uint8), COARSE_SIDE)
    assert scale == 1.0 and small.shape == (1, GRID, 2 * GRID, 3)


def test_decode_gives_image_pixels():
    boxes = np.array([[0.25, 0.5, 0.5, 0.75]], np.float32)  # ymin, xmin, ymax, xmax of a 256x384 input
    xyxy, scores = faceboxes.decode(boxes, np.array([0.9], np.float32), (256, 384), scale=0.5)
    assert np.allclose(xyxy, [[384, 128, 576, 256]]) and scores.tolist() == [np.float32(0.9)]


class Model:
    """A backend answering fixed candidates (normalised to whatever input it gets), counting its calls."""

    def __init__(self, candidates):
        self.candidates = candidates  # [(ymin, xmin, ymax, xmax, score)]
        self.shapes = []

    async def infer(self, spec, batch):
        self.shapes.append(batch.shape[1:3])
        rows = np.array(self.candidates, np.float32).reshape(-1, 5)
        return {"boxes": rows[None, :, :4], "scores": rows[None, :, 4]}


def passes(detector_class, image_shape, candidates) -> int:
    model = Model(candidates)
    asyncio.run(detector_class(SPEC, model).detect(np.zeros((*image_shape, 3), np.uint8)))
    return len(model.shapes)


def test_auto_stops_after_the_coarse_pass_on_one_clear_face():
    one_face = [(0.2, 0.3, 0.7, 0.6, 0.95), (0.8, 0.8, 0.9, 0.9, 0.15)]  # a face of half the canvas, noise
    assert passes(AutoDetector, (480, 640), one_face) == 1
    assert passes(FaceBoxes, (480, 640), one_face) == 2


def test_auto_looks_closer_where_the_coarse_pass_leaves_room():
    assert passes(AutoDetector, (480, 640), []) == 2  # nothing found
    two_faces = [(0.1, 0.1, 0.4, 0.3, 0.9), (0.1, 0.6, 0.4, 0.8, 0.9)]
    assert passes(AutoDetector, (480, 640), two_faces) == 2  # a group
    near_miss = [(0.2, 0.3, 0.7, 0.6, 0.95), (0.8, 0.8, 0.9, 0.9, 0.4)]
    assert passes(AutoDetector, (480, 640), near_miss) == 2  # something face-like apart from the face
    small = [(0.4, 0.4, 0.5, 0.5, 0.95)]  # 38 px wide at the coarse scale
    assert passes(AutoDetector, (480, 640), small) == 2


def test_a_photo_no_larger_than_the_coarse_canvas_is_seen_once():
    assert passes(AutoDetector, (200, 300), []) == 1
    assert passes(FaceBoxes, (200, 300), []) == 1


def found(detector_class, candidates, image_shape=(480, 640)):
    return asyncio.run(detector_class(SPEC, Model(candidates)).detect(np.zeros((*image_shape, 3), np.uint8)))


def test_auto_answers_boxes_from_the_unsure_floor_and_flags_those_under_the_threshold():
    sure, unsure, faint = (0.1, 0.1, 0.4, 0.3, 0.9), (0.5, 0.6, 0.9, 0.9, 0.3), (0.5, 0.1, 0.9, 0.4, 0.2)
    auto = AutoDetector(SPEC, Model([sure, unsure, faint]))
    boxes = asyncio.run(auto.detect(np.zeros((480, 640, 3), np.uint8)))
    assert [round(d.score, 2) for d in boxes] == [0.9, 0.3]  # 0.2 is under the floor
    assert [auto.unsure(d) for d in boxes] == [False, True]
    assert faceboxes.UNSURE_FLOOR == 0.25 < SPEC.score_threshold


def test_faceboxes_answers_sure_boxes_only():
    boxes = found(FaceBoxes, [(0.1, 0.1, 0.4, 0.3, 0.9), (0.5, 0.6, 0.9, 0.9, 0.3)])
    assert [round(d.score, 2) for d in boxes] == [0.9]
    assert FaceBoxes.unsure_floor is None and not FaceBoxes(SPEC, None).unsure(boxes[0])


class SecondFamily:
    """A second detector answering fixed detections, counting its calls."""

    def __init__(self, detections):
        self.detections, self.calls = detections, 0

    async def detect(self, image):
        self.calls += 1
        return list(self.detections)


def with_second(candidates, detections, image_shape=(480, 640)):
    auto = AutoDetector(SPEC, Model(candidates))
    auto.second = SecondFamily(detections)
    return auto, asyncio.run(auto.detect(np.zeros((*image_shape, 3), np.uint8)))


def test_the_second_family_runs_only_where_the_coarse_pass_leaves_room():
    one_face = [(0.2, 0.3, 0.7, 0.6, 0.95)]
    auto, boxes = with_second(one_face, [Detection((10.0, 10.0, 60.0, 60.0), 0.9)])
    assert auto.second.calls == 0 and len(boxes) == 1
    auto, boxes = with_second([], [Detection((10.0, 10.0, 60.0, 60.0), 0.9)])
    assert auto.second.calls == 1 and [d.box for d in boxes] == [(10.0, 10.0, 60.0, 60.0)]
    auto, _ = with_second([], [], image_shape=(200, 300))  # no fine pass at this size, but the second family looks
    assert auto.second.calls == 1 and len(auto.backend.shapes) == 1


def test_the_second_familys_new_faces_come_back_unsure_and_never_displace_a_sure_box():
    sure = (0.1, 0.1, 0.4, 0.3, 0.9)  # x 64-192, y 48-192 in a 480x640 photo
    unsure = (0.5, 0.6, 0.9, 0.9, 0.3)  # x 384-576, y 240-432
    on_sure = Detection((70.0, 50.0, 190.0, 190.0), 0.99)  # the sure face again, scored higher
    on_unsure = Detection((390.0, 245.0, 570.0, 430.0), 0.8)  # the unsure face, scored higher
    new = Detection((250.0, 20.0, 330.0, 100.0), 0.6)  # a face FaceBoxes did not see at all
    auto, boxes = with_second([sure, unsure], [on_sure, on_unsure, new])
    assert [(round(d.score, 2), auto.unsure(d)) for d in boxes] == [(0.9, False), (0.8, True), (0.6, True)]
    assert boxes[1] == dataclasses.replace(on_unsure, unsure=True) and boxes[2].box == new.box
