"""Which images the service declines to annotate: a whole-image classifier's chosen labels at or above a
threshold (FACESERVE_DECLINE_LABELS, FACESERVE_DECLINE_THRESHOLD). The front ends (the page, the bot) call
`/annotate`, so they decline with it."""

from __future__ import annotations

import dataclasses

from faceserve.errors import FaceserveError
from faceserve.pipeline.schemas import Classification

ImageDeclined = FaceserveError.kind("ImageDeclined", 422, "image_declined",
                                    "The image is classified in a label the service is configured to decline.")


@dataclasses.dataclass(frozen=True)
class DeclinePolicy:
    labels: tuple[str, ...]
    threshold: float

    def model(self, classifiers: dict[str, tuple[str, ...]]) -> str:
        """The classifier (name → labels) that has every declined label; a configuration naming labels no
        classifier has fails at start-up rather than letting every image through."""
        for name, labels in sorted(classifiers.items()):
            if set(self.labels) <= set(labels):
                return name
        known = "; ".join(f"{name}: {', '.join(labels)}" for name, labels in sorted(classifiers.items()))
        raise ValueError(f"FACESERVE_DECLINE_LABELS={','.join(self.labels)}: no whole-image classifier has all "
                         f"of these labels ({known or 'the repository has no classifier'})")

    def check(self, classification: Classification) -> None:
        for item in classification.top_k:
            if item.label in self.labels and item.score >= self.threshold:
                raise ImageDeclined(f"declined: {classification.model} classifies the image as {item.label!r} "
                                    f"({item.score:.2f} >= {self.threshold:g}); this service does not annotate "
                                    f"images labelled {', '.join(self.labels)}")
