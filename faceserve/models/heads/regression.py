"""Heads that answer one number per face (age, in the model's `units`)."""

from __future__ import annotations

import numpy as np

from faceserve.models.heads.base import Head


class RegressionHead(Head):
    decoder = "regression"

    def answer(self, row: np.ndarray) -> float:
        return float(row.reshape(-1)[0])
