"""The identity threshold's evidence: same-person and different-people similarities on a calibration set, the
embedding model's calibration made of them (its DET table, `faceserve.models.calibration`), and `similarity.png`:
their distributions and the DET curve with the operating point the service serves at.

A calibration set is labelled photos of people plus group photos (`CalibrationSet`); its pairs are drawn by three
rules, each certain without labelling every face:
1. two photos of `people` are the same person when their labels are the same, different people otherwise (the
   largest face of each photo);
2. two faces of one group photo are different people: one person is in one place at a time. The exception is a
   reflection, a poster or a photo inside the photo, which shows someone twice: checked by eye on the contact sheet
   (`--sheet`) before a set is used;
3. a face of a group photo and a face of `people` are different people: the group photos hold none of the labelled
   people (checked by eye on the same sheet). Faces of two different group photos are never paired: the same
   stranger may be in both.

The fixtures' set (`fixtures_set`) is the identity photos' single faces (6 people) and the detection set's 9 hand-
labelled group photos (only detected faces matching a hand box count), the Solvay crop and the Tom Cruise photo.
Another set plugs in as a folder (`folder_set`): `people/<person>/<photo>` (one face each) and `groups/<photo>`.

    python -m benchmarks.similarity calibrate [--set DIR] [--sheet sheet.png]   # writes faceserve/models/calibrations/
    python -m benchmarks.similarity draw similarity.png                        # the plot at the served operating point
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from faceserve.dev import photos
from faceserve.dev.accuracy import MATCH_IOU
from faceserve.dev.fixtures import FIXTURES, SINGLE_FACE_PROBES
from faceserve.models.calibration import (CALIBRATIONS, Calibration, OperatingPoint, far_upper_bound, file_sha256,
                                          probe_answer)
from faceserve.models.detectors.base import iou

IDENTITY_SET = FIXTURES / "identity"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
log = logging.getLogger(__name__)


def labelled_photos(folder: Path = IDENTITY_SET) -> list[tuple[str, Path]]:
    """(person, path) for every single-face photo of the set; empty without the fixtures."""
    found = [(person.name, photo) for person in sorted((folder / "enroll").glob("*")) if person.is_dir()
             for photo in sorted(person.iterdir())]
    found += [(person, folder / "probe" / name) for name, person in SINGLE_FACE_PROBES.items()
              if (folder / "probe" / name).exists()]
    return found


def labelled_faces(folder: Path = IDENTITY_SET) -> list[tuple[str, str, np.ndarray]]:
    """(person, file, RGB image) for every single-face photo of the set; empty without the fixtures."""
    return [(person, path.name, photos.load_rgb(path)) for person, path in labelled_photos(folder)]


@dataclasses.dataclass(frozen=True)
class GroupPhoto:
    name: str
    image: np.ndarray  # RGB
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # hand boxes: only faces found at one of them count


@dataclasses.dataclass(frozen=True)
class CalibrationSet:
    name: str
    people: list[tuple[str, str, np.ndarray]]  # (person, file, RGB image): the largest face is that person
    groups: list[GroupPhoto]  # every face of one is a different person, and none is one of `people`


def fixtures_set(folder: Path = FIXTURES) -> CalibrationSet:
    """The fixtures' calibration set (empty without the fixtures)."""
    from faceserve.dev.accuracy import labelled_photos as detection_photos  # (name clash with this module's)

    groups = [GroupPhoto(p.name, p.image, tuple(p.faces)) for p in detection_photos(folder / "detection")]
    groups += [GroupPhoto(path.name, photos.load_rgb(path))
               for path in (folder / "images" / "solvay_conference.jpg",
                            folder / "detection" / "Tom_Cruise_avp_2014_4.jpg")
               if path.exists()]
    return CalibrationSet("shared fixtures: identity photos (6 people) + 11 group photos of strangers",
                          labelled_faces(folder / "identity"), groups)


def folder_set(folder: Path) -> CalibrationSet:
    """A calibration set laid out as `people/<person>/<photo>` (one face each) and `groups/<photo>`."""
    def photos_in(path: Path) -> list[Path]:
        return sorted(p for p in path.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES) if path.is_dir() else []
    people = [(person.name, photo.name, photos.load_rgb(photo))
              for person in sorted((folder / "people").iterdir()) if person.is_dir() for photo in photos_in(person)]
    if not people:
        raise SystemExit(f"{folder}: no photos under people/<person>/; see `python -m benchmarks.similarity --help`")
    groups = [GroupPhoto(p.name, photos.load_rgb(p)) for p in photos_in(folder / "groups")]
    return CalibrationSet(folder.name, people, groups)


