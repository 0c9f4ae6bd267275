"""Heads whose output is a probability per label (emotion): the best label, its score, every score."""

from __future__ import annotations

import numpy as np

from faceserve.models.heads.base import Head


class SoftmaxHead(Head):
    decoder = "softmax"

    def answer(self, row: np.ndarray) -> dict:
        return label_scores(self.spec.labels, row)


def label_scores(labels: tuple[str, ...], probabilities: np.ndarray) -> dict:
    """{label, score, scores}, scores keyed by label."""
    best = int(np.argmax(probabilities))
    return {
        "label": labels[best],
        "score": float(probabilities[best]),
        "scores": {label: float(p) for label, p in zip(labels, probabilities)},
    }
