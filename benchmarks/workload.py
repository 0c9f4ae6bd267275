"""Realistic requests made from real photos only: JPEG files on disk, grouped by workload.

single  : 640x480 JPEGs with exactly one face (astronaut, grace_hopper, and their mirror images,
          each framed at a few offsets the way a webcam or ID photo would be); their faces are large (160-230 px)
sizes   : 640x480 JPEGs with one face `FACE_WIDTHS` px wide (60 to 300), the same two photos scaled
webcam  : the 640x480 frame of the astronaut whose face is 82 px wide, and its mirror image (a webcam's framing;
          under 48 px at the detector's coarse scale)
multi   : photos with several faces (the shared fixtures' group photos, when present)
group   : the labelled detection set's group photos (9 photos, 43 faces, 2 to 7 each, 37 to 110 px)
mixed   : single and multi, interleaved
traffic : sizes, webcam and group, interleaved: the mix of real traffic
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from faceserve.dev import accuracy, photos

SIZE = (640, 480)  # width, height
FACE_WIDTHS = (60, 100, 150, 200, 300)  # `sizes`: px, as the default detector boxes them
WEBCAM_FACE_WIDTH = 82
# The workloads that are one single face per request, each swept on its own by `--workload`.
SINGLE_FACE = ("single", "sizes", "webcam")


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


def face_frame(image: np.ndarray, box, face_width: float) -> np.ndarray:
    """A 640x480 frame of `image` scaled so that the face at `box` (x1, y1, x2, y2) is `face_width` px wide, centred
    on the face where the photo allows; a photo smaller than the frame is centred and its edges stretched out."""
    scale = face_width / (box[2] - box[0])
    height, width = image.shape[:2]
    resized = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    left = _frame_offset((box[0] + box[2]) / 2 * scale, resized.shape[1], SIZE[0])
    top = _frame_offset((box[1] + box[3]) / 2 * scale, resized.shape[0], SIZE[1])
    pads = (max(0, -top), max(0, top + SIZE[1] - resized.shape[0]),
            max(0, -left), max(0, left + SIZE[0] - resized.shape[1]))
    padded = cv2.copyMakeBorder(resized, *pads, cv2.BORDER_REPLICATE)
    top, left = top + pads[0], left + pads[2]
    return np.ascontiguousarray(padded[top:top + SIZE[1], left:left + SIZE[0]])


def _frame_offset(centre: float, size: int, frame: int) -> int:
    """Where the frame starts along one side of the scaled photo (negative: before it, the photo being smaller)."""
    if size >= frame:
        return int(np.clip(round(centre - frame / 2), 0, size - frame))
    return -((frame - size) // 2)


def _multi_face_photos() -> dict[str, np.ndarray]:
    found = {}
    for name in ("emotion_classification.jpg", "solvay_conference.jpg"):
        image = photos.fixture(name)
        if image is not None:
            found[name.split(".")[0]] = image
    return found


def build(directory: Path, find_faces) -> dict[str, Workload]:
    """Write the JPEGs under `directory`; `find_faces(rgb, detector) -> [box, ...]` (detector None: the default)
    keeps only frames that hold what they claim: BlazeFace's count for `single`, the default detector's for the
    scaled frames, whose face widths it also measures."""
    directory.mkdir(parents=True, exist_ok=True)
    sources = (("astronaut", photos.astronaut()), ("grace_hopper", photos.grace_hopper()))
    single: dict[str, int] = {}
    for name, image in sources:
        for mirrored in (False, True):
            source = image[:, ::-1] if mirrored else image
            for i, shift in enumerate((-1.0, 0.0, 1.0)):
                frame = np.ascontiguousarray(frame_640x480(source, shift))
                if len(find_faces(frame, "blazeface")) != 1:
                    continue
                file = f"single-{name}{'-mirror' if mirrored else ''}-{i}.jpg"
                (directory / file).write_bytes(_jpeg(frame))
                single[file] = 1
    sizes = _scaled_frames(directory, find_faces, sources, FACE_WIDTHS, "face")
    webcam = _scaled_frames(directory, find_faces, sources[:1], (WEBCAM_FACE_WIDTH,), "webcam", mirrors=True)
    multi: dict[str, int] = {}
    for name, image in _multi_face_photos().items():
        faces = len(find_faces(image, "blazeface"))
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
    for name, frames in (("sizes", sizes), ("webcam", webcam)):
        if frames:
            workloads[name] = Workload(name, [directory / f for f in frames], frames)
    if group:
        workloads["group"] = Workload("group", [directory / f for f in sorted(group)], group)
        mix = _interleaved([list(sizes), list(webcam), sorted(group)])
        workloads["traffic"] = Workload("traffic", [directory / f for f in mix], {**sizes, **webcam, **group})
    if multi:
        workloads["multi"] = Workload("multi", [directory / f for f in sorted(multi)], multi)
        mixed = sorted(single) + sorted(multi) * max(1, len(single) // (2 * len(multi)))
        workloads["mixed"] = Workload("mixed", [directory / f for f in mixed], {**single, **multi})
    if not single:
        raise RuntimeError("no single-face frame found in the photos; the detector or the photos changed")
    return workloads


def _scaled_frames(directory: Path, find_faces, sources, widths, prefix: str, mirrors: bool = False) -> dict[str, int]:
    """`face_frame`s of each source at each face width, kept where the default detector finds exactly one face;
    named by the width it measures there."""
    frames: dict[str, int] = {}
    for name, image in sources:
        for mirrored in (False, True) if mirrors else (False,):
            source = np.ascontiguousarray(image[:, ::-1]) if mirrored else image
            (box, *others) = find_faces(source, None)
            for width in widths:
                frame = face_frame(source, box, width)
                found = find_faces(frame, None)
                if len(found) == 1:  # the detector boxes a face a little differently at another scale: once more
                    frame = face_frame(source, box, width * width / (found[0][2] - found[0][0]))
                    found = find_faces(frame, None)
                if len(found) != 1:
                    continue
                measured = round(found[0][2] - found[0][0])
                file = f"{prefix}-{name}{'-mirror' if mirrored else ''}-{measured}px.jpg"
                (directory / file).write_bytes(_jpeg(frame))
                frames[file] = 1
    return frames


def _interleaved(lists: list[list[str]]) -> list[str]:
    """One of each list in turn while any is left."""
    out, longest = [], max(map(len, lists))
    for i in range(longest):
        out += [items[i] for items in lists if i < len(items)]
    return out
