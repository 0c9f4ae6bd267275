"""The whole-image classifier role: the whole image in (by its recipe), the top-k labels out."""

from __future__ import annotations

import numpy as np

from faceserve.models import crops
from faceserve.models.spec import ModelSpec


class Classifier:
    def __init__(self, spec: ModelSpec, backend):
        self.spec = spec
        self.backend = backend

    async def classify(self, image: np.ndarray, k: int) -> list[dict]:
        batch, _ = crops.whole_image(image, self.spec)
        outputs = await self.backend.infer(self.spec, batch)
        return top_k(self.spec.labels, outputs[self.spec.output_names[0]][0], k)


def top_k(labels: tuple[str, ...], probabilities: np.ndarray, k: int) -> list[dict]:
    order = np.argsort(-probabilities)[:k]
    return [{"label": labels[i], "score": float(probabilities[i])} for i in order]