@dataclasses.dataclass
class ScoredSet:
    same: np.ndarray
    different: np.ndarray
    faces: dict  # faces found per source, for the record
    group_crops: list[tuple[str, np.ndarray]]  # (photo #face, RGB crop) of every group face used: for the eye check


def _at_hand_boxes(faces, boxes: Sequence) -> list:
    """The detected faces that match a hand box (each box at most once): stray boxes are nobody."""
    kept, free = [], list(boxes)
    for face in sorted(faces, key=lambda f: -f.score):
        overlaps = [iou(face.box, box) for box in free]
        if overlaps and max(overlaps) >= MATCH_IOU:
            kept.append(face)
            free.pop(int(np.argmax(overlaps)))
    return kept


def _crop(image: np.ndarray, box) -> np.ndarray:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return image[max(0, y1):max(y1 + 1, y2), max(0, x1):max(x1 + 1, x2)]


async def score(pipeline, calibration_set: CalibrationSet) -> ScoredSet:
    """Every pair of the set by its three rules (the module's docstring), as cosine similarities."""
    from faceserve.pipeline.pipeline import largest

    people = []
    for person, file, image in calibration_set.people:
        located = await pipeline.locate(image)
        if not located:
            log.warning("%s: no face found; left out", file)
            continue
        people.append((person, (await pipeline.embed(image, [largest(located)]))[0]))
    same, different = [], []
    for (a, va), (b, vb) in itertools.combinations(people, 2):
        (same if a == b else different).append(float(va @ vb))
    strangers, crops = [], []
    for group in calibration_set.groups:
        located = await pipeline.locate(group.image)
        faces = _at_hand_boxes(located, group.boxes) if group.boxes else located
        vectors = await pipeline.embed(group.image, faces) if faces else np.zeros((0, 1), np.float32)
        different += [float(a @ b) for a, b in itertools.combinations(vectors, 2)]
        strangers += list(vectors)
        crops += [(f"{group.name} #{n}", _crop(group.image, face.box)) for n, face in enumerate(faces)]
    different += [float(stranger @ vector) for stranger in strangers for _, vector in people]
    return ScoredSet(np.array(same), np.array(different),
                     {"people_faces": len(people), "people": len({p for p, _ in people}),
                      "group_photos": len(calibration_set.groups), "group_faces": len(strangers)}, crops)


def error_rates(same: np.ndarray, different: np.ndarray, threshold: float) -> tuple[float, float]:
    """False accepts (different people at or above) and false rejects (same person below), as fractions."""
    return float((different >= threshold).mean()), float((same < threshold).mean())


def draw(same: np.ndarray, different: np.ndarray, point: OperatingPoint, path: Path) -> None:
    """The distributions with the threshold, and the DET curve with the operating point and the lowest false-accept
    rate the pairs can show (0 of N is about 3/N at 95 %, not 0)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threshold = point.threshold
    figure, (spread, det) = plt.subplots(1, 2, figsize=(11, 4.4))
    bins = np.linspace(min(same.min(), different.min()) - 0.02, max(same.max(), different.max()) + 0.02, 40)
    spread.hist(different, bins=bins, alpha=0.6, density=True, label=f"different people ({len(different)} pairs)")
    spread.hist(same, bins=bins, alpha=0.6, density=True, label=f"same person ({len(same)} pairs)")
    spread.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g} ({point.chosen_by})")
    spread.set(xlabel="cosine similarity", ylabel="density (each kind of pair sums to 1)",
               title="Similarity of face pairs")
    spread.legend(fontsize=8)
    calibration = Calibration.from_scores(same, different, model="", model_sha256="", recipe={}, calibration_set="")
    # a zero drawn at half of one pair on the log scales: no fewer errors than one pair can show
    far_floor, frr_floor = 1.0 / (2 * len(different)), 1.0 / (2 * len(same))
    far = np.maximum(np.array(calibration.false_accepts) / len(different), far_floor)
    frr = np.maximum(np.array(calibration.false_rejects) / len(same), frr_floor)
    det.plot(far, frr, marker=".", markersize=3, label="each threshold (0 drawn at half of one pair)")
    least = calibration.least_resolvable_far()
    det.axvline(least, color="grey", linestyle=":", label=f"lowest FAR these pairs can show: {least:.2%}")
    accepts, rejects = calibration.counts_at(threshold)
    det.plot([max(accepts / len(different), far_floor)], [max(rejects / len(same), frr_floor)], "ko",
             label=f"at {threshold:.4g}: FAR {accepts}/{len(different)} = {accepts / len(different):.2%} "
                   f"(≤ {far_upper_bound(accepts, len(different)):.2%}), FRR {rejects}/{len(same)}")
    if point.far_target is not None:
        det.axvline(point.far_target, color="red", linestyle="--", label=f"FAR target {point.far_target:.2%}")
    det.set(xscale="log", yscale="log", xlabel="false accept rate", ylabel="false reject rate",
            title="DET curve (95 % bound: Clopper-Pearson)")
    det.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def contact_sheet(crops: list[tuple[str, np.ndarray]], path: Path, side: int = 96, columns: int = 12) -> None:
    """Every group face used, labelled with its photo: the eye check of rules 2 and 3."""
    from PIL import Image, ImageDraw

    rows = (len(crops) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * side, rows * (side + 14)), "white")
    pen = ImageDraw.Draw(sheet)
    for n, (label, crop) in enumerate(crops):
        x, y = (n % columns) * side, (n // columns) * (side + 14)
        sheet.paste(Image.fromarray(crop).resize((side, side)), (x, y))
        pen.text((x + 2, y + side), label.replace(".jpg", "")[-16:], fill="black")
    sheet.save(path)


async def _served(run):
    """`run(resources)` over the service's own resources (its repository, detector, settings)."""
    from faceserve.services import Services

    services = Services.build()
    await services.resources.start()
    try:
        return await run(services.resources)
    finally:
        await services.close()


