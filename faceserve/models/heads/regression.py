"""Heads that answer one number per face (age, in the model's `units`)."""

from __future__ import annotations

import numpy as np

from faceserve.models.heads.base import Head
from faceserve.models.spec import ModelSpec

# Two answers "agree" when they differ by less than this (years, for age).
AGREEMENT = 0.01


class RegressionHead(Head):
    decoder = "regression"

    def answer(self, row: np.ndarray) -> float:
        return float(row.reshape(-1)[0])

    @staticmethod
    def decisions(spec: ModelSpec, outputs: dict[str, np.ndarray]) -> np.ndarray:
        first = outputs[spec.output_names[0]]
        return first.reshape(len(first), -1)[:, 0]

    @staticmethod
    def agree(want: np.ndarray, got: np.ndarray) -> np.ndarray:
        return np.abs(want - got) < AGREEMENT
