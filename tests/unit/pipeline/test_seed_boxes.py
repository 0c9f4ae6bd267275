"""The seed app's second way of detecting (benchmarks/seed_boxes.py): the service's faces, unbatched, any thread."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from benchmarks.seed_boxes import FaceserveBoxes
from faceserve.dev import photos
from faceserve.errors import InvalidRequest
from faceserve.settings import Settings


@pytest.fixture(scope="module")
def seed_boxes(repository):
    return FaceserveBoxes(dataclasses.replace(Settings.from_env(), repository=repository))


def _boxes(detections) -> np.ndarray:
    return np.array([d.box for d in detections], np.float32).reshape(-1, 4)


def test_the_seed_finds_the_faces_the_service_finds(runner, seed_boxes, emotion_grid):
    images = {"astronaut": photos.astronaut(), "grace_hopper": photos.grace_hopper(), "emotion grid": emotion_grid,
              "solvay": photos.fixture("solvay_conference.jpg")}
    counts = {}
    for name, image in images.items():
        service, seed = runner.run(runner.pipeline.detect(image)), seed_boxes.detect(image)
        assert np.allclose(_boxes(seed), _boxes(service), atol=0.01), name
        counts[name] = len(seed)
    assert counts == {"astronaut": 1, "grace_hopper": 1, "emotion grid": 4, "solvay": 6}
    assert seed_boxes.default == runner.pipeline.default_detector == "auto"


def test_threads_at_once_get_the_boxes_one_thread_gets(seed_boxes, emotion_grid):
    images = [photos.astronaut(), emotion_grid, photos.grace_hopper(), emotion_grid] * 2
    alone = [_boxes(seed_boxes.detect(image)) for image in images]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda image: _boxes(seed_boxes.detect(image)), images))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))
    assert [len(b) for b in together] == [1, 4, 1, 4] * 2


def test_a_detector_it_does_not_have_is_refused_by_name(seed_boxes):
    with pytest.raises(InvalidRequest) as refused:
        seed_boxes.detect(photos.astronaut(), "dlib")
    assert refused.value.status == 400 and refused.value.body()["error"] == "unknown_detector"
    assert "'dlib'" in refused.value.message
