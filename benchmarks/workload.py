"""Realistic requests made from real photos only: JPEG files on disk, grouped by workload.

single : 640x480 JPEGs with exactly one face (astronaut, grace_hopper, and their mirror images,
         each framed at a few offsets the way a webcam or ID photo would be)
multi  : photos with several faces (the shared fixtures' group photos, when present)
group  : the labelled detection set's group photos (9 photos, 43 faces, 2 to 7 each, 37 to 110 px)
mixed  : single and multi, interleaved
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
from PIL import Image

from faceserve.dev import accuracy, photos

SIZE = (640, 480)  # width, height


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    files: list[Path]
    faces: dict[str, int]  # file name -> faces in it (BlazeFace's count; the hand count for `group`)

    def payloads(self) -> list[bytes]:
        return [f.read_bytes() for f in self.files]


def _jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def frame_640x480(image: np.ndarray, shift: float) -> np.ndarray:
    """A 4:3 window of the photo, moved horizontally by `shift` (-1..1) of the slack, resized to 640x480."""
    h, w = image.shape[:2]
    win_w, win_h = (w, int(w * 3 / 4)) if w * 3 / 4 <= h else (int(h * 4 / 3), h)
    win_w, win_h = int(win_w * 0.9), int(win_h * 0.9)  # leave slack so frames differ
    left = int((w - win_w) / 2 * (1 + shift))
    top = (h - win_h) // 2
    crop = image[top:top + win_h, left:left + win_w]
    return np.asarray(Image.fromarray(crop).resize(SIZE, Image.BILINEAR))


def _multi_face_photos() -> dict[str, np.ndarray]:
    found = {}
    for name in ("emotion_classification.jpg", "solvay_conference.jpg"):
        image = photos.fixture(name)
        if image is not None:
            found[name.split(".")[0]] = image
    return found


def build(directory: Path, count_faces) -> dict[str, Workload]:
    """Write the JPEGs under `directory`; `count_faces(rgb) -> int` keeps only frames that hold what they claim."""
    directory.mkdir(parents=True, exist_ok=True)
    single: dict[str, int] = {}
    for name, image in (("astronaut", photos.astronaut()), ("grace_hopper", photos.grace_hopper())):
        for mirrored in (False, True):
            source = image[:, ::-1] if mirrored else image
            for i, shift in enumerate((-1.0, 0.0, 1.0)):
                frame = np.ascontiguousarray(frame_640x480(source, shift))
                if count_faces(frame) != 1:
                    continue
                file = f"single-{name}{'-mirror' if mirrored else ''}-{i}.jpg"
                (directory / file).write_bytes(_jpeg(frame))
                single[file] = 1
    multi: dict[str, int] = {}
    for name, image in _multi_face_photos().items():
        faces = count_faces(image)
        if faces >= 2:
            file = f"multi-{name}.jpg"
            (directory / file).write_bytes(_jpeg(image))
            multi[file] = faces
    group: dict[str, int] = {}
    for photo in accuracy.labelled_photos():
        file = f"group-{photo.name}"
        (directory / file).write_bytes(_jpeg(photo.image))
        group[file] = len(photo.faces)
    workloads = {"single": Workload("single", [directory / f for f in sorted(single)], single)}
    if group:
        workloads["group"] = Workload("group", [directory / f for f in sorted(group)], group)
    if multi:
        workloads["multi"] = Workload("multi", [directory / f for f in sorted(multi)], multi)
        mixed = sorted(single) + sorted(multi) * max(1, len(single) // (2 * len(multi)))
        workloads["mixed"] = Workload("mixed", [directory / f for f in mixed], {**single, **multi})
    if not single:
        raise RuntimeError("no single-face frame found in the photos; the detector or the photos changed")
    return workloads
