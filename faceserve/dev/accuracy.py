"""Detection accuracy on the labelled set (`../shared/fixtures/detection/`): 9 photos, 43 faces boxed
by hand (dlib's `examples/faces`), and photos that hold no human face. Used by the `detectors`
benchmark scenario and by the detection tests, so both judge a detector the same way.

`labelled_sets` adds what else can be judged here: the same photos made hard the way real photos are (dark,
over-exposed, tilted, blurred, cut by the frame; the hand boxes follow each change), and the fixtures' other photos
with their faces counted (a set of portraits, small groups and the Solvay crop: judged by count, not by box).
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Sequence

import numpy as np

from faceserve.dev import photos
from faceserve.dev.fixtures import FIXTURES
from faceserve.models.detectors.base import iou

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
    count: int | None = None  # faces counted, not boxed (then `faces` is empty)


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


# Faces counted by eye on the fixtures' other photos (a face: both eyes, or one eye and the nose, visible).
COUNTED = {"images/solvay_conference.jpg": 6, "images/emotion_classification.jpg": 4,
           "detection/Tom_Cruise_avp_2014_4.jpg": 1, "identity/probe/alex_lacamoire1.jpg": 1,
           "identity/probe/johnsnow_test1.jpg": 1, "identity/probe/kit_with_rose.jpg": 2,
           "identity/probe/obama1.jpg": 1, "identity/probe/obama3.jpg": 1,
           "identity/probe/obama_and_biden.jpg": 3,  # the girl at the bottom right edge counts: her eyes and nose show
           "identity/probe/lin-manuel-miranda.png": 1}


def counted_photos(folder: Path = FIXTURES) -> list[LabelledPhoto]:
    """The fixtures' other photos with faces, counted (every enrolment photo holds one face), and the registry
    packages' one-face photos (skimage's astronaut and camera man, matplotlib's Grace Hopper)."""
    counts = dict(COUNTED) | {str(p.relative_to(folder)): 1 for p in sorted((folder / "identity" / "enroll").rglob("*"))
                              if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    found = [LabelledPhoto(name, photos.load_rgb(folder / name), [], count)
             for name, count in counts.items() if (folder / name).exists()]
    return found + [LabelledPhoto("astronaut", photos.astronaut(), [], 1),
                    LabelledPhoto("camera", photos.camera(), [], 1),  # many detectors miss it
                    LabelledPhoto("grace_hopper", photos.grace_hopper(), [], 1)]


def darkened(image: np.ndarray) -> np.ndarray:
    """An under-exposed photo: gamma 2.2, then a third of the light."""
    return np.clip(255 * (image / 255.0) ** 2.2 * 0.35, 0, 255).astype(np.uint8)


def brightened(image: np.ndarray) -> np.ndarray:
    """An over-exposed, washed-out photo: gamma 0.3."""
    return np.clip(255 * (image / 255.0) ** 0.3, 0, 255).astype(np.uint8)


def blurred(image: np.ndarray) -> np.ndarray:
    """Out of focus: a Gaussian blur of 1/400 of the long side."""
    import cv2
    return cv2.GaussianBlur(image, (0, 0), max(image.shape[:2]) / 400)


def tilted(photo: LabelledPhoto, degrees: float) -> LabelledPhoto:
    """The photo turned in its plane about its centre (the border repeated); each hand box keeps its size and follows
    its centre (a tilted head's tight box is a little larger: IoU >= 0.4 allows for it)."""
    import cv2
    height, width = photo.image.shape[:2]
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    image = cv2.warpAffine(photo.image, turn, (width, height), borderMode=cv2.BORDER_REPLICATE)
    faces = []
    for x1, y1, x2, y2 in photo.faces:
        cx, cy = turn @ np.array([(x1 + x2) / 2, (y1 + y2) / 2, 1.0])
        faces.append((cx - (x2 - x1) / 2, cy - (y2 - y1) / 2, cx + (x2 - x1) / 2, cy + (y2 - y1) / 2))
    return LabelledPhoto(photo.name, image, faces)


# How much of a face the frame cuts off in the `cut` set, across and down: what is left keeps one eye and the nose.
CUT_ACROSS, CUT_DOWN = 0.4, 0.15


def cut(photo: LabelledPhoto, from_start: bool) -> LabelledPhoto:
    """The photo cropped through its outermost faces: its leftmost face loses CUT_ACROSS of its width and its topmost
    CUT_DOWN of its height (`from_start`), else the rightmost and the bottom one; hand boxes clipped to the frame."""
    height, width = photo.image.shape[:2]
    if from_start:
        left = max(0, round(min(f[0] + CUT_ACROSS * (f[2] - f[0]) for f in photo.faces)))
        top = max(0, round(min(f[1] + CUT_DOWN * (f[3] - f[1]) for f in photo.faces)))
        right, bottom = width, height
    else:
        left, top = 0, 0
        right = min(width, round(max(f[2] - CUT_ACROSS * (f[2] - f[0]) for f in photo.faces)))
        bottom = min(height, round(max(f[3] - CUT_DOWN * (f[3] - f[1]) for f in photo.faces)))
    faces = []
    for x1, y1, x2, y2 in photo.faces:
        clipped = (max(x1, left) - left, max(y1, top) - top, min(x2, right) - left, min(y2, bottom) - top)
        # a face the crop leaves less of than the cut itself leaves is no longer a face by the counting rule
        if (clipped[2] - clipped[0]) >= (1 - CUT_ACROSS) * (x2 - x1) - 1 and \
                (clipped[3] - clipped[1]) >= (1 - CUT_DOWN) * (y2 - y1) - 1:
            faces.append(clipped)
    return LabelledPhoto(photo.name, np.ascontiguousarray(photo.image[top:bottom, left:right]), faces)


def labelled_sets() -> dict[str, list[LabelledPhoto]]:
    """Every labelled set available here, by name; empty when the fixtures are absent."""
    hand = labelled_photos()
    if not hand:
        return {}
    return {"hand-boxed": hand,
            "dark": [LabelledPhoto(p.name, darkened(p.image), p.faces) for p in hand],
            "over-exposed": [LabelledPhoto(p.name, brightened(p.image), p.faces) for p in hand],
            "tilted 30°": [tilted(p, 30 if i % 2 else -30) for i, p in enumerate(hand)],
            "blurred": [LabelledPhoto(p.name, blurred(p.image), p.faces) for p in hand],
            "cut by the frame": [cut(p, i % 2 == 0) for i, p in enumerate(hand)],
            "counted": counted_photos()}


def judge(photo: LabelledPhoto, detected: Sequence[Box]) -> "Matching":
    """A detector's boxes on one labelled photo: matched to the hand boxes, or held to the count."""
    if photo.count is None:
        return match(detected, photo.faces)
    return Matching(min(len(detected), photo.count), photo.count, max(0, len(detected) - photo.count))


def faceless_photos(folder: Path = DETECTION_SET) -> dict[str, np.ndarray]:
    """Photos with no human face: skimage's (always here) and the fixtures' dogs (when present)."""
    found = dict(photos.no_face_photos())
    if (folder / "dogs.jpg").exists():
        found["dogs"] = photos.load_rgb(folder / "dogs.jpg")
    return found


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
