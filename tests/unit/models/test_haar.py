"""The Haar cascade on the labelled set: the faces it finds, alone and from several threads at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from faceserve.dev import accuracy
from faceserve.models.detectors.haar import HaarDetector


@pytest.fixture(scope="module")
def labelled(fixtures):
    return accuracy.labelled_photos()


def _boxes(detector: HaarDetector, photo) -> list[tuple[float, ...]]:
    return [d.box for d in detector.detect_sync(photo.image)]


def test_haar_finds_38_of_the_43_hand_boxed_faces(labelled):
    detector = HaarDetector()
    total = sum((accuracy.match(_boxes(detector, p), p.faces) for p in labelled), accuracy.Matching(0, 0, 0))
    assert (total.found, total.labelled, total.stray) == (38, 43, 2)


def test_threads_sharing_one_detector_get_the_boxes_one_thread_gets(labelled):
    """The service and the seed app both call one HaarDetector from many threads."""
    detector = HaarDetector()
    alone = {p.name: _boxes(detector, p) for p in labelled}
    rounds = [labelled[k:] + labelled[:k] for k in range(4)]  # each thread in its own order: photos overlap
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda photos: [(p.name, _boxes(detector, p)) for p in photos], rounds))
    differing = [(name, boxes, alone[name]) for answers in together for name, boxes in answers if boxes != alone[name]]
    assert differing == []
    assert sum(map(len, alone.values())) == 40  # the 38 faces and 2 stray boxes: not an empty answer everywhere
