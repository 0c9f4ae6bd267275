"""Face heads, one module per decoder kind, found by the repository's `decoder` parameter.

A new head *model* of a known kind needs no code: convert it into the repository with its
task (the response field) and decoder. A new *kind* of head is one new module here with a `Head`
subclass (its `decoder` name, `answer`, and its parity `decisions`): every module of this package
is imported, and each `Head` subclass registers itself by its decoder name.
"""

from __future__ import annotations

from faceserve.models.decoder import descendants, import_modules
from faceserve.models.heads.base import Head
from faceserve.models.heads.embedding import EmbeddingHead
from faceserve.models.repository import is_head
from faceserve.models.spec import ModelSpec

import_modules(__name__, __path__)


def discover() -> dict[str, type[Head]]:
    """The head classes defined so far, by decoder name, in the order their modules were imported."""
    return {cls.decoder: cls for cls in descendants(Head) if "decoder" in cls.__dict__}


REGISTRY: dict[str, type[Head]] = discover()


def head_for(spec: ModelSpec) -> Head:
    if spec.decoder not in REGISTRY:
        raise ValueError(f"{spec.name}: decoder {spec.decoder!r} is not a face head "
                         f"(known: {', '.join(REGISTRY)})")
    return REGISTRY[spec.decoder](spec)


__all__ = ["REGISTRY", "EmbeddingHead", "Head", "discover", "head_for", "is_head"]
