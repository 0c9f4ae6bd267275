"""Face heads, one module per decoder kind, found by the repository's `decoder` parameter.

A new head *model* of a known kind needs no code: convert it into the repository with its
task (the response field) and decoder. A new *kind* of head is a module with a `Head`
subclass and one line in `REGISTRY`.
"""

from __future__ import annotations

from faceserve.models.heads.base import Head
from faceserve.models.heads.embedding import EmbeddingHead
from faceserve.models.heads.regression import RegressionHead
from faceserve.models.heads.sigmoid import SigmoidHead
from faceserve.models.heads.softmax import SoftmaxHead
from faceserve.models.repository import is_head
from faceserve.models.spec import ModelSpec

REGISTRY: dict[str, type[Head]] = {cls.decoder: cls for cls in (SoftmaxHead, SigmoidHead, RegressionHead,
                                                               EmbeddingHead)}


def head_for(spec: ModelSpec) -> Head:
    if spec.decoder not in REGISTRY:
        raise ValueError(f"{spec.name}: decoder {spec.decoder!r} is not a face head "
                         f"(known: {', '.join(REGISTRY)})")
    return REGISTRY[spec.decoder](spec)


__all__ = ["REGISTRY", "EmbeddingHead", "Head", "head_for", "is_head"]
