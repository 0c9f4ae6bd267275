"""Model outputs to answers: labels with scores, probabilities, years."""

from __future__ import annotations

import numpy as np

from faceserve.spec import ModelSpec


def label_scores(spec: ModelSpec, probabilities: np.ndarray) -> dict:
    """Softmax outputs to {label, score, scores} (scores keyed by label)."""
    best = int(np.argmax(probabilities))
    return {
        "label": spec.labels[best],
        "score": float(probabilities[best]),
        "scores": {label: float(p) for label, p in zip(spec.labels, probabilities)},
    }


def binary(spec: ModelSpec, positive: float) -> dict:
    """A single sigmoid output: labels[1] when >= 0.5, with the probability of that label."""
    positive = float(np.clip(positive, 0.0, 1.0))
    negative_label, positive_label = spec.labels
    if positive >= 0.5:
        return {"label": positive_label, "score": positive,
                "scores": {negative_label: 1 - positive, positive_label: positive}}
    return {"label": negative_label, "score": 1 - positive,
            "scores": {negative_label: 1 - positive, positive_label: positive}}


def decode_head(spec: ModelSpec, output: np.ndarray) -> list:
    """One decoded answer per row of a head's first output."""
    if spec.decoder == "softmax":
        return [label_scores(spec, row) for row in output]
    if spec.decoder == "sigmoid":
        return [binary(spec, float(row.reshape(-1)[0])) for row in output]
    if spec.decoder == "regression":
        return [float(row.reshape(-1)[0]) for row in output]
    raise ValueError(f"{spec.name}: decoder {spec.decoder!r} is not a per-face head")


def top_k(spec: ModelSpec, probabilities: np.ndarray, k: int) -> list[dict]:
    order = np.argsort(-probabilities)[:k]
    return [{"label": spec.labels[i], "score": float(probabilities[i])} for i in order]
