"""Detection accuracy on the labelled set (`../shared/fixtures/detection/`): 9 photos, 43 faces boxed
by hand (dlib's `examples/faces`), and photos that hold no human face. Used by the `detectors`
benchmark scenario and by the detection tests, so both judge a detector the same way.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Sequence

import numpy as np

from faceserve.dev import photos
from faceserve.dev.fixtures import FIXTURES

DETECTION_SET = FIXTURES / "detection"
LABEL_FILES = ("training.xml", "testing.xml")
# The hand boxes are tight (eyebrows to chin); detectors' box styles differ, so 0.5 would judge the style.
MATCH_IOU = 0.4

Box = Sequence[float]  # x1, y1, x2, y2


@dataclasses.dataclass(frozen=True)
class LabelledPhoto:
    name: str
    image: np.ndarray  # RGB
    faces: list[tuple[float, float, float, float]]


def labelled_photos(folder: Path = DETECTION_SET) -> list[LabelledPhoto]:
    """The labelled photos with their hand boxes; empty when the fixtures are absent."""
    found = []
    for label_file in LABEL_FILES:
        path = folder / label_file
        if not path.exists():
            continue
        for entry in ElementTree.parse(path).getroot().iter("image"):
            boxes = [(float(b.get("left")), float(b.get("top")),
                      float(b.get("left")) + float(b.get("width")), float(b.get("top")) + float(b.get("height")))
                     for b in entry.iter("box")]
            name = Path(entry.get("file")).name
            found.append(LabelledPhoto(name, photos.load_rgb(folder / name), boxes))
    return found


def faceless_photos(folder: Path = DETECTION_SET) -> dict[str, np.ndarray]:
    """Photos with no human face: skimage's (always here) and the fixtures' dogs (when present)."""
    found = dict(photos.no_face_photos())
    if (folder / "dogs.jpg").exists():
        found["dogs"] = photos.load_rgb(folder / "dogs.jpg")
    return found


def iou(a: Box, b: Box) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class Matching:
    found: int  # labelled faces matched by a box
    labelled: int
    stray: int  # boxes that match no labelled face (or a face already matched)

    def __add__(self, other: "Matching") -> "Matching":
        return Matching(self.found + other.found, self.labelled + other.labelled, self.stray + other.stray)

    @property
    def recall(self) -> float:
        return self.found / self.labelled if self.labelled else 1.0

    @property
    def precision(self) -> float:
        boxes = self.found + self.stray
        return self.found / boxes if boxes else 1.0


def match(detected: Sequence[Box], labelled: Sequence[Box], threshold: float = MATCH_IOU) -> Matching:
    """Greedy one-to-one matching, best overlaps first."""
    pairs = sorted(((iou(d, t), i, j) for i, d in enumerate(detected) for j, t in enumerate(labelled)),
                   reverse=True)
    used_boxes, used_faces = set(), set()
    for overlap, i, j in pairs:
        if overlap < threshold:
            break
        if i not in used_boxes and j not in used_faces:
            used_boxes.add(i)
            used_faces.add(j)
    return Matching(len(used_faces), len(labelled), len(detected) - len(used_boxes))