def calibrate(calibration_set: CalibrationSet, out: Path = CALIBRATIONS, sheet: Path | None = None) -> Path:
    """Measure the served embedding model on the set and write its calibration beside the others."""
    async def run(resources):
        pipeline = resources.pipeline
        spec = pipeline.require_embedding().spec
        scored = await score(pipeline, calibration_set)
        located_by = {"detector": pipeline.default_detector,
                      "landmarks": f"{resources.repository.landmarks.name}:{resources.repository.landmarks.version}"
                      if resources.repository.landmarks else None}
        return spec, resources.repository.model_file(spec.name), scored, located_by
    spec, model_file, scored, located_by = asyncio.run(_served(run))
    if sheet is not None:
        contact_sheet(scored.group_crops, sheet)
    rules = ("pairs: same labels = same person, else different (largest face of each photo); two faces of one "
             "group photo = different people; a group face and a labelled face = different people (checked by eye)")
    calibration = Calibration.from_scores(
        scored.same, scored.different, model=spec.name, model_sha256=file_sha256(model_file),
        recipe=spec.describe()["input"], calibration_set=calibration_set.name,
        details={**scored.faces, "located_by": located_by, "rules": rules}, probe=probe_answer(spec, model_file))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{spec.name}-{calibration.model_sha256[:12]}.json"
    path.write_text(calibration.to_json())
    return path


def measure(out: Path) -> dict:
    """Draw `out/similarity.png` on the fixtures' calibration set at the served operating point; the figures for
    the report (empty without the fixtures)."""
    calibration_set = fixtures_set()
    if not calibration_set.people:
        return {}

    async def run(resources):
        return resources.operating_point, await score(resources.pipeline, calibration_set)
    point, scored = asyncio.run(_served(run))
    same, different = scored.same, scored.different
    draw(same, different, point, out / "similarity.png")
    far, frr = error_rates(same, different, point.threshold)
    return {"threshold": point.threshold, "chosen_by": point.chosen_by, "far_target": point.far_target,
            "same_person_pairs": len(same), "different_people_pairs": len(different),
            "same_min": round(float(same.min()), 3), "different_max": round(float(different.max()), 3),
            "false_accept_rate": round(far, 4), "false_reject_rate": round(frr, 4),
            "served_far_upper": point.far_upper, "plot": "similarity.png"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.similarity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("calibrate", help="measure the served embedding model and write its calibration")
    c.add_argument("--set", type=Path, help="a calibration set folder (people/<person>/*, groups/*); default: the "
                                            "shared fixtures")
    c.add_argument("--out", type=Path, default=CALIBRATIONS)
    c.add_argument("--sheet", type=Path, help="also draw every group face used, for the eye check")
    d = sub.add_parser("draw", help="similarity.png at the served operating point, on the fixtures' set")
    d.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "calibrate":
        calibration_set = folder_set(args.set) if args.set else fixtures_set()
        if not calibration_set.people:
            print("no calibration set: the shared fixtures are absent; give --set", file=sys.stderr)
            return 2
        print(calibrate(calibration_set, args.out, args.sheet))
    else:
        args.path.parent.mkdir(parents=True, exist_ok=True)
        figures = measure(args.path.parent)
        if args.path.name != "similarity.png" and figures:
            (args.path.parent / "similarity.png").rename(args.path)
        print(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
