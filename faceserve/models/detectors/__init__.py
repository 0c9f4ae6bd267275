"""Face detectors, by name: each class in its own module behind the `Detector` interface.

`build` makes the ones this repository can run: a detector with a `decoder` needs a
`face_detector` model of that decoder in the repository; one without runs in-process.
Adding a detector is a new module and one line in `REGISTRY`.
"""

from __future__ import annotations

from faceserve.models.detectors.base import Detection, Detector, nms
from faceserve.models.detectors.blazeface import BlazeFace
from faceserve.models.detectors.haar import HaarDetector

REGISTRY: tuple[type[Detector], ...] = (BlazeFace, HaarDetector)  # in the order `/models` lists them
DEFAULT_DETECTOR = "blazeface"


def build(specs, backend) -> dict[str, Detector]:
    """The detectors available with these detector models of the repository, by name."""
    by_decoder = {spec.decoder: spec for spec in specs}
    available: dict[str, Detector] = {}
    for cls in REGISTRY:
        if cls.decoder is None:
            available[cls.name] = cls()
        elif cls.decoder in by_decoder:
            available[cls.name] = cls(by_decoder[cls.decoder], backend)
    return available


def consumed(spec, outputs):
    """A detector model's outputs as its own decoding reads them; other models' outputs as they are."""
    for cls in REGISTRY:
        if cls.decoder is not None and cls.decoder == spec.decoder:
            return cls.consumed(spec, outputs)
    return outputs


__all__ = ["DEFAULT_DETECTOR", "REGISTRY", "Detection", "Detector", "HaarDetector", "build", "consumed", "nms"]
