"""Face detectors, by name: each class in its own module behind the `Detector` interface.

`build` makes the ones this repository can run: a detector with a `decoder` needs a
`face_detector` model of that decoder in the repository; one without runs in-process.
Adding a detector is one new module here: every module of this package is imported, and each
`Detector` subclass that sets a `name` joins `REGISTRY` at its `rank`.
"""

from __future__ import annotations

from faceserve.models.decoder import descendants, import_modules
from faceserve.models.detectors.base import DUPLICATE_IOU, Detection, Detector, ModelDetector, iou, merge, nms
from faceserve.models.detectors.blazeface import BlazeFace
from faceserve.models.detectors.blazeface_full import BlazeFaceFull
from faceserve.models.detectors.faceboxes import AutoDetector, FaceBoxes
from faceserve.models.detectors.haar import HaarDetector

import_modules(__name__, __path__)


def discover() -> tuple[type[Detector], ...]:
    """The detector classes defined so far, in `rank` order."""
    return tuple(sorted((cls for cls in descendants(Detector) if "name" in cls.__dict__), key=lambda cls: cls.rank))


# In the order `/models` lists them, which is also the order of preference for the default.
REGISTRY: tuple[type[Detector], ...] = discover()
DEFAULT_DETECTOR = "auto"


def build(specs, backend) -> dict[str, Detector]:
    """The detectors available with these detector models of the repository, by name."""
    by_decoder = {spec.decoder: spec for spec in specs}
    available: dict[str, Detector] = {}
    for cls in REGISTRY:
        if cls.decoder is None:
            available[cls.name] = cls()
        elif cls.decoder in by_decoder:
            available[cls.name] = cls(by_decoder[cls.decoder], backend)
    for detector in available.values():
        if detector.second_family in available:
            detector.second = available[detector.second_family]
    return available


def default(available: dict[str, Detector]) -> str:
    """`DEFAULT_DETECTOR` when its model is built, else the first available in `REGISTRY` order."""
    return DEFAULT_DETECTOR if DEFAULT_DETECTOR in available else next(iter(available))


def default_reason(available: dict[str, Detector]) -> str:
    """Why `default(available)` is the default (what `/models` says)."""
    chosen = default(available)
    if chosen == DEFAULT_DETECTOR:
        return available[chosen].reason
    return (f"{DEFAULT_DETECTOR}'s model is not in this repository: {chosen} is the first detector available in "
            f"the order of preference ({', '.join(cls.name for cls in REGISTRY)})")


__all__ = ["DEFAULT_DETECTOR", "DUPLICATE_IOU", "REGISTRY", "AutoDetector", "BlazeFace", "BlazeFaceFull", "Detection",
           "Detector", "FaceBoxes", "HaarDetector", "ModelDetector", "build", "default", "default_reason", "discover",
           "iou", "merge", "nms"]
