"""Heads whose output is a face descriptor: a unit vector per face, so that cosine similarity is a dot product.

Its answer is not a response field: the identity stage (`faceserve.pipeline.identity`) consumes it to
enrol, verify and identify faces against the gallery.
"""

from __future__ import annotations

import numpy as np

from faceserve.models.heads.base import Head
from faceserve.models.spec import ModelSpec


class EmbeddingHead(Head):
    decoder = "embedding"

    @property
    def dimension(self) -> int:
        return int(np.prod(self.spec.output_dims[0]))

    def decode(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """The (faces, dimension) float32 unit descriptors, one row per face."""
        rows = np.asarray(outputs[self.spec.output_names[0]], dtype=np.float32).reshape(-1, self.dimension)
        return unit_rows(rows)

    def answer(self, row: np.ndarray) -> np.ndarray:
        return unit_rows(np.asarray(row, dtype=np.float32).reshape(1, -1))[0]

    @staticmethod
    def decisions(spec: ModelSpec, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """What a search decides: which other face of the batch is the closest."""
        first = outputs[spec.output_names[0]]
        unit = first / np.maximum(np.linalg.norm(first, axis=1, keepdims=True), 1e-12)
        similarity = unit @ unit.T
        np.fill_diagonal(similarity, -np.inf)
        return similarity.argmax(axis=1)


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (a zero row stays zero: it matches nothing)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)
