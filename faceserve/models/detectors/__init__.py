"""Face detectors, by name: each class in its own module behind the `Detector` interface.

`build` makes the ones this repository can run: a detector with a `decoder` needs a
`face_detector` model of that decoder in the repository; one without runs in-process.
Adding a detector is a new module and one line in `REGISTRY`.
"""

from __future__ import annotations

from faceserve.models.detectors.base import Detection, Detector, nms
from faceserve.models.detectors.blazeface import BlazeFace
from faceserve.models.detectors.faceboxes import AutoDetector, FaceBoxes
from faceserve.models.detectors.haar import HaarDetector

# In the order `/models` lists them, which is also the order of preference for the default.
REGISTRY: tuple[type[Detector], ...] = (AutoDetector, FaceBoxes, BlazeFace, HaarDetector)
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
    return available


def default(available: dict[str, Detector]) -> str:
    """`DEFAULT_DETECTOR` when its model is built, else the first available in `REGISTRY` order."""
    return DEFAULT_DETECTOR if DEFAULT_DETECTOR in available else next(iter(available))


def _decoding(spec) -> type[Detector] | None:
    return next((cls for cls in REGISTRY if cls.decoder is not None and cls.decoder == spec.decoder), None)


def consumed(spec, outputs):
    """A detector model's outputs as its own decoding reads them; other models' outputs as they are."""
    cls = _decoding(spec)
    return outputs if cls is None else cls.consumed(spec, outputs)


def model_inputs(spec, image):
    """The inputs a detector model gets for `image`, by the detector that decodes it."""
    return _decoding(spec).model_inputs(spec, image)


__all__ = ["DEFAULT_DETECTOR", "REGISTRY", "AutoDetector", "BlazeFace", "Detection", "Detector", "FaceBoxes",
           "HaarDetector", "build", "consumed", "default", "model_inputs", "nms"]
