"""The head role: a model that looks at one face and answers one field of it."""

from __future__ import annotations

import abc
from typing import ClassVar, Sequence

import numpy as np

from faceserve.models import crops
from faceserve.models.decoder import Decoder
from faceserve.models.spec import ModelSpec


class Head(Decoder, abc.ABC):
    """One face-level model: its crops by the model's recipe, its outputs decoded per face.

    The response field it fills is the model's `task` (emotion, gender, age, ...), so a new
    head in the repository adds a field without a change to the pipeline.
    """

    decoder: ClassVar[str]  # the repository's `decoder` parameter this class decodes

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    @property
    def field(self) -> str:
        return self.spec.task

    def batch(self, image: np.ndarray, boxes: Sequence[Sequence[float]],
              landmarks: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
        """One input row per face box (aligned by its landmarks when the recipe asks for it)."""
        return crops.face_batch(image, boxes, self.spec, landmarks)

    def decode(self, outputs: dict[str, np.ndarray]) -> list:
        """One answer per row of the model's outputs."""
        return [self.answer(row) for row in outputs[self.spec.output_names[0]]]

    @abc.abstractmethod
    def answer(self, row: np.ndarray):
        """The answer for one face from its row of the first output."""
