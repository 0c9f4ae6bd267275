"""Heads whose output is a probability per label (emotion): the best label, its score, every score."""

from __future__ import annotations

import numpy as np

from faceserve.models.heads.base import Head
from faceserve.models.spec import ModelSpec


class SoftmaxHead(Head):
    decoder = "softmax"

    def answer(self, row: np.ndarray) -> dict:
        return label_scores(self.spec.labels, row)

    @staticmethod
    def decisions(spec: ModelSpec, outputs: dict[str, np.ndarray]) -> np.ndarray:
        return outputs[spec.output_names[0]].argmax(axis=-1)


def label_scores(labels: tuple[str, ...], probabilities: np.ndarray) -> dict:
    """{label, score, scores}, scores keyed by label."""
    best = int(np.argmax(probabilities))
    return {
        "label": labels[best],
        "score": float(probabilities[best]),
        "scores": {label: float(p) for label, p in zip(labels, probabilities)},
    }
