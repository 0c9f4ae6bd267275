"""Heads with one sigmoid output over two labels (gender): labels[1] when it is >= 0.5."""

from __future__ import annotations

import numpy as np

from faceserve.models.heads.base import Head
from faceserve.models.spec import ModelSpec


class SigmoidHead(Head):
    decoder = "sigmoid"

    def answer(self, row: np.ndarray) -> dict:
        positive = float(np.clip(float(row.reshape(-1)[0]), 0.0, 1.0))
        negative_label, positive_label = self.spec.labels
        scores = {negative_label: 1 - positive, positive_label: positive}
        if positive >= 0.5:
            return {"label": positive_label, "score": positive, "scores": scores}
        return {"label": negative_label, "score": 1 - positive, "scores": scores}

    @staticmethod
    def decisions(spec: ModelSpec, outputs: dict[str, np.ndarray]) -> np.ndarray:
        first = outputs[spec.output_names[0]]
        return first.reshape(len(first), -1)[:, 0] >= 0.5
