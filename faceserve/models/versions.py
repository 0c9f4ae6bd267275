"""How answers, corrections, the gallery and its export name a model: "name:version"."""

from __future__ import annotations


def model_ref(name: str, version: str) -> str:
    return f"{name}:{version}"


def parse_model_ref(ref: str) -> tuple[str, str]:
    """(name, version) of a `model_ref`; a name may itself hold a colon, a version never does."""
    name, _, version = ref.rpartition(":")
    return name, version
